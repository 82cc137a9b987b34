"""Critique-refine's figures: every stored round graded, accuracy and flips per round, ``RUN/refine.json``.

The loop (:mod:`genprm.evaluation.refine`) stores each problem's rounds and nothing more; what is
reported about them lives here, as functions of the rounds and their grades (no model involved).
:func:`evaluate_refine` runs the loop, then grades the rounds and writes the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genprm.evaluation.grade_cache import Grade, GradeCache
from genprm.evaluation.refine import ProgressFn, Refiner, Round
from genprm.evaluation.refine_data import RefineProblem
from genprm.io import write_json_atomic

RESULT_FILE = "refine.json"


@dataclass
class RefineResults:
    """Accuracy per round and every problem's rounds; ``to_json`` is what ``RUN/refine.json`` holds."""

    policy: str
    verifier: str
    rounds: int
    settings: str
    accuracy: dict[int, float | None]
    refined: dict[int, int]
    """Round r (from 1) -> problems whose answer the policy refined in that round."""
    transitions: dict[int, dict[str, int]]
    """Round r -> {"wrong_to_right": .., "right_to_wrong": ..} against round r-1."""
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "refine",
            "policy": self.policy,
            "verifier": self.verifier,
            "rounds": self.rounds,
            "problems": len(self.samples),
            "settings": self.settings,
            "accuracy": {str(r): a for r, a in self.accuracy.items()},
            "refined": {str(r): c for r, c in self.refined.items()},
            "transitions": {str(r): t for r, t in self.transitions.items()},
            "samples": self.samples,
        }


Grades = dict[tuple[str, str], Grade]
"""``(gold, answer) -> its grade``."""


def grade_rounds(problems: Sequence[RefineProblem], rounds: dict[str, list[Round]], cache: GradeCache) -> Grades:
    """Grade every distinct (gold, answer) once (kept answers repeat); the store keeps the grades."""
    pairs = list(dict.fromkeys((p.gold, r.answer) for p in problems for r in rounds[p.key]))
    return dict(zip(pairs, cache.grade(pairs)))


def compute_results(
    problems: Sequence[RefineProblem],
    rounds: dict[str, list[Round]],
    grades: Grades,
    *,
    policy: str,
    verifier: str,
    settings: str,
    n_rounds: int,
) -> RefineResults:
    """Per-round figures from stored rounds; every problem needs rounds 0..``n_rounds``.

    Each sample's round r shows the answer of that round with the verifier's finding *on that
    answer* (first error, step, critique): the finding stored with round r+1, ``None`` past the last.
    """
    incomplete = [p.id for p in problems if len(rounds[p.key]) < n_rounds + 1]
    if incomplete:
        raise ValueError(f"problems {incomplete[:5]} lack rounds up to {n_rounds}")
    correct = {p.key: [grades[(p.gold, r.answer)].correct for r in rounds[p.key][: n_rounds + 1]] for p in problems}
    count = len(problems)
    accuracy = {r: (sum(correct[p.key][r] for p in problems) / count if count else None) for r in range(n_rounds + 1)}
    refined = {r: sum(rounds[p.key][r].source == "refined" for p in problems) for r in range(1, n_rounds + 1)}
    transitions = {
        r: {
            "wrong_to_right": sum(not correct[p.key][r - 1] and correct[p.key][r] for p in problems),
            "right_to_wrong": sum(correct[p.key][r - 1] and not correct[p.key][r] for p in problems),
        }
        for r in range(1, n_rounds + 1)
    }
    samples = [_sample(p, rounds[p.key][: n_rounds + 1], grades) for p in problems]
    return RefineResults(policy, verifier, n_rounds, settings, accuracy, refined, transitions, samples)


def _sample(problem: RefineProblem, rounds: list[Round], grades: Grades) -> dict[str, Any]:
    shown = []
    for r, this in enumerate(rounds):
        following = rounds[r + 1] if r + 1 < len(rounds) else None
        verdict = following if following is not None and following.first_error is not None else None
        grade = grades[(problem.gold, this.answer)]
        shown.append({
            "round": r,
            "answer": this.answer,
            "correct": grade.correct,
            "answer_key": grade.answer,
            "source": this.source,
            "first_error": verdict.first_error if verdict else None,
            "step": verdict.step if verdict else None,
            "critique": verdict.critique if verdict else None,
            "step_rewards": verdict.step_rewards if verdict else None,
        })
    return {"id": problem.id, "key": problem.key, "gold": problem.gold, "rounds": shown}


def evaluate_refine(
    problems: Sequence[RefineProblem], refiner: Refiner, on_progress: ProgressFn | None = None
) -> RefineResults:
    """Compute what the store lacks, grade every round, and save ``RUN/refine.json``."""
    refiner.run(problems, on_progress)
    n_rounds = refiner.settings.rounds
    rounds = {p.key: refiner.rounds(p, n_rounds) for p in problems}
    grades = grade_rounds(problems, rounds, GradeCache(refiner.store))
    results = compute_results(
        problems, rounds, grades, policy=refiner.policy.engine.model_id, verifier=refiner.scorer.engine.model_id,
        settings=refiner.key, n_rounds=n_rounds,
    )
    write_results(refiner.store.run_dir / RESULT_FILE, results)
    return results


def write_results(path: Path, results: RefineResults) -> Path:
    """Write atomically (a reader never sees half a file)."""
    return write_json_atomic(path, results.to_json())
