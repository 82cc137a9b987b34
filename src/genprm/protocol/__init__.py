"""The GenPRM protocol: exact prompt strings, chat rendering, verdict reading, turn parsing."""

from genprm.protocol.chat import AssistantHeader, ChatTemplate, build_messages
from genprm.protocol.prompts import DIRECT_SYSTEM_PROMPT, SYSTEM_PROMPT, Mode
from genprm.protocol.verdict import VerdictProbe, VerdictReading, read_verdict, verdict_probe

__all__ = [
    "DIRECT_SYSTEM_PROMPT",
    "SYSTEM_PROMPT",
    "AssistantHeader",
    "ChatTemplate",
    "Mode",
    "VerdictProbe",
    "VerdictReading",
    "build_messages",
    "read_verdict",
    "verdict_probe",
]
