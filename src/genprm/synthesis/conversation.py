"""Turn a kept solution and its teacher critique into one training conversation (GenPRM-MATH-Data's shape).

System: the verifier's system prompt. Then per step a user turn (the first carries the problem) and an
assistant turn built from the teacher's ``### Paragraph k`` section: its analysis, its executed code
blocks with their outputs, the interpretation after the last output, and the judgement given by the
agreed label. Turns are composed by :mod:`genprm.protocol.turns` from genprm.protocol's strings, so
they are the turns the verifier writes at inference (a golden test replays them through it).

What is kept of a section, and what is not (see ``docs/synthesis-format.md``):

* the analysis: the text inside ``<analyze>``, stripped, behind the verifier's "Let's analyze ..."
  lead-in (a lead-in the teacher wrote itself is not repeated); an ``<analyze>`` the teacher never
  closed ends where its verify part begins (the first ``<verify>`` or python fence);
* the verify part: from the first ``<verify>`` (or, without the tag, from the end of the analysis)
  to the section's last ``</verify>``, or to the section's end when none closes. Small teachers
  leave tags open or open one ``<verify>`` per code block: the tags go, their code blocks become the
  turn's code rounds in order, and the text between them stays;
* code: every python block followed by its spliced ``[Code Output]``, in order. The verifier forces
  its own lead-in before the first block, so teacher text between ``<verify>`` and the first fence
  is dropped; text between two rounds stays. More blocks than the verifier runs in one step
  (``max_code_rounds - 1``: the last request reaches the judgement) drop the solution;
* the interpretation: the text after the last output up to ``</verify>``, stripped;
* nothing after ``</verify>``: a judgement the teacher wrote itself is replaced by the agreed one.

A section that cannot be split cleanly raises :class:`ConversationError` with a short reason, and the
caller drops the solution: a malformed turn is never emitted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from genprm.errors import ConfigError
from genprm.protocol import prompts as P
from genprm.protocol.synthesis import strip_step_prefix
from genprm.protocol.teacher import paragraph_heading
from genprm.protocol.turns import CODE_BLOCK_START, CodeRound, TurnParts, compose_turn, turn_problem
from genprm.verifier.config import VerifyConfig

Message = dict[str, str]

VERIFIER_CODE_ROUNDS: int = VerifyConfig.model_fields["max_code_rounds"].default


@dataclass(frozen=True)
class ExportSettings:
    """How kept solutions become conversations."""

    after_first_error: Literal["end", "keep"] = "end"
    """end: the conversation ends after the first ``No`` turn (default; the paper does not say);
    keep: every step gets a turn (later steps take their own labels when given, else ``No``)."""
    keep_step_prefixes: bool = False
    """``Step k: `` leaves the user turns by default: ProcessBench and policy answers carry none."""
    first_turn: str = "question"
    """genprm.protocol.prompts.FIRST_TURN_FORMATS: ``Question: {problem}\\n\\n{step}`` or ``plain``."""
    max_code_rounds: int = VERIFIER_CODE_ROUNDS
    """The verifier's ``max_code_rounds`` the turns must fit (its default)."""

    def __post_init__(self) -> None:
        if self.after_first_error not in ("end", "keep"):
            raise ConfigError("after_first_error", self.after_first_error, "choose end or keep")
        if self.first_turn not in P.FIRST_TURN_FORMATS:
            raise ConfigError("first_turn", self.first_turn, f"choose one of {sorted(P.FIRST_TURN_FORMATS)}")
        if self.max_code_rounds < 2:
            raise ConfigError("max_code_rounds", self.max_code_rounds, "a turn with code needs at least 2")


class ConversationError(ValueError):
    """A critique that cannot become a clean conversation; ``reason`` is short and machine-readable."""

    def __init__(self, reason: str, message: str, paragraph: int | None = None) -> None:
        self.reason = reason
        self.paragraph = paragraph
        super().__init__(message)


