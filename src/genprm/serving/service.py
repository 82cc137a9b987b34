"""One long-lived verifier front shared by every request: submit a solution, get its outcome later.

Every request's solutions go to the same pool of solution workers, and every path of every solution
to the same pool of path threads (:class:`~genprm.verifier.driver.ThreadedRunner`), so concurrent
requests are in flight on the engine together: a batching engine (vLLM) batches them, a server
(OpenAI-compatible) sees them concurrently. Path semantics are those of the sequential loop: the same
:class:`~genprm.verifier.solution.SolutionVerifier`, the same derived seeds, so transcripts match.

- **Duplicates**: a solution whose paths are in the run store is answered from it; one being verified
  for another request is joined, not verified twice (GRPO sends many identical samples).
- **Bounded**: at most ``max_queue`` solutions wait for a worker; beyond that :class:`QueueFull`.
- **Cancellation**: a solution whose every requester has gone (disconnected, or past its deadline)
  stops before its next engine call; one still queued never starts. Paths finished before that are
  discarded with it (a partial solution is not a result); anything verified completely is stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

from genprm.engines.base import Engine
from genprm.errors import GenPRMError
from genprm.evaluation.scoring import FAILED_KIND, complete, key_fields, trajectories
from genprm.io import SolutionInput
from genprm.protocol.chat import template_fields
from genprm.serving.results import Scored
from genprm.store import RunStore
from genprm.verifier.adaptive import Tally
from genprm.verifier.config import VerifyConfig
from genprm.verifier.driver import CodeRunner, PathRunner, ThreadedRunner
from genprm.verifier.path import PathCoroutine
from genprm.verifier.records import PathStep, SolutionFailure
from genprm.verifier.scheduler import attempt, solutions_for
from genprm.verifier.solution import SolutionVerifier


class QueueFull(GenPRMError):
    """Too many solutions wait already; ``retry_after`` estimates the seconds until there is room."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("the verification queue is full")
        self.retry_after = retry_after


class ServiceClosed(GenPRMError):
    """The service is shutting down and takes no new work."""


@dataclass(frozen=True)
class Stopped:
    """A solution whose verification was stopped before it finished: nobody waits for it any more."""

    reason: str


Outcome = Scored | SolutionFailure | Stopped


class _Cancelled(Exception):
    """Raised on a solution's worker thread to stop it between engine calls."""


@dataclass
class ServiceStats:
    """Counters for /metrics, updated under the service's lock."""

    verified: int = 0
    cached: int = 0
    joined: int = 0
    failed: int = 0
    cancelled: int = 0
    rejected: int = 0
    solution_seconds: float = 0.0


class _Job:
    """One solution being verified, and how many requests wait for it."""

    def __init__(self, item: SolutionInput, deadline: float) -> None:
        self.item = item
        self.deadline = deadline
        self.waiters = 1
        self.stop = threading.Event()
        self.future: Future[Outcome] = Future()
        self.task: Future[None] | None = None
        """The worker pool's handle: cancelling it takes a queued job out of the queue."""

    @property
    def stopped(self) -> bool:
        return self.stop.is_set() or time.monotonic() > self.deadline


_current = threading.local()
"""The job a solution worker thread is verifying, so the path runner can stop it."""


class _StoppingTally:
    """A step's :class:`Tally` that also reads as cancelled once its job is stopped, so every path
    still running returns (cancelled) before its next engine call.
    """

    def __init__(self, tally: Tally | None, job: _Job) -> None:
        self._tally = tally
        self._job = job

    @property
    def cancelled(self) -> bool:
        return self._job.stopped or (self._tally is not None and self._tally.cancelled)

    def record(self, step: PathStep) -> None:
        if self._tally is not None:
            self._tally.record(step)


class _StoppableRunner:
    """Runs a step's paths with ``inner`` unless the job on this thread was stopped (then it raises)."""

    def __init__(self, inner: PathRunner) -> None:
        self.inner = inner

    def __call__(
        self, engine: Engine, coroutines: Sequence[PathCoroutine], runners: Sequence[CodeRunner],
        tally: Tally | None = None,
    ) -> list[PathStep]:
        job: _Job | None = getattr(_current, "job", None)
        if job is None:
            return self.inner(engine, coroutines, runners, tally)
        if job.stopped:
            raise _Cancelled()
        paths = self.inner(engine, coroutines, runners, cast(Tally, _StoppingTally(tally, job)))
        if job.stopped:
            raise _Cancelled()
        return paths


class Ticket:
    """One request's claim on one solution's outcome; :meth:`release` it when done waiting."""

    def __init__(self, future: Future[Outcome], release: Callable[[], None] | None = None) -> None:
        self.future: Future[Outcome] = Future()  # a copy, so that a waiter cancelling it cancels nothing else
        self._release = release
        future.add_done_callback(self._copy)

    def _copy(self, source: Future[Outcome]) -> None:
        if self.future.done():
            return
        if source.cancelled():
            self.future.set_result(Stopped("cancelled"))
        elif source.exception() is not None:
            self.future.set_exception(cast(BaseException, source.exception()))
        else:
            self.future.set_result(source.result())

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()


def _done(outcome: Outcome) -> Future[Outcome]:
    future: Future[Outcome] = Future()
    future.set_result(outcome)
    return future


