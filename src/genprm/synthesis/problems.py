"""Synthesis input: problems with a gradable gold answer; the others are skipped with their reason.

A record is ``{problem|question, answer}`` (GSM8K's ``#### 18`` is read) or MATH-style, its answer
the last ``\\boxed{...}`` of ``solution`` when ``answer`` is absent. Unlike evaluation input, a
record without a gradable answer does not stop the run: training data comes from large, messy
files, so it is counted with its reason and the rest go on. A file that cannot be read at all
still fails with its path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genprm.evaluation.refine_data import gold_answer
from genprm.io import read_objects

TEXT_FIELDS = ("problem", "question")


@dataclass(frozen=True)
class Problem:
    """One problem to synthesise training data from."""

    id: str
    problem: str
    gold: str
    position: int
    """0-based index of the record in its file."""

    @property
    def key(self) -> str:
        """A content key: the same problem and gold answer reuse stored work in any file order."""
        payload = json.dumps([self.problem, self.gold], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Problem:
        return cls(str(value["id"]), value["problem"], value["gold"], int(value["position"]))


@dataclass(frozen=True)
class Skipped:
    """A record left out, and why (a short reason plus the field it concerns)."""

    position: int
    id: str
    reason: str
    field: str | None = None

    @property
    def key(self) -> str:
        return f"{self.position}:{self.id}"


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text`` (nested braces allowed); ``None`` if none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, at = 0, start + len("\\boxed")
    for i in range(at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                inner = text[at + 1 : i].strip()
                return inner or None
    return None


def read_problem(obj: Any, position: int) -> Problem | Skipped:
    """One record as a problem, or why it is skipped."""
    ident = str(obj.get("id", obj.get("unique_id", position))) if isinstance(obj, dict) else str(position)
    if not isinstance(obj, dict):
        return Skipped(position, ident, f"not an object ({type(obj).__name__})")
    text_field = next((f for f in TEXT_FIELDS if f in obj), None)
    if text_field is None:
        return Skipped(position, ident, "no problem text", "problem")
    text = obj[text_field]
    if not isinstance(text, str) or not text.strip():
        return Skipped(position, ident, "empty problem text", text_field)
    gold = gold_answer(obj["answer"]) if "answer" in obj else None
    if gold is None and isinstance(obj.get("solution"), str):
        gold = last_boxed(obj["solution"])
        if gold is None:
            return Skipped(position, ident, "no \\boxed{} answer in the solution", "solution")
    if gold is None:
        return Skipped(position, ident, "no gradable answer", "answer")
    return Problem(ident, text, gold, position)


def read_problems(path: str | Path, limit: int | None = None) -> Iterator[Problem | Skipped]:
    """The first ``limit`` records of a JSON/JSONL file, each a :class:`Problem` or a :class:`Skipped`."""
    for count, (obj, position, _line) in enumerate(read_objects(path, "pass --problems with a JSONL file")):
        if limit is not None and count >= limit:
            return
        yield read_problem(obj, position)
