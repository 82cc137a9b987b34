"""What one verified solution comes back as, read from the run store, and the reward made of it.

A request's answer is always built from the stored paths, whether they were computed for it or
found in the store, so a duplicate gets exactly the answer the first request got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genprm.evaluation.bon_metrics import aggregate
from genprm.evaluation.scoring import Trajectory, reward_matrix, turns_by_step
from genprm.verifier.records import first_error_of


@dataclass(frozen=True)
class Scored:
    """The verification of one solution: step rewards (mean over the N paths), the first error, the paths."""

    key: str
    step_rewards: list[float | None]
    step_status: list[str]
    first_error: int
    paths: dict[int, Trajectory]
    cached: bool
    """Answered from the store (or from a request in flight with the same solution) without new work."""

    @classmethod
    def from_paths(
        cls, key: str, paths: dict[int, Trajectory], n_steps: int, n: int, threshold: float, *, cached: bool
    ) -> Scored:
        """Summarise stored trajectories as the verifier does: a step's reward is the mean of its
        readable paths' rewards in path order; a step no path reached was skipped (early stopping).
        """
        matrix = reward_matrix(paths, n_steps, n)
        reached = {s for index, t in paths.items() if index < n for s in turns_by_step(t)}
        rewards: list[float | None] = []
        status: list[str] = []
        for s, row in enumerate(matrix):
            readable = [r for r in row if r is not None]
            rewards.append(sum(readable) / len(readable) if readable else None)
            status.append("scored" if readable else ("unreadable" if s in reached else "skipped"))
        return cls(key, rewards, status, first_error_of(rewards, threshold), paths, cached)

    def transcripts(self) -> list[dict[str, Any]]:
        """Per step, every path's turn (text, verdict, reward, code runs), in path order."""
        steps: list[dict[str, Any]] = [{"index": s, "paths": []} for s in range(len(self.step_rewards))]
        for index in sorted(self.paths):
            for s, turn in sorted(turns_by_step(self.paths[index]).items()):
                if s < len(steps):
                    steps[s]["paths"].append({"path": index, **{k: v for k, v in turn.items() if k != "step"}})
        return steps


@dataclass(frozen=True)
class Reward:
    """The numbers an RL trainer gets for one solution."""

    reward: float
    """(1 - w) * PRM score + w * outcome; the number to train on."""
    prm_score: float | None
    """The step rewards aggregated (last, min, mean or product); ``None`` with no readable step."""
    scored: bool
    """False when no step was readable: the PRM part of ``reward`` is then the configured fallback."""
    outcome: bool | None
    """The final answer graded against the label, when graded."""


def reward_of(
    step_rewards: list[float | None], how: str, *, outcome: bool | None, outcome_weight: float, unscored: float
) -> Reward:
    """Combine the aggregated step rewards with the graded outcome (when ``outcome_weight`` > 0)."""
    prm = aggregate(step_rewards, how)
    base = unscored if prm is None else prm
    value = base if outcome is None else (1.0 - outcome_weight) * base + outcome_weight * float(outcome)
    return Reward(reward=value, prm_score=prm, scored=prm is not None, outcome=outcome)
