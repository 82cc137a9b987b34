"""Best-of-N figures as pure functions over saved step rewards and graded answers (no model needed).

A problem has N responses, each with an answer key (``None``: no final answer), a correctness and
step rewards. The rules, pinned by ``tests/evaluation/test_bon_metrics.py``:

- **Aggregation** turns a response's step rewards into one solution score: ``last``, ``min``,
  ``mean`` or ``product``. Unreadable steps (``None``) are left out; a response with no readable
  step (or no step at all) has no score (``None``).
- **Selection** picks one response per chunk of responses. ``argmax``: the highest score; a
  response without a score loses to any scored one. ``weighted``: each answer key collects the sum
  of its responses' scores (no score adds 0) and the key with the largest sum wins; responses with
  no answer do not vote. ``Maj``: the same vote with every weight 1. **Ties go to the response
  (or answer) that comes first in response order**; a chunk in which no response has an answer is
  wrong under every vote.
- **Budgets** b = 1..N: the N responses are cut into consecutive chunks of b (0..b-1, b..2b-1, ...)
  and a problem's accuracy at b is the fraction of chunks whose selection is correct. When b does
  not divide N, the last N mod b responses form no chunk at that budget (a shorter chunk would be a
  smaller budget). The reported accuracy is the mean over problems.
- **Baselines**: ``Pass@1`` is the mean correctness of all N responses (the same at every budget);
  ``Maj@N`` is the majority vote per chunk; ``Pass@N`` counts a chunk correct if any response in it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

AGGREGATIONS = ("last", "min", "mean", "product")
SELECTIONS = ("argmax", "weighted")
BASELINES = ("Pass@1", "Maj@N", "Pass@N")

_AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "last": lambda rewards: rewards[-1],
    "min": min,
    "mean": lambda rewards: sum(rewards) / len(rewards),
    "product": math.prod,
}


def aggregate(step_rewards: Sequence[float | None], how: str) -> float | None:
    """One solution score from step rewards, unreadable steps left out; ``None`` if none is readable."""
    if how not in _AGGREGATE:
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    readable = [r for r in step_rewards if r is not None]
    return _AGGREGATE[how](readable) if readable else None


@dataclass(frozen=True)
class Outcome:
    """What the figures need of one problem: per response, its answer, correctness and scores."""

    answers: list[str | None]
    correct: list[bool]
    scores: dict[str, list[float | None]]
    """Aggregation name -> one solution score per response."""

    @property
    def n(self) -> int:
        return len(self.correct)


def argmax(scores: Sequence[float | None]) -> int:
    """Index of the highest score; ``None`` ranks below any number; ties go to the first."""
    best = 0
    for i, score in enumerate(scores):
        current = scores[best]
        if score is not None and (current is None or score > current):
            best = i
    return best


def vote(answers: Sequence[str | None], weights: Sequence[float | None]) -> int | None:
    """Index of the first response carrying the answer with the largest total weight.

    Responses without an answer do not vote and a ``None`` weight counts 0; ties go to the answer
    seen first. ``None`` when no response has an answer.
    """
    totals: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, (answer, weight) in enumerate(zip(answers, weights)):
        if answer is None:
            continue
        first.setdefault(answer, i)
        totals[answer] = totals.get(answer, 0.0) + (weight or 0.0)
    if not totals:
        return None
    winner = max(totals, key=lambda a: (totals[a], -first[a]))
    return first[winner]


def chunks(n: int, budget: int) -> list[range]:
    """The consecutive full chunks of ``budget`` responses among ``n`` (a partial tail is dropped)."""
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    return [range(start, start + budget) for start in range(0, n - budget + 1, budget)]


ChunkRule = Callable[[Outcome, range], bool]
"""Whether a method's pick from one chunk of a problem's responses is correct."""


def argmax_rule(aggregation: str) -> ChunkRule:
    def rule(outcome: Outcome, chunk: range) -> bool:
        scores = outcome.scores[aggregation]
        return outcome.correct[chunk[argmax([scores[i] for i in chunk])]]

    return rule


def vote_rule(aggregation: str | None) -> ChunkRule:
    """A weighted vote by ``aggregation``'s scores; ``None`` gives the plain majority vote."""

    def rule(outcome: Outcome, chunk: range) -> bool:
        answers = [outcome.answers[i] for i in chunk]
        weights = [outcome.scores[aggregation][i] if aggregation else 1.0 for i in chunk]
        picked = vote(answers, weights)
        return picked is not None and outcome.correct[chunk[picked]]

    return rule


def any_correct(outcome: Outcome, chunk: range) -> bool:
    return any(outcome.correct[i] for i in chunk)


def budget_accuracy(outcome: Outcome, budget: int, rule: ChunkRule) -> float:
    """Fraction of the problem's full chunks of ``budget`` responses on which ``rule`` is right."""
    parts = chunks(outcome.n, budget)
    if not parts:
        raise ValueError(f"budget {budget} exceeds the {outcome.n} responses")
    return sum(rule(outcome, part) for part in parts) / len(parts)


def mean_accuracy(outcomes: Sequence[Outcome], budget: int, rule: ChunkRule) -> float | None:
    """Mean over problems of :func:`budget_accuracy`; ``None`` with no problems."""
    if not outcomes:
        return None
    return sum(budget_accuracy(o, budget, rule) for o in outcomes) / len(outcomes)


def pass_at_1(outcomes: Sequence[Outcome]) -> float | None:
    """Mean over problems of the fraction of correct responses."""
    if not outcomes:
        return None
    return sum(sum(o.correct) / o.n for o in outcomes) / len(outcomes)


def selection_rules(aggregations: Sequence[str] = AGGREGATIONS) -> dict[str, ChunkRule]:
    """The PRM-driven methods by name, ``<aggregation>/<selection>``."""
    rules: dict[str, ChunkRule] = {}
    for how in aggregations:
        rules[f"{how}/argmax"] = argmax_rule(how)
        rules[f"{how}/weighted"] = vote_rule(how)
    return rules


def method_table(
    outcomes: Sequence[Outcome], n: int, aggregations: Sequence[str] = AGGREGATIONS
) -> dict[str, dict[int, float | None]]:
    """Accuracy per method (selections, then the baselines) and budget 1..n; each problem needs ``n`` responses."""
    wrong = sorted({o.n for o in outcomes if o.n != n})
    if wrong:
        raise ValueError(f"every problem needs {n} responses, some have {wrong}")
    budgets = range(1, n + 1)

    def row(rule: ChunkRule) -> dict[int, float | None]:
        return {b: mean_accuracy(outcomes, b, rule) for b in budgets}

    table = {name: row(rule) for name, rule in selection_rules(aggregations).items()}
    pass1 = pass_at_1(outcomes)
    table["Pass@1"] = {b: pass1 for b in budgets}
    table["Maj@N"] = row(vote_rule(None))
    table["Pass@N"] = row(any_correct)
    return table
