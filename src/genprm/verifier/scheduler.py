"""Verify many solutions at once: every path of every solution in flight, up to a bound.

The sequential loop verifies one solution, one step, one path after another. The scheduler keeps
up to ``concurrency`` paths (from up to ``solutions_in_flight`` solutions) running on worker
threads; each blocks only on its own engine call or code run, so the engine sees many requests at
once and can batch them, and sandboxed code runs overlap with generation. Path semantics are
exactly those of the sequential loop: the same coroutines, the same derived seeds.

A solution stops where the sequential loop stops it: with ``stop_at_first_error`` its thread starts
no step after the first error, and paths of that step still unfinished once the error is certain
are cancelled at their next action (queued ones before their first engine call), so their
threads go to other solutions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from genprm.io import SolutionInput
from genprm.verifier.config import VerifyConfig
from genprm.verifier.driver import ThreadedRunner
from genprm.verifier.records import SolutionResult
from genprm.verifier.solution import SolutionVerifier


class Scheduler:
    """Runs :class:`SolutionVerifier` over many inputs concurrently; results arrive as they finish."""

    def __init__(self, verifier: SolutionVerifier, *, concurrency: int = 32, solutions_in_flight: int | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r}: must be at least 1")
        self.concurrency = concurrency
        self.solutions_in_flight = solutions_in_flight or concurrency // _paths_per_solution(verifier.config) + 1
        self._paths = ThreadPoolExecutor(concurrency, thread_name_prefix="genprm-path")
        self.verifier = SolutionVerifier(
            verifier.engine,
            verifier.config,
            chat_template=verifier.chat.source,
            sandbox=verifier.sandbox,
            runner=ThreadedRunner(self._paths),
        )

    def run(
        self,
        items: Iterable[SolutionInput],
        on_result: Callable[[SolutionResult], None],
        path_ids_of: Callable[[SolutionInput], Sequence[int] | None] | None = None,
    ) -> None:
        """Verify ``items``; ``on_result`` is called (from this thread) as each solution finishes.

        ``path_ids_of`` picks which paths of an item to run (default: all ``n``).
        """
        stop = threading.Event()
        with ThreadPoolExecutor(self.solutions_in_flight, thread_name_prefix="genprm-solution") as solutions:
            running: set[Future[SolutionResult]] = set()

            def verify(item: SolutionInput) -> SolutionResult:
                if stop.is_set():
                    raise RuntimeError("cancelled")
                ids = path_ids_of(item) if path_ids_of else None
                return self.verifier.verify(item.problem, item.steps, record=item.record, key=item.key, path_ids=ids)

            try:
                for item in items:
                    while len(running) >= self.solutions_in_flight:
                        running = self._deliver(running, on_result)
                    running.add(solutions.submit(verify, item))
                while running:
                    running = self._deliver(running, on_result)
            finally:
                stop.set()

    @staticmethod
    def _deliver(
        running: set[Future[SolutionResult]], on_result: Callable[[SolutionResult], None]
    ) -> set[Future[SolutionResult]]:
        done, pending = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            on_result(future.result())
        return set(pending)

    def close(self) -> None:
        self._paths.shutdown(wait=True)


def _paths_per_solution(config: VerifyConfig) -> int:
    """Paths one solution keeps in flight at a time: sequential sampling starts with ``min_paths``."""
    return min(config.n, config.min_paths) if config.adaptive_n else config.n
