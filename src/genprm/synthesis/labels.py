"""Step labels from Monte-Carlo scores: Relative Progress Estimation and the paper's ablations.

``mc[t]`` is MC(s_t, a_t), the share of rollouts from steps 1..t that reach the gold answer (the
last step: whether the solution's own answer is right); ``mc_s1`` is MC(s_1), the problem's pass@1
before any step. The paper's rule (RPE, §3.3): P_t = MC(s_t, a_t) / MC(s_t), where MC(s_t) is the
previous step's score (``mc_s1`` for the first step), and a step is good when P_t ≥ ε = 0.8.

Zero handling (the paper): once a step scores 0 it is the first error and every later step's score
is set to 0, so it is labelled bad; P_t = 0 whenever MC(s_t) = 0. Every method here applies the same
propagation, so the first error is where the first bad label is.

Ablations (paper Tables 3/4): ``hard`` labels a step good when MC(s_t, a_t) > 0 (Math-Shepherd's
hard estimation); ``difference`` when MC(s_t, a_t) − MC(s_t) ≥ −δ (``threshold`` = δ, the paper
tries 0.1/0.3/0.5); ``ratio`` with another ε (0.1/0.5/1.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from genprm.errors import ConfigError

Method = Literal["ratio", "hard", "difference"]
METHODS: tuple[str, ...] = ("ratio", "hard", "difference")


@dataclass(frozen=True)
class LabelSettings:
    """How MC scores become labels. Default: the paper's RPE with ε = 0.8 (where MC(s_1) comes from is a
    rollout setting, since it also picks K).
    """

    method: Method = "ratio"
    threshold: float = 0.8
    """ε for ``ratio``; δ for ``difference`` (a step is good when the score drops by at most δ); unused
    by ``hard``."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("label_method", self.method, f"choose one of {', '.join(METHODS)}")
        if self.threshold < 0:
            raise ConfigError("label_threshold", self.threshold, "must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepLabels:
    """One solution's labels: the scores after zero propagation, the ratios, and the first error."""

    mc: list[float]
    """MC(s_t, a_t) per step after zero propagation."""
    progress: list[float]
    """P_t (``ratio``), MC(s_t, a_t) − MC(s_t) (``difference``) or MC(s_t, a_t) (``hard``) per step."""
    labels: list[int]
    """1 good, 0 bad, per step."""
    first_error: int
    """0-based index of the first bad step; -1 when every step is good."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def propagate_zeros(mc: Sequence[float]) -> list[float]:
    """Scores with every step after the first zero set to zero."""
    out: list[float] = []
    for score in mc:
        out.append(0.0 if (out and out[-1] == 0.0) else float(score))
    return out


def label_steps(mc: Sequence[float], mc_s1: float, settings: LabelSettings | None = None) -> StepLabels:
    """Labels of one solution's steps from its MC scores (``mc[-1]`` is the final answer's correctness)."""
    settings = settings or LabelSettings()
    if not mc:
        raise ValueError("a solution has at least one step")
    scores = propagate_zeros(mc)
    progress: list[float] = []
    labels: list[int] = []
    before = float(mc_s1)
    for score in scores:
        if settings.method == "ratio":
            value = score / before if before > 0 else 0.0
            good = value >= settings.threshold
        elif settings.method == "difference":
            value = score - before
            good = value >= -settings.threshold
        else:
            value = score
            good = True
        progress.append(value)
        labels.append(1 if good and score > 0 else 0)  # a zero score is an error under every method
        before = score
    first_error = labels.index(0) if 0 in labels else -1
    return StepLabels(scores, progress, labels, first_error)


def labels_up_to_first_error(labels: Sequence[int]) -> list[int]:
    """The labels a conversation is judged by: every step up to and including the first bad one."""
    return list(labels[: labels.index(0) + 1]) if 0 in labels else list(labels)


@dataclass(frozen=True)
class DynamicK:
    """Rollouts per prefix chosen by the problem's MC(s_1) (the paper: 128 / 64 / 32).

    ``edges = (a, b)``: K = ks[0] when MC(s_1) < a, ks[1] when a ≤ MC(s_1) < b, ks[2] when MC(s_1) ≥ b.
    Hard problems get the most rollouts, where a correct continuation is rarest.
    """

    edges: tuple[float, float] = (0.1, 0.9)
    ks: tuple[int, int, int] = (128, 64, 32)

    def __post_init__(self) -> None:
        low, high = self.edges
        if not 0 <= low <= high <= 1:
            raise ConfigError("k_edges", self.edges, "need 0 <= low <= high <= 1")
        if len(self.ks) != 3 or any(k < 1 for k in self.ks):
            raise ConfigError("k", self.ks, "need three rollout counts, each at least 1")

    def k_for(self, mc_s1: float) -> int:
        low, high = self.edges
        if mc_s1 < low:
            return self.ks[0]
        if mc_s1 < high:
            return self.ks[1]
        return self.ks[2]