REASONS = {
    "missing-paragraph": "the critique has no section for this paragraph",
    "duplicate-paragraph": "the critique has two sections for this paragraph",
    "no-analysis": "the section has no (or an empty) <analyze> part",
    "two-analyses": "the section has more than one <analyze> part",
    "no-code": "the <verify> part has no executed python block",
    "unexecuted-code": "a python block in the section was never run (no [Code Output] after it)",
    "stray-code-output": "a [Code Output] block follows no python block (the teacher wrote it itself)",
    "too-many-code-blocks": "more code blocks than the verifier runs in one step",
    "stop-in-analysis": "the analysis contains the verifier's stop string",
    "stop-in-verify": "the verify part contains a stop string (a stray code fence or <output>) mid-text",
    "two-verdicts": "the section states more than one verdict",
    "verdict-mismatch": "the section's own verdict disagrees with the agreed label",
}
"""Every reason a conversation is refused, with its meaning (for stats and the docs)."""

SPLIT_RULES = 2
"""The version of how sections are split, part of the export key: a change re-decides stored exports.
2: open tags are closed where the next part begins, and several ``<verify>`` parts are one."""

_HEADING = re.compile(r"^### Paragraph (\d+)[ \t]*:?[ \t]*$", re.MULTILINE)
_SECTION_END = re.compile(r"^### Final Conclusion|</think>", re.MULTILINE)
_ANALYZE_OPEN = "<analyze>"
_ANALYZE = re.compile(r"<analyze>(.*?)</analyze>", re.DOTALL)
_VERIFY_OPEN, _VERIFY_CLOSE = "<verify>", P.VERIFY_END.strip()
_VERDICT = re.compile(r"\\boxed\{\s*(yes|no)\s*\}", re.IGNORECASE)
_LEAD_IN = re.compile(r"^\s*Let's analyze the Paragraph \d+ step by step:\s*")
_OUTPUT_HEAD, _OUTPUT_TAIL = P.CODE_OUTPUT_BLOCK.split("{output}")
_OUTPUT_LABEL = _OUTPUT_HEAD.split("\n")[0]
_ROUND = re.compile(
    re.escape(CODE_BLOCK_START) + r"(.*?)" + re.escape(P.CODE_BLOCK_END + _OUTPUT_HEAD) + r"(.*?)"
    + re.escape(_OUTPUT_TAIL),
    re.DOTALL,
)


def _fail(reason: str, paragraph: int | None = None, detail: str = "") -> ConversationError:
    where = f"paragraph {paragraph}: " if paragraph is not None else ""
    return ConversationError(reason, f"{where}{REASONS[reason]}{detail}", paragraph)


def split_sections(critique_text: str) -> dict[int, list[str]]:
    """Every ``### Paragraph k`` section's text (heading excluded), up to the next heading or the end."""
    end = _SECTION_END.search(critique_text)
    text = critique_text[: end.start()] if end else critique_text
    headings = list(_HEADING.finditer(text))
    sections: dict[int, list[str]] = {}
    for i, heading in enumerate(headings):
        stop = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        sections.setdefault(int(heading.group(1)), []).append(text[heading.end() : stop])
    return sections


def paragraph_parts(k: int, section: str, verdict: str) -> TurnParts:
    """Split one section into the parts of the verifier's turn on paragraph ``k``, judged ``verdict``."""
    verdicts = [v.capitalize() for v in _VERDICT.findall(section)]
    if len(verdicts) > 1:
        raise _fail("two-verdicts", k, f" ({', '.join(verdicts)})")
    if verdicts and verdicts[0] != verdict:
        raise _fail("verdict-mismatch", k, f" (it says {verdicts[0]}, the label {verdict})")
    analysis, rest = _analysis_part(k, section)
    verify = _verify_part(rest)
    rounds, interpretation = _code_rounds(k, verify)
    parts = TurnParts(k, _line(analysis), tuple(rounds), _line(interpretation.strip()), verdict)
    problem = turn_problem(parts)
    if problem is not None:
        raise _fail(problem, k)
    return parts