class VerificationService:
    """Verifies solutions for many concurrent requests on one engine; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        config: VerifyConfig,
        store: RunStore,
        *,
        chat_template: str | None = None,
        concurrency: int = 32,
        max_queue: int = 256,
    ) -> None:
        if config.paths != "independent":
            raise GenPRMError("the server stores each path on its own: it needs independent paths")
        self.config = config
        self.store = store
        self.max_queue = max_queue
        self.solutions_in_flight = solutions_for(config, concurrency)
        self._paths = ThreadPoolExecutor(concurrency, thread_name_prefix="genprm-path")
        self._solutions = ThreadPoolExecutor(self.solutions_in_flight, thread_name_prefix="genprm-solution")
        self.verifier = SolutionVerifier(
            engine, config, chat_template=chat_template, runner=_StoppableRunner(ThreadedRunner(self._paths))
        )
        self.model_id = engine.model_id
        self.settings = store.register_settings(
            engine.model_id, key_fields(config, template_fields(self.verifier.chat.source, engine.chat_template)),
            independent_paths=config.paths_independent,
        )
        self.stats = ServiceStats()
        self._lock = threading.Lock()
        self._inflight: dict[str, _Job] = {}
        self._queued = 0
        self._running = 0
        self._closed = False

    # -- what a request does ---------------------------------------------------------------------

    def submit(self, item: SolutionInput, deadline: float) -> Ticket:
        """Claim ``item``'s outcome: from the store, from a job in flight, or from a new job.

        ``deadline`` is a :func:`time.monotonic` time after which nobody waits. Raises
        :class:`QueueFull` when ``max_queue`` solutions wait already, :class:`ServiceClosed` on shutdown.
        """
        with self._lock:
            if self._closed:
                raise ServiceClosed("the server is shutting down")
            ticket = self._join(item, deadline)
        if ticket is not None:
            return ticket
        if complete(self.store, item, self.settings, self.config):
            with self._lock:
                self.stats.cached += 1
            return Ticket(_done(self.stored(item, cached=True)))
        with self._lock:
            ticket = self._join(item, deadline)
            if ticket is not None:
                return ticket
            if self._queued >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(self._retry_after())
            job = _Job(item, deadline)
            self._inflight[item.key] = job
            self._queued += 1
            job.task = self._solutions.submit(self._run, job)
            return Ticket(job.future, lambda: self._release(job))

    def stored(self, item: SolutionInput, *, cached: bool) -> Scored:
        """``item``'s outcome as the store holds it (its paths must be there)."""
        n = self.config.n
        paths = self.store.paths(item.key, self.settings, n)
        return Scored.from_paths(item.key, paths, len(item.steps), n, self.config.threshold, cached=cached)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def running(self) -> int:
        return self._running

    def close(self) -> None:
        """Take no new work, let every queued and running solution finish, stop the threads."""
        with self._lock:
            self._closed = True
        self._solutions.shutdown(wait=True)
        self._paths.shutdown(wait=True)

    # -- inside ----------------------------------------------------------------------------------

    def _join(self, item: SolutionInput, deadline: float) -> Ticket | None:
        """A ticket on the job in flight for the same solution, if one is (caller holds the lock)."""
        job = self._inflight.get(item.key)
        if job is None or job.stop.is_set():
            return None
        job.waiters += 1
        job.deadline = max(job.deadline, deadline)
        self.stats.joined += 1
        return Ticket(job.future, lambda: self._release(job))

    def _release(self, job: _Job) -> None:
        """One requester stopped waiting; when it was the last, the job stops (a queued one never starts)."""
        with self._lock:
            job.waiters -= 1
            if job.waiters > 0 or job.future.done():
                return
            job.stop.set()
            if job.task is not None and job.task.cancel():
                self._queued -= 1
                if self._inflight.get(job.item.key) is job:
                    del self._inflight[job.item.key]
                self.stats.cancelled += 1
                job.future.set_result(Stopped("cancelled"))

    def _retry_after(self) -> float:
        done = self.stats.verified + self.stats.failed
        per_solution = self.stats.solution_seconds / done if done else 5.0
        return min(60.0, max(1.0, per_solution * self._queued / self.solutions_in_flight))

    def _run(self, job: _Job) -> None:
        with self._lock:
            self._queued -= 1
            self._running += 1
        started = time.perf_counter()
        try:
            outcome = self._verify(job)
        except Exception as exc:  # the store failing, say: this solution's failure, reported to its requests
            outcome = SolutionFailure.of(job.item.record, job.item.key, exc)
        with self._lock:
            self._running -= 1
            if self._inflight.get(job.item.key) is job:
                del self._inflight[job.item.key]
            self._count(outcome, time.perf_counter() - started)
        job.future.set_result(outcome)

    def _count(self, outcome: Outcome, seconds: float) -> None:
        if isinstance(outcome, Stopped):
            self.stats.cancelled += 1
            return
        if isinstance(outcome, SolutionFailure):
            self.stats.failed += 1
        elif outcome.cached:
            self.stats.cached += 1
        else:
            self.stats.verified += 1
        self.stats.solution_seconds += seconds

    def _verify(self, job: _Job) -> Outcome:
        item = job.item
        if job.stopped:
            return Stopped("cancelled")
        have = self.store.path_indices(item.key, self.settings)
        if complete(self.store, item, self.settings, self.config):
            return self.stored(item, cached=True)
        missing = [j for j in range(self.config.n) if j not in have]
        path_ids = missing if self.config.paths_independent and have else None
        _current.job = job
        try:
            result = attempt(self.verifier, item, path_ids)
        finally:
            _current.job = None
        if isinstance(result, SolutionFailure):
            if job.stopped:
                return Stopped("cancelled")
            self.store.put_item(FAILED_KIND, item.key, self.settings, result.value(), record=item.record,
                                replace=True)
            return result
        self.store.put_paths(item.key, item.record, self.settings, trajectories(result))
        return self.stored(item, cached=False)

