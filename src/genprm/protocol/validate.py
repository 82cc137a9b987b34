"""Check that a training conversation has the exact shape the verifier produces and reads.

A conversation is a list of ``{role, content}`` messages: the verifier's system prompt, then per step
a user turn and an assistant turn. Every assistant turn ``k`` must be what
:mod:`genprm.verifier.path` writes for paragraph ``k``: the analyze lead-in, an analysis closed by
``</analyze>``, a verify part that opens a python fence and splices at least one code output, and the
judgement ``<output>\\n**Judgement**: $\\boxed{Yes|No}$\\n</output>`` once, at the end. A model trained
on anything else learns a format the verifier never prompts for, so training refuses it.

Used by ``genprm train`` (and any stage that wants to check exported conversations); the strings
all come from :mod:`genprm.protocol.prompts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genprm.errors import InputError
from genprm.protocol import prompts as P

_CODE_OUTPUT_LEAD = P.CODE_OUTPUT_BLOCK.split("{output}")[0]
_VERIFY_TAG = P.VERIFY_PREFIX.split("\n")[0]
_VERDICT_ENDINGS = {
    verdict: (P.OUTPUT_PREFIX + P.verdict_close(verdict), P.OUTPUT_PREFIX + P.verdict_close(verdict).rstrip("\n"))
    for verdict in P.VERDICTS
}
ROLES = ("system", "user", "assistant")


def assistant_turn_problem(text: str, paragraph: int) -> str | None:
    """Why ``text`` is not a verifier turn for paragraph ``paragraph`` (from 1); ``None`` when it is."""
    lead = P.analyze_prefix(paragraph)
    if not text.startswith(lead):
        return f"must start with {lead!r}"
    end = P.ANALYZE_END.strip()
    if text.count(end) != 1:
        return f"must close the analysis with {end!r} exactly once (found {text.count(end)})"
    after_analysis = text.split(end, 1)[1]
    if not after_analysis.startswith("\n" + P.VERIFY_PREFIX):
        return f"the analysis must be followed by {P.VERIFY_PREFIX!r}"
    if after_analysis.count(_VERIFY_TAG) != 1 or text.count(P.VERIFY_END.strip()) != 1:
        return f"must have one verify part, {_VERIFY_TAG!r} ... {P.VERIFY_END.strip()!r}"
    verify = after_analysis.split(P.VERIFY_END.strip(), 1)[0]
    if _CODE_OUTPUT_LEAD not in verify:
        return f"the verify part must splice at least one code output ({_CODE_OUTPUT_LEAD!r})"
    if text.count(P.OUTPUT_TAG) != 1:
        return f"must have exactly one judgement {P.OUTPUT_TAG!r} (found {text.count(P.OUTPUT_TAG)})"
    if not text.split(P.OUTPUT_TAG, 1)[0].endswith(P.VERIFY_END):
        return f"the judgement must follow {P.VERIFY_END!r}"
    if not any(text.endswith(ending) for endings in _VERDICT_ENDINGS.values() for ending in endings):
        return "must end with the judgement " + " or ".join(repr(e[0]) for e in _VERDICT_ENDINGS.values())
    return None


def verdict_of(text: str) -> str:
    """The Yes/No verdict of a turn that passed :func:`assistant_turn_problem`."""
    for verdict, endings in _VERDICT_ENDINGS.items():
        if any(text.endswith(ending) for ending in endings):
            return verdict
    raise ValueError("not a judged verifier turn")


def validate_conversation(
    messages: Any, *, record: int | str, field: str = "conversations", path: str | None = None
) -> list[dict[str, str]]:
    """Check one conversation; return it as plain ``{role, content}`` dicts.

    Raises :class:`InputError` naming ``record`` and the failing field, e.g.
    ``conversations[4].content``.
    """

    def bad(message: str, where: str = "") -> InputError:
        return InputError(message, path=path, record=record, field=field + where)

    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise bad(f"must be a list of {{role, content}} messages, got {type(messages).__name__}")
    if len(messages) < 3:
        raise bad(f"needs the system prompt and at least one user and assistant turn, got {len(messages)} messages")
    clean: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad(f"must be a {{role, content}} object, got {type(message).__name__}", f"[{i}]")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise bad(f"must be one of {', '.join(ROLES)}, got {role!r}", f"[{i}].role")
        if not isinstance(content, str) or not content.strip():
            raise bad("must be a non-empty string", f"[{i}].content")
        expected = "system" if i == 0 else ("user" if i % 2 == 1 else "assistant")
        if role != expected:
            raise bad(f"roles must go system, user, assistant, user, ...: expected {expected!r}, got {role!r}",
                      f"[{i}].role")
        clean.append({"role": role, "content": content})
    if clean[0]["content"] != P.SYSTEM_PROMPT:
        raise bad(f"must be the verifier's system prompt {P.SYSTEM_PROMPT!r}", "[0].content")
    if clean[-1]["role"] != "assistant":
        raise bad("the conversation must end with an assistant turn", f"[{len(clean) - 1}].role")
    for i in range(2, len(clean), 2):
        problem = assistant_turn_problem(clean[i]["content"], paragraph=i // 2)
        if problem is not None:
            raise bad(f"assistant turn {i // 2} {problem}", f"[{i}].content")
    return clean
