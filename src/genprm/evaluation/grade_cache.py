"""Grades of answers against gold answers, kept in the run's store so nothing is graded twice.

Best-of-N and refine both grade with math-verify; a grade is keyed by the gold answer and the
graded text under the math-verify version (kind ``grade``), so problems shared between runs or
re-read with other options reuse it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from genprm.evaluation.grading import TIMEOUT_S, grade_all
from genprm.store import RunStore, settings_key

GRADE_KIND = "grade"
GRADE_CHUNK = 16
"""Pairs graded per progress update (on the main thread; elsewhere all at once, in one worker)."""


@dataclass(frozen=True)
class Grade:
    correct: bool
    answer: str | None
    """math-verify's normal form of the final answer (what votes group by); ``None``: no answer found."""


class GradeCache:
    """Grades ``(gold, response)`` pairs with math-verify, keeping each grade in the store.

    Grades are keyed by the gold answer and the response text, under the math-verify version, so
    problems shared between runs or re-read with other options are never graded twice.
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.settings = settings_key("math-verify", {"version": _math_verify_version(), "timeout_s": TIMEOUT_S})

    @staticmethod
    def key(gold: str, response: str) -> str:
        return hashlib.sha256(json.dumps([gold, response], ensure_ascii=False).encode()).hexdigest()[:24]

    def cached(self, gold: str, response: str) -> Grade | None:
        value = self.store.item(GRADE_KIND, self.key(gold, response), self.settings)
        return Grade(bool(value["correct"]), value["answer"]) if isinstance(value, dict) else None

    def grade(
        self, pairs: Sequence[tuple[str, str]], on_progress: Callable[[int, int], None] | None = None
    ) -> list[Grade]:
        """Grades in the order of ``pairs``, computing and storing the missing ones."""
        grades = [self.cached(gold, response) for gold, response in pairs]
        todo = [i for i, g in enumerate(grades) if g is None]
        done = len(pairs) - len(todo)
        if on_progress:
            on_progress(done, len(pairs))
        size = GRADE_CHUNK if threading.current_thread() is threading.main_thread() else max(1, len(todo))
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            for i, (correct, answer) in zip(chunk, grade_all([pairs[i] for i in chunk])):
                grade = grades[i] = Grade(correct, answer)
                self.store.put_item(GRADE_KIND, self.key(*pairs[i]), self.settings, asdict(grade))
            done += len(chunk)
            if on_progress:
                on_progress(done, len(pairs))
        return [g for g in grades if g is not None]


def _math_verify_version() -> str:
    try:
        return importlib.metadata.version("math-verify")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
