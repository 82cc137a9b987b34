"""The executor interface: units in, outcomes out in completion order, follow-up units on the way."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

U = TypeVar("U")
R = TypeVar("R")


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
    """Runs a work function over units with at most :attr:`max_in_flight` running at once."""

    max_in_flight: int = 1

    @abstractmethod
    def run(self, work: Callable[[U], R], units: Iterable[U] = ()) -> UnitRun[U, R]:
        """Start running ``work`` on ``units`` (read lazily, as slots free up)."""

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
