"""The in-process executor: units run on a thread pool, a bounded number at a time."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic

from genprm.errors import ConfigError
from genprm.executor.base import Executor, NoResources, Outcome, R, Resources, U, UnitRun, Work, describe_error


class LocalExecutor(Executor):
    """Threads of this process, sharing the caller's resources: a batching engine (vLLM, a server)
    sees up to ``max_in_flight`` requests at once; an engine that serialises calls behind a lock
    (llama.cpp) runs them one by one, and the threads then only overlap code runs and grading.
    """

    def __init__(self, max_in_flight: int = 16, *, thread_name: str = "genprm-unit") -> None:
        if max_in_flight < 1:
            raise ConfigError("max_in_flight", max_in_flight, "must be at least 1")
        self.max_in_flight = max_in_flight
        self.thread_name = thread_name

    def run(self, work: Work[U, R], units: Iterable[U] = (), resources: Resources | None = None) -> UnitRun[U, R]:
        return _LocalRun(work, units, resources or NoResources(), self.max_in_flight, self.thread_name)


class _LocalRun(UnitRun[U, R], Generic[U, R]):
    def __init__(
        self, work: Work[U, R], units: Iterable[U], resources: Resources, size: int, thread_name: str
    ) -> None:
        self._work = work
        self._resources = resources
        self._initial = iter(units)
        self._follow_ups: deque[U] = deque()
        self._size = size
        self._thread_name = thread_name

    def submit(self, unit: U) -> None:
        self._follow_ups.append(unit)

    def _next_unit(self) -> tuple[bool, U | None]:
        if self._follow_ups:
            return True, self._follow_ups.popleft()
        for unit in self._initial:
            return True, unit
        return False, None

    def _call(self, unit: U) -> Outcome[U, R]:
        started = time.perf_counter()
        try:
            value = self._work(self._resources, unit)
        except Exception as exc:  # a unit's failure is data: the stage records it and goes on
            return Outcome(unit, None, describe_error(exc), time.perf_counter() - started)
        return Outcome(unit, value, None, time.perf_counter() - started)

    def __iter__(self) -> Iterator[Outcome[U, R]]:
        pool = ThreadPoolExecutor(self._size, thread_name_prefix=self._thread_name)
        running: set[Future[Outcome[U, R]]] = set()
        finished = False
        try:
            while True:
                while len(running) < self._size:
                    found, unit = self._next_unit()
                    if not found:
                        break
                    running.add(pool.submit(self._call, unit))  # type: ignore[arg-type]
                if not running:
                    finished = True
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running.discard(future)
                    yield future.result()
        finally:
            # Stopped early (an error in the consumer, Ctrl-C): queued units never start and running
            # ones are not waited for; their results are lost, which a resumable stage tolerates.
            pool.shutdown(wait=finished, cancel_futures=True)
