"""Stage 1: step-forced policy solutions, balanced to half correct and half wrong per problem.

The policy answers each problem with its turn prefilled by ``Step 1: `` (temperature 0.7, top-p 1,
no top-k, 2048 tokens: the paper's sampling); a response splits into steps on ``\\nStep `` and is
invalid when it did not stop on its own or has a single step. Round 0 draws 2 × 16 responses; while
fewer than ``num_paths / 2`` distinct correct or distinct wrong valid solutions exist, another 16
are drawn, at most ``num_try`` times (the released script counted the two halves' retries
separately; one budget here). Then ``num_paths`` solutions are picked at random, half correct and
half wrong where possible, the larger group filling in. A problem with no correct valid draw is
*hard*, one with no wrong valid draw *easy*; both are dropped. MC(s_1), the policy's pass@1, is
correct / valid over every draw. Correctness is the final step's answer against the gold answer
(math-verify), as the released code grades.

Each round is one unit of work and is stored as it finishes (kind ``synth-draws``, slot = round),
keyed by the policy and its sampling only, so other balancing settings reuse the draws; the
selection is a pure function of the stored rounds (kind ``synth-selection``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from genprm.engines.base import Generation, SamplingParams
from genprm.errors import ConfigError
from genprm.protocol.synthesis import COT_INSTRUCTION, split_steps
from genprm.verifier.path import derive_seed

Flag = Literal["medium", "easy", "hard"]


@dataclass(frozen=True)
class SolutionSettings:
    """Stage 1's sampling and balancing; defaults are the paper's."""

    system_prompt: str = COT_INSTRUCTION
    """The policy's system prompt: the released script's chain-of-thought instruction; '' for none."""
    first_draws: int = 32
    draws_per_try: int = 16
    num_try: int = 126
    num_paths: int = 16
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("first_draws", "draws_per_try", "num_paths"):
            if getattr(self, name) < 1:
                raise ConfigError(name.replace("_", "-"), getattr(self, name), "must be at least 1")
        if self.num_try < 0:
            raise ConfigError("num-try", self.num_try, "must be 0 or more")
        self.sampling(0, 1)

    def draws_in(self, round_: int) -> int:
        return self.first_draws if round_ == 0 else self.draws_per_try

    def sampling(self, round_: int, seed: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            seed=seed, n=self.draws_in(round_),
        )

    def draw_fields(self) -> dict[str, Any]:
        """What shapes a round of draws (not the balancing): its store key."""
        shaping = asdict(self)
        del shaping["num_try"], shaping["num_paths"]
        return {"stage": "draws", **shaping}

    def selection_fields(self) -> dict[str, Any]:
        return {"stage": "selection", **asdict(self)}


@dataclass(frozen=True)
class Draw:
    """One policy response, split and graded."""

    text: str
    """The response after the ``Step 1: `` prefill."""
    finish: str
    tokens: int
    valid: bool
    correct: bool = False
    answer: str | None = None

    @property
    def steps(self) -> list[str]:
        return split_steps(self.text)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Draw:
        return cls(**value)


def draw_of(generation: Generation) -> Draw:
    """An ungraded draw: invalid when the response did not stop on its own or has a single step."""
    valid = generation.finish_reason != "length" and len(split_steps(generation.text)) > 1
    return Draw(generation.text, generation.finish_reason, generation.completion_tokens, valid)


def round_seed(settings: SolutionSettings, problem_key: str, round_: int) -> int:
    return derive_seed(settings.seed, "synth-draws", problem_key, round_)


def solution_key(problem_key: str, steps: Sequence[str]) -> str:
    """A solution's content key: the same problem and steps share rollouts, labels and critiques."""
    payload = json.dumps([problem_key, list(steps)], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Solution:
    """A selected solution of a problem."""

    key: str
    steps: list[str]
    correct: bool
    draw: str
    """Where it came from: ``round:index``."""

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Solution:
        return cls(value["key"], list(value["steps"]), bool(value["correct"]), value["draw"])


@dataclass(frozen=True)
class Selection:
    """A problem's stage-1 result: its flag, MC(s_1), the draw counts and the kept solutions."""

    flag: Flag
    mc_s1: float | None
    draws: int
    valid: int
    correct: int
    rounds: int
    solutions: list[Solution] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return self.flag == "medium"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Selection:
        solutions = [Solution.from_dict(s) for s in value.get("solutions", [])]
        return cls(value["flag"], value["mc_s1"], value["draws"], value["valid"], value["correct"], value["rounds"],
                   solutions)


def _pools(rounds: Sequence[Sequence[Draw]]) -> tuple[dict[tuple[str, ...], str], dict[tuple[str, ...], str]]:
    """Distinct valid correct and wrong solutions (steps -> first ``round:index``), in draw order."""
    correct: dict[tuple[str, ...], str] = {}
    wrong: dict[tuple[str, ...], str] = {}
    for r, draws in enumerate(rounds):
        for i, draw in enumerate(draws):
            if draw.valid:
                (correct if draw.correct else wrong).setdefault(tuple(draw.steps), f"{r}:{i}")
    return correct, wrong


def needs_more(rounds: Sequence[Sequence[Draw]], settings: SolutionSettings) -> bool:
    """Whether another round is due: a half is short and the retry budget is not spent."""
    if len(rounds) > settings.num_try:
        return False
    correct, wrong = _pools(rounds)
    half = settings.num_paths // 2
    return len(correct) < half or len(wrong) < half


def select(problem_key: str, rounds: Sequence[Sequence[Draw]], settings: SolutionSettings) -> Selection:
    """Balance the stored rounds into ``num_paths`` solutions (deterministic for a problem and seed)."""
    draws = [d for r in rounds for d in r]
    valid = [d for d in draws if d.valid]
    n_correct = sum(d.correct for d in valid)
    mc_s1 = n_correct / len(valid) if valid else None
    correct, wrong = _pools(rounds)
    counts = (mc_s1, len(draws), len(valid), n_correct, len(rounds))
    if not correct:
        return Selection("hard", *counts)
    if not wrong:
        return Selection("easy", *counts)
    rng = random.Random(derive_seed(settings.seed, "synth-balance", problem_key))
    take_correct = min(settings.num_paths // 2, len(correct))
    take_wrong = min(settings.num_paths - take_correct, len(wrong))
    take_correct = min(settings.num_paths - take_wrong, len(correct))
    chosen = [(steps, True) for steps in rng.sample(sorted(correct), take_correct)]
    chosen += [(steps, False) for steps in rng.sample(sorted(wrong), take_wrong)]
    solutions = [
        Solution(solution_key(problem_key, steps), list(steps), ok, (correct if ok else wrong)[steps])
        for steps, ok in chosen
    ]
    return Selection("medium", *counts, solutions=solutions)
