"""Verify many solutions at once: every path of every solution in flight, up to a bound.

The sequential loop verifies one solution, one step, one path after another. The scheduler keeps
up to ``concurrency`` paths (from up to ``solutions_in_flight`` solutions) running on worker
threads; each blocks only on its own engine call or code run, so the engine sees many requests at
once and can batch them, and sandboxed code runs overlap with generation. Path semantics are
exactly those of the sequential loop: the same coroutines, the same derived seeds. Solutions start
costliest first (:func:`longest_first`), so the run ends on short ones.

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
from genprm.verifier.records import SolutionFailure, SolutionResult
from genprm.verifier.solution import SolutionVerifier


class Scheduler:
    """Runs :class:`SolutionVerifier` over many inputs concurrently; results arrive as they finish."""

    def __init__(self, verifier: SolutionVerifier, *, concurrency: int = 32, solutions_in_flight: int | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r}: must be at least 1")
        self.concurrency = concurrency
        self.solutions_in_flight = solutions_in_flight or solutions_for(verifier.config, concurrency)
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
        on_failure: Callable[[SolutionFailure], None] | None = None,
    ) -> None:
        """Verify ``items``; ``on_result`` is called (from this thread) as each solution finishes.

        ``items`` is read whole first and started costliest first (:func:`longest_first`); a caller
        that must stream (the server) admits solutions itself, as they come.

        ``path_ids_of`` picks which paths of an item to run (default: all ``n``). A solution whose
        verification raises goes to ``on_failure`` as a :class:`SolutionFailure` and the others go on;
        without ``on_failure`` the first failure is raised once every solution in flight is delivered.
        """
        failures: list[SolutionFailure] = []
        report = on_failure or failures.append
        stop = threading.Event()  # set when this loop ends early: queued solutions then do not start

        def verify(item: SolutionInput, ids: Sequence[int] | None) -> SolutionResult | SolutionFailure:
            if stop.is_set():
                return SolutionFailure.of(item.record, item.key, RuntimeError("cancelled"))
            return attempt(self.verifier, item, ids)

        with ThreadPoolExecutor(self.solutions_in_flight, thread_name_prefix="genprm-solution") as solutions:
            running: set[Future[SolutionResult | SolutionFailure]] = set()
            try:
                for item, ids in longest_first(items, path_ids_of, self.verifier.config.n):
                    while len(running) >= self.solutions_in_flight:
                        running = self._deliver(running, on_result, report)
                    running.add(solutions.submit(verify, item, ids))
                while running:
                    running = self._deliver(running, on_result, report)
            finally:
                stop.set()
        if failures:
            raise RuntimeError(f"{len(failures)} solution(s) failed; the first: {failures[0].error}")

    @staticmethod
    def _deliver(
        running: set[Future[SolutionResult | SolutionFailure]],
        on_result: Callable[[SolutionResult], None],
        on_failure: Callable[[SolutionFailure], None],
    ) -> set[Future[SolutionResult | SolutionFailure]]:
        done, pending = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            outcome = future.result()  # attempt() never raises: a failure is a value
            if isinstance(outcome, SolutionFailure):
                on_failure(outcome)
            else:
                on_result(outcome)
        return set(pending)

    def close(self) -> None:
        self._paths.shutdown(wait=True)


def attempt(
    verifier: SolutionVerifier, item: SolutionInput, path_ids: Sequence[int] | None = None
) -> SolutionResult | SolutionFailure:
    """Verify one input; whatever it raises comes back as a :class:`SolutionFailure`, so that one bad
    solution costs only itself (the sequential loops and the scheduler share this).
    """
    try:
        return verifier.verify(item.problem, item.steps, record=item.record, key=item.key, path_ids=path_ids)
    except Exception as exc:  # every failure of one solution is data for the run, never the run's end
        return SolutionFailure.of(item.record, item.key, exc)


def longest_first(
    items: Iterable[SolutionInput], path_ids_of: Callable[[SolutionInput], Sequence[int] | None] | None, n: int
) -> list[tuple[SolutionInput, Sequence[int] | None]]:
    """``items`` with the paths each runs, costliest first (ties in the given order).

    A solution's steps run one after another, so the last solutions started decide how long a run's
    tail lasts, when too few paths are left to fill a batch: starting the long ones first leaves the
    short ones for the tail. The cost is the solution's steps (the chain no batch can shorten), then
    its work: paths x characters of its steps. Results still arrive as they finish.
    """
    work = [(item, path_ids_of(item) if path_ids_of else None) for item in items]
    return sorted(work, key=lambda pair: _cost(pair[0], n if pair[1] is None else len(pair[1])), reverse=True)


def _cost(item: SolutionInput, paths: int) -> tuple[int, int]:
    return len(item.steps), paths * sum(len(step) for step in item.steps)


def solutions_for(config: VerifyConfig, concurrency: int) -> int:
    """Solutions kept in flight so that about ``concurrency`` paths run at once (one more, so that a
    finishing solution's successor is already started).
    """
    return concurrency // _paths_per_solution(config) + 1


def _paths_per_solution(config: VerifyConfig) -> int:
    """Paths one solution keeps in flight at a time: sequential sampling starts with ``min_paths``."""
    return min(config.n, config.min_paths) if config.adaptive_n else config.n
