"""The metrics the paper reports, as pure functions over saved rewards (no model needed).

ProcessBench: per subset, accuracy on erroneous samples (predicted first error == label),
accuracy on correct samples (no step predicted wrong), F1 = their harmonic mean; "Avg" is the
plain mean of subset F1s. A figure that rests on no samples is ``None`` (shown as "–"), never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from genprm.verifier.records import first_error_of


def mean_reward(rewards: Sequence[float | None]) -> float | None:
    """Mean of the readable rewards; ``None`` when none is readable."""
    readable = [r for r in rewards if r is not None]
    return sum(readable) / len(readable) if readable else None


def step_rewards_at(matrix: Sequence[Sequence[float | None]], k: int) -> list[float | None]:
    """Maj@k step rewards: each step's mean over the readable rewards of paths 0..k-1."""
    return [mean_reward(list(row[:k])) for row in matrix]


def predicted_first_error(matrix: Sequence[Sequence[float | None]], k: int, threshold: float) -> int:
    """First step whose Maj@k reward is below ``threshold``; -1 if none (unreadable steps never count)."""
    return first_error_of(step_rewards_at(matrix, k), threshold)


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


@dataclass(frozen=True)
class SubsetScore:
    """One subset's ProcessBench figures and the sample counts they rest on."""

    n_error: int
    n_correct: int
    error_acc: float | None
    correct_acc: float | None
    f1: float | None

    @property
    def n(self) -> int:
        return self.n_error + self.n_correct


def processbench_score(predictions: Sequence[int | None], labels: Sequence[int]) -> SubsetScore:
    """Score predicted first errors against labels (-1 = all steps correct).

    A prediction of ``None`` (e.g. a critic answer that could not be parsed) is wrong either way.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    erroneous = [p == y for p, y in zip(predictions, labels) if y != -1]
    correct = [p == -1 for p, y in zip(predictions, labels) if y == -1]
    error_acc = sum(erroneous) / len(erroneous) if erroneous else None
    correct_acc = sum(correct) / len(correct) if correct else None
    return SubsetScore(len(erroneous), len(correct), error_acc, correct_acc, harmonic_mean(error_acc, correct_acc))


def average_f1(scores: Sequence[SubsetScore]) -> float | None:
    """The paper's "Avg": plain mean of the subset F1s that exist (``None`` if none does)."""
    values = [s.f1 for s in scores if s.f1 is not None]
    return sum(values) / len(values) if values else None
