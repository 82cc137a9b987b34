"""The consensus filter: keep a solution only where the teacher and the Monte-Carlo labels agree.

The teacher's earliest-error index k implies labels (steps before k good, step k bad; -1: every step
good). The paper keeps a solution only when these agree with the RPE labels on every step up to the
first error, which is the same as the two first errors being equal. It discards about 51%.

A solution can have several critiques (``--critiques N``; the released code drew 16, "majority of
N"). ``vote`` says how they make the teacher's index: ``majority`` (more than half of the N agreed
indices are the same), ``all`` (all N agree) or ``any`` (keep when any critique's index matches the
labels). A critique's own index already needs its index samples to agree (the critique's
``agreement`` setting); a critique without one counts against a ``majority`` or ``all`` vote.

Every dropped solution keeps its reason (:data:`DROP_REASONS`), and a kept one names the critiques
that agree, in order, so export can take the first that converts cleanly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from genprm.errors import ConfigError

Vote = Literal["majority", "all", "any"]
VOTES: tuple[str, ...] = ("majority", "all", "any")

DROP_REASONS = {
    "no-critique": "no stored critique of this solution (the critique stage has not run or failed)",
    "no-teacher-index": "the critiques do not agree on an earliest-error index under the vote",
    "teacher-earlier": "the teacher finds an error before the labels' first error (or where they find none)",
    "teacher-later": "the teacher finds the first error after the labels' (or finds none)",
    "index-out-of-range": "the teacher's index names no step of this solution",
}


@dataclass(frozen=True)
class FilterSettings:
    """How many critiques a solution gets and how they vote."""

    critiques: int = 1
    vote: Vote = "majority"

    def __post_init__(self) -> None:
        if self.critiques < 1:
            raise ConfigError("critiques", self.critiques, "must be at least 1")
        if self.vote not in VOTES:
            raise ConfigError("vote", self.vote, f"choose one of {', '.join(VOTES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """The filter's decision on one solution."""

    kept: bool
    reason: str
    """``kept`` or a key of :data:`DROP_REASONS`."""
    label_index: int
    """The labels' first error as a 1-based step; -1 when every step is good."""
    teacher_index: int | None
    """The voted earliest-error index (1-based, -1 none); None without agreement."""
    critique_indices: list[int | None] = field(default_factory=list)
    agreeing: list[int] = field(default_factory=list)
    """Critique numbers whose index equals the labels' (export tries them in this order)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def one_based(first_error: int) -> int:
    """A 0-based first error (-1 none) as the teacher writes it: 1-based, -1 none."""
    return -1 if first_error < 0 else first_error + 1


def voted_index(indices: Sequence[int | None], vote: Vote) -> int | None:
    """The index ``indices`` (one per critique) stand for under ``vote``; ``any`` uses ``majority``."""
    counts = Counter(i for i in indices if i is not None)
    if not counts:
        return None
    if vote == "all":
        first = indices[0]
        return first if first is not None and counts[first] == len(indices) else None
    index, top = counts.most_common(1)[0]
    return index if 2 * top > len(indices) else None


def decide(first_error: int, n_steps: int, indices: Sequence[int | None], vote: Vote) -> Verdict:
    """Keep or drop one solution from its labels' ``first_error`` (0-based, -1 none) and its critiques'
    earliest-error ``indices`` (1-based, -1 none, None: no agreed index).
    """
    target = one_based(first_error)
    listed = list(indices)
    agreeing = [i for i, index in enumerate(listed) if index == target]
    if not listed:
        return Verdict(False, "no-critique", target, None, listed)
    teacher = voted_index(listed, vote)
    if vote == "any" and agreeing:
        return Verdict(True, "kept", target, target, listed, agreeing)
    if teacher is None:
        return Verdict(False, "no-teacher-index", target, None, listed)
    if teacher == target:
        return Verdict(True, "kept", target, teacher, listed, agreeing)
    if teacher == 0 or teacher < -1 or teacher > n_steps:
        return Verdict(False, "index-out-of-range", target, teacher, listed)
    earlier = teacher != -1 and (target == -1 or teacher < target)
    return Verdict(False, "teacher-earlier" if earlier else "teacher-later", target, teacher, listed)
