"""Compose a whole verifier assistant turn from its parts, exactly as the verifier produces it.

Training data must be what GenPRM writes at inference, byte for byte. The verifier builds a turn
stage by stage (:mod:`genprm.verifier.path`): a forced lead-in, then text the model generates until a
stop string, code runs spliced in, a forced judgement. :class:`TurnParts` names those parts and
:func:`compose_turn` joins them with the strings of :mod:`genprm.protocol.prompts`. :func:`turn_problem`
says whether the verifier would really produce that turn: each generated piece must end at its stop
string and contain no earlier one, or the verifier would have cut it there (and, for a stray code
fence, run code the turn does not show).
"""

from __future__ import annotations

from dataclasses import dataclass

from genprm.protocol import prompts as P

CODE_BLOCK_START = P.VERIFY_PREFIX[P.VERIFY_PREFIX.rindex("```python") :]
"""The opening fence a later code round writes itself (the first one is part of VERIFY_PREFIX)."""

ANALYZE_STOPS = (P.ANALYZE_END,)
VERIFY_STOPS = (P.CODE_BLOCK_END, P.OUTPUT_END, P.OUTPUT_TAG)
"""The verifier's stop strings per stage (full mode), as :mod:`genprm.verifier.path` sends them."""


@dataclass(frozen=True)
class CodeRound:
    """One executed code block of a ``<verify>`` part."""

    lead: str
    """What the model wrote between the previous code output and this block's fence (empty for the
    first block, whose fence VERIFY_PREFIX opens)."""
    code: str
    """The block's text between the fences, as written."""
    output: str
    """What the sandbox printed (spliced as ``[Code Output]``)."""


@dataclass(frozen=True)
class TurnParts:
    """The parts of one full-mode turn on paragraph ``step_number`` (from 1)."""

    step_number: int
    analysis: str
    """The analysis after the "Let's analyze ..." lead-in, up to (not including) ``</analyze>``."""
    rounds: tuple[CodeRound, ...]
    interpretation: str
    """What follows the last code output, up to (not including) ``</verify>``."""
    verdict: str


def generated_pieces(parts: TurnParts) -> list[str]:
    """What the model generates in each engine call of the turn, stop strings included.

    The last verify piece ends with ``<output>``: the verifier cuts there and writes the judgement
    lead-in itself.
    """
    pieces = [parts.analysis + P.ANALYZE_END]
    for i, run in enumerate(parts.rounds):
        fence = CODE_BLOCK_START if i else ""
        pieces.append(run.lead + fence + run.code + P.CODE_BLOCK_END)
    pieces.append(parts.interpretation + P.VERIFY_END + P.OUTPUT_TAG)
    return pieces


def compose_turn(parts: TurnParts) -> str:
    """The assistant turn the verifier writes for these parts (ends with ``</output>\\n``)."""
    if parts.verdict not in P.VERDICTS:
        raise ValueError(f"verdict must be one of {P.VERDICTS}, got {parts.verdict!r}")
    text = P.analyze_prefix(parts.step_number) + parts.analysis + P.ANALYZE_END + P.VERIFY_PREFIX
    for i, run in enumerate(parts.rounds):
        fence = CODE_BLOCK_START if i else ""
        text += run.lead + fence + run.code + P.CODE_BLOCK_END + P.code_output_block(run.output)
    return text + parts.interpretation + P.VERIFY_END + P.OUTPUT_PREFIX + P.verdict_close(parts.verdict)


def turn_problem(parts: TurnParts, max_code_rounds: int | None = None) -> str | None:
    """Why the verifier could not produce this turn (``None`` when it could).

    ``max_code_rounds`` is the verifier's limit on verify-stage requests: ``r`` code blocks need
    ``r + 1`` of them (the last one reaches the judgement); ``None`` checks the stop strings only.
    """
    if not parts.rounds:
        return "no-code"
    if max_code_rounds is not None and len(parts.rounds) + 1 > max_code_rounds:
        return "too-many-code-blocks"
    pieces = generated_pieces(parts)
    if _stops_early(pieces[0], ANALYZE_STOPS):
        return "stop-in-analysis"
    if any(_stops_early(piece, VERIFY_STOPS) for piece in pieces[1:]):
        return "stop-in-verify"
    return None


def _stops_early(piece: str, stops: tuple[str, ...]) -> bool:
    """Whether ``piece`` fails to end at its first stop string (an engine would have cut it elsewhere)."""
    ends = [piece.find(stop) + len(stop) for stop in stops if stop in piece]
    return not ends or any(end != len(piece) for end in ends)