def _analysis_part(k: int, section: str) -> tuple[str, str]:
    """The analysis (lead-in dropped, stripped) and the section's text after it."""
    if section.count(_ANALYZE_OPEN) > 1:
        raise _fail("two-analyses", k)
    closed = _ANALYZE.search(section)
    if closed is not None:
        analysis, rest = closed.group(1), section[closed.end() :]
    else:  # never closed: it ends where the verify part begins
        start = section.find(_ANALYZE_OPEN)
        ends = [at for at in (section.find(_VERIFY_OPEN, start), section.find(CODE_BLOCK_START, start)) if at >= 0]
        if start < 0 or not ends:
            raise _fail("no-analysis", k)
        analysis, rest = section[start + len(_ANALYZE_OPEN) : min(ends)], section[min(ends) :]
    analysis = _LEAD_IN.sub("", analysis).strip()
    if not analysis:
        raise _fail("no-analysis", k)
    return analysis, rest


def _verify_part(rest: str) -> str:
    """The verify part after the analysis, its tags removed: from the first ``<verify>`` (the whole
    text when there is none) to the last ``</verify>``, or to the section's end when none closes.
    """
    close = rest.rfind(_VERIFY_CLOSE)
    body = rest if close < 0 else rest[:close]
    opened = body.find(_VERIFY_OPEN)
    if opened >= 0:
        body = body[opened + len(_VERIFY_OPEN) :]
    return body.replace(_VERIFY_CLOSE, "").replace(_VERIFY_OPEN, "")


def _code_rounds(k: int, verify: str) -> tuple[list[CodeRound], str]:
    """The executed blocks of a ``<verify>`` body and the text after the last output."""
    matches = list(_ROUND.finditer(verify))
    if not matches:
        raise _fail("unexecuted-code" if CODE_BLOCK_START in verify else "no-code", k)
    rounds, at = [], matches[0].start()
    for i, match in enumerate(matches):
        lead = _line(verify[at : match.start()].strip()) if i else ""
        rounds.append(CodeRound(lead=lead, code=match.group(1), output=match.group(2)))
        at = match.end()
    between = [r.lead for r in rounds] + [verify[at:]]
    if any(CODE_BLOCK_START in text for text in between):
        raise _fail("unexecuted-code", k)
    if any(_OUTPUT_LABEL in text for text in [*between, verify[: matches[0].start()]]):
        raise _fail("stray-code-output", k)
    return rounds, verify[at:]


def _line(text: str) -> str:
    """Non-empty text ends with one newline (the verifier's stop strings start on a new line)."""
    return text + "\n" if text else ""


def judgements(steps: int, labels: Sequence[int], after_first_error: str) -> list[str]:
    """The verdict of each turn: the agreed label up to the first error, then per ``after_first_error``."""
    if not labels or len(labels) > steps or any(label not in (0, 1) for label in labels):
        raise ValueError(f"labels must be 1..{steps} values of 0/1, got {list(labels)}")
    verdicts = [P.VERDICTS[0] if label else P.VERDICTS[1] for label in labels]
    if 0 not in labels:
        if len(labels) != steps:
            raise ValueError(f"labels without an error must cover all {steps} steps, got {len(labels)}")
        return verdicts
    first = list(labels).index(0)
    if after_first_error == "end":
        return verdicts[: first + 1]
    return verdicts + [P.VERDICTS[1]] * (steps - len(verdicts))


def build_conversation(
    problem: str, steps: Sequence[str], critique_text: str, labels: Sequence[int], settings: ExportSettings
) -> list[Message]:
    """System, then a user and an assistant turn per judged step; raises ConversationError, never half-built."""
    sections = split_sections(critique_text)
    messages: list[Message] = [{"role": "system", "content": P.SYSTEM_PROMPT}]
    for i, verdict in enumerate(judgements(len(steps), labels, settings.after_first_error)):
        k = i + 1
        if k not in sections:
            raise _fail("missing-paragraph", k, f" (no {paragraph_heading(k)!r})")
        if len(sections[k]) > 1:
            raise _fail("duplicate-paragraph", k)
        parts = paragraph_parts(k, sections[k][0], verdict)
        problem_found = turn_problem(parts, settings.max_code_rounds)
        if problem_found is not None:
            raise _fail(problem_found, k, f" ({len(parts.rounds)} blocks, max_code_rounds={settings.max_code_rounds})")
        step = steps[i].strip() if settings.keep_step_prefixes else strip_step_prefix(steps[i])
        messages.append({"role": "user", "content": P.user_turn(problem, step, i, settings.first_turn)})
        messages.append({"role": "assistant", "content": compose_turn(parts)})
    return messages
