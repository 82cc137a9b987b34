"""Critique-refine's input: the problems, each with its gold answer and, optionally, a first answer.

Kept apart from the loop (:mod:`genprm.evaluation.refine`) so that reading and checking a problem file
(GSM8K, MATH-500 or plain ``{problem, answer}`` records) needs no model, store or verifier; a bad record
fails with its file, line, record and field.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genprm.errors import InputError
from genprm.io import read_objects

DEFAULT_DATA = Path("../shared/data/math500/test.jsonl")


@dataclass(frozen=True)
class RefineProblem:
    """One problem with its gold answer and, optionally, a policy answer to start from."""

    id: str
    problem: str
    gold: str
    response: str | None = None

    @property
    def key(self) -> str:
        """A content key (the id is left out, so reordering a file reuses its stored rounds)."""
        payload = json.dumps([self.problem, self.gold, self.response], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


def gold_answer(value: Any) -> str | None:
    """The gold answer as text: GSM8K's final answer after ``####`` (thousands commas dropped),
    numbers without a spurious ``.0``; ``None`` when it is not a non-empty string or a number.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    if "####" in text:
        text = re.sub(r"(?<=\d),(?=\d{3})", "", text.rsplit("####", 1)[1])
    return text.strip() or None


def parse_problem(obj: Any, *, position: int, path: str | None = None, line: int | None = None) -> RefineProblem:
    """Check one record (``{problem|question, answer|gt[, response, id]}``); errors name the field."""

    def fail(message: str, name: str | None = None) -> InputError:
        return InputError(message, path=path, line=line, record=position, field=name)

    if not isinstance(obj, dict):
        raise fail(f"expected an object with 'problem' and 'answer', got {type(obj).__name__}")
    text_field = next((f for f in ("problem", "question") if f in obj), None)
    if text_field is None:
        raise fail("missing (or 'question')", "problem")
    if not isinstance(obj[text_field], str) or not obj[text_field].strip():
        raise fail("must be a non-empty string", text_field)
    gold_field = next((f for f in ("answer", "gt") if f in obj), None)
    if gold_field is None:
        raise fail("missing: the gold answer (or 'gt')", "answer")
    gold = gold_answer(obj[gold_field])
    if gold is None:
        raise fail(f"must be a non-empty string or a number, got {obj[gold_field]!r}", gold_field)
    response = obj.get("response")
    if response is not None and not isinstance(response, str):
        raise fail(f"must be one policy answer (a string), got {type(response).__name__}", "response")
    ident = obj.get("id", obj.get("unique_id", position))
    return RefineProblem(str(ident), obj[text_field], gold, response)


def load_problems(path: str | Path, limit: int | None = None) -> list[RefineProblem]:
    """The first ``limit`` problems of a JSON/JSONL file (GSM8K, MATH-500 and ``{problem, answer}`` shapes)."""
    problems: list[RefineProblem] = []
    for obj, position, line in read_objects(path, "pass --data with a JSONL file of problems"):
        if limit is not None and len(problems) >= limit:
            break
        problems.append(parse_problem(obj, position=position, path=str(path), line=line))
    if not problems and limit != 0:
        raise InputError("holds no problems", path=str(path))
    return problems
