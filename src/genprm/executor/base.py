"""The executor interface: units in, outcomes out in completion order, follow-up units on the way.

A unit's work is a picklable function of (the worker's :class:`Resources`, the unit), so that the
same stage code runs on threads of this process (:class:`~genprm.executor.LocalExecutor`, with the
models the caller already holds) and on Ray actors that each hold their own engine and sandbox pool
(:mod:`genprm.executor.ray`). Work that closed over an engine could not cross processes.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # evaluation.chat sits beside the executor, not below it: no import at run time
    from genprm.evaluation.chat import ChatModel

U = TypeVar("U")
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[U, R]):
    """What one unit came to: its value, or the error that stopped it (never raised)."""

    unit: U
    value: R | None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class Resources(ABC):
    """What a worker holds for the units it runs: role models by name (``policy``, ``verifier``, ...)
    and per-worker state that work builds once and reuses (a verifier with its path threads).
    """

    def __init__(self) -> None:
        self._state: dict[Hashable, Any] = {}
        self._state_lock = threading.Lock()

    @abstractmethod
    def chat(self, role: str) -> ChatModel:
        """The model playing ``role`` (loaded on first use where the resources load models)."""

    def state(self, key: Hashable, build: Callable[[], T]) -> T:
        """The value built once per worker under ``key`` (later callers get the same object)."""
        with self._state_lock:
            if key not in self._state:
                self._state[key] = build()
            value: T = self._state[key]
            return value

    def close(self) -> None:
        """Close the state built here (whatever has a ``close``); safe to call twice."""
        with self._state_lock:
            built, self._state = list(self._state.values()), {}
        for value in built:
            closer = getattr(value, "close", None)
            if callable(closer):
                closer()


class NoResources(Resources):
    """For work that needs no model (tests, grading-only work)."""

    def chat(self, role: str) -> ChatModel:
        raise LookupError(f"no model plays '{role}' here")


Work = Callable[[Resources, U], R]
"""A unit's work: a picklable callable of (the worker's resources, the unit); module-level functions
and frozen dataclasses with ``__call__`` qualify, closures over engines do not."""


class UnitRun(ABC, Generic[U, R]):
    """One stage's units in flight. Iterate it for outcomes as they finish; while iterating, the
    consumer may :meth:`submit` follow-up units (a problem's next round of draws), which run before
    the remaining initial units. Iteration ends once no unit is queued or running.
    """

    @abstractmethod
    def submit(self, unit: U) -> None:
        """Queue one more unit."""

    @abstractmethod
    def __iter__(self) -> Iterator[Outcome[U, R]]:
        """Outcomes in completion order."""


class Executor(ABC):
    """Runs a work function over units with at most :attr:`max_in_flight` running at once (per
    worker, for executors with several).
    """

    max_in_flight: int = 1

    @abstractmethod
    def run(
        self, work: Work[U, R], units: Iterable[U] = (), resources: Resources | None = None
    ) -> UnitRun[U, R]:
        """Start running ``work`` on ``units`` (read lazily, as slots free up).

        ``resources`` are the models of this process, for executors that run work here; executors
        whose workers hold their own (Ray actors) leave them unused.
        """

    def close(self) -> None:
        """Release workers; safe to call twice."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_error(exc: BaseException) -> str:
    """The one line an outcome keeps of a failure: the exception's type and message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
