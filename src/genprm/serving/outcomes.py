"""Grade final answers against labels for the outcome part of the reward, off the event loop.

math-verify's timeouts need a main thread, and a server's handlers run elsewhere, so grading goes to
one worker process kept for the server's life (started on the first grade: servers that mix in no
outcome never start it). :func:`genprm.evaluation.grading.grade_all` runs there on its main thread.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

from genprm.evaluation.grading import grade_all


class OutcomeGrader:
    """``await grader.grade(label, response)``: whether the response's final answer equals the label."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    async def grade(self, label: str, response: str) -> bool:
        future = self._executor().submit(grade_all, [(label, response)])
        (correct, _answer), = await asyncio.wrap_future(future)
        return correct

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
