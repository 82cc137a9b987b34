"""The exact strings of the GenPRM protocol, byte for byte as the released checkpoints were trained.

Every literal the model sees lives here, so golden tests can pin them and nothing else in the code
base spells them out again. Source: the GenPRM paper (arXiv 2504.00891) and its released inference
code; a changed byte here changes what GenPRM-1.5B/7B/32B see and silently degrades them.
"""

from __future__ import annotations

from enum import Enum

SYSTEM_PROMPT = (
    "You are a math teacher. Your task is to review and critique the paragraphs in solution step by step."
)
DIRECT_SYSTEM_PROMPT = (
    "You are a math teacher. Your task is to review and critique the paragraphs in solution directly. "
    "Output your judgement in the format of `\\boxed{Yes}` if the paragraph is correct, "
    "or `\\boxed{No}` if the paragraph is incorrect."
)

ANALYZE_PREFIX = "<analyze>\nLet's analyze the Paragraph {k} step by step: "
ANALYZE_END = "</analyze>\n"
VERIFY_PREFIX = "<verify>\nLet's use python code to find any potential error:\n```python\n"
VERIFY_END = "</verify>\n"
CODE_BLOCK_END = "\n```\n"
OUTPUT_TAG = "<output>"
OUTPUT_END = "</output>\n"
OUTPUT_PREFIX = "<output>\n**Judgement**: $\\boxed"
CODE_OUTPUT_BLOCK = "[Code Output]\n\n```\n{output}\n```\n"
# What the model writes after ``$\boxed``; we read P(Yes) at its first differing token and close
# the turn with the verdict chosen for the history.
VERDICT_CLOSE = "{{{verdict}}}$\n</output>\n"
VERDICTS = ("Yes", "No")

FIRST_TURN_FORMATS = {
    "question": "Question: {problem}\n\n{step}",
    "plain": "{problem}\n{step}",
}


class Mode(str, Enum):
    """The paper's verification modes (Table 4's ablation)."""

    FULL = "full"
    """Analysis, then Python code that genprm executes, then the judgement (the default)."""
    ANALYZE = "analyze"
    """Analysis only, then the judgement."""
    CODE_NO_EXEC = "code-no-exec"
    """Analysis and code, but nothing runs: the model imagines the code output."""
    DIRECT = "direct"
    """The judgement alone, with its own system prompt."""

    @property
    def analyzes(self) -> bool:
        return self is not Mode.DIRECT

    @property
    def writes_code(self) -> bool:
        return self in (Mode.FULL, Mode.CODE_NO_EXEC)

    @property
    def executes(self) -> bool:
        return self is Mode.FULL

    @property
    def system_prompt(self) -> str:
        return DIRECT_SYSTEM_PROMPT if self is Mode.DIRECT else SYSTEM_PROMPT


def analyze_prefix(step_number: int) -> str:
    """The forced start of a step's analysis; ``step_number`` counts from 1."""
    return ANALYZE_PREFIX.format(k=step_number)


def code_output_block(output: str) -> str:
    """The text spliced into the transcript after a code block ran."""
    return CODE_OUTPUT_BLOCK.format(output=output)


def verdict_close(verdict: str) -> str:
    """The rest of the assistant turn once the verdict is chosen."""
    return VERDICT_CLOSE.format(verdict=verdict)


def user_turn(problem: str, step: str, index: int, first_turn_format: str = "question") -> str:
    """The user message of step ``index`` (0-based): the first one carries the problem."""
    if index > 0:
        return step
    return FIRST_TURN_FORMATS[first_turn_format].format(problem=problem, step=step)
