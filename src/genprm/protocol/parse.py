"""Pull pieces out of a GenPRM assistant turn: the code to run, the analysis, a one-line critique."""

from __future__ import annotations

import re

from genprm.protocol.prompts import ANALYZE_END

_PYTHON_BLOCK = re.compile(r"```python\s*(.*?)\s*```", re.DOTALL)
_LEAD_IN = re.compile(r"<analyze>\s*Let's analyze the Paragraph \d+ step by step:\s*")


def last_code_block(text: str) -> str | None:
    """The last complete ```python block of ``text``, stripped; ``None`` when there is none.

    The released code executes the last block of the step's text so far, so a model that repeats a
    fence re-runs its latest code; we keep that behaviour.
    """
    blocks = _PYTHON_BLOCK.findall(text)
    return blocks[-1].strip() if blocks else None


def analysis_of(text: str) -> str:
    """The analysis of a turn: inside ``<analyze>``, after the "Let's analyze ..." lead-in."""
    match = _LEAD_IN.search(text)
    if match is None:
        return ""
    body = text[match.end() :]
    end = body.find(ANALYZE_END.strip())
    return (body if end < 0 else body[:end]).strip()


def one_line(text: str, width: int = 120) -> str:
    """The first sentence or line of ``text``, at most ``width`` characters."""
    flat = " ".join(text.split())
    for stop in (". ", "\n"):
        cut = flat.find(stop)
        if 0 < cut < width:
            return flat[: cut + 1].strip()
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def split_paragraphs(text: str) -> list[str]:
    """A policy answer's steps: its paragraphs, split on blank lines (empty ones dropped)."""
    return [part.strip() for part in _BLANK_LINE.split(text) if part.strip()]
