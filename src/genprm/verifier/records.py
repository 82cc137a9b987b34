"""What verification produces, per solution, step and path; the JSONL output is these, as dicts.

Dataclasses for values; ``to_dict`` gives the persisted form, which carries ``format_version`` so
that readers can tell layouts apart when it changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FORMAT_VERSION = 1

StepStatus = Literal["scored", "unreadable", "skipped"]


@dataclass
class CodeRun:
    """One executed (or, in code-no-exec mode, imagined) code block."""

    round: int
    code: str
    output: str
    seconds: float
    executed: bool = True


@dataclass
class PathStep:
    """One verification path's turn on one step."""

    path: int
    text: str
    """The full assistant turn, exactly as it goes into the history."""
    verdict: str
    reward: float | None
    readable: bool
    p_yes: float | None = None
    p_no: float | None = None
    unreadable_reason: str | None = None
    code_runs: list[CodeRun] = field(default_factory=list)
    degraded: str | None = None
    """Why the verify part was dropped, if it was: 'code-rounds', 'token-budget' or 'eos'."""
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_calls: int = 0
    seconds: float = 0.0


@dataclass
class StepResult:
    """All paths of one step and their mean reward."""

    index: int
    reward: float | None
    status: StepStatus
    paths: list[PathStep]
    critique: str = ""

    @property
    def verdict(self) -> str:
        if self.reward is None:
            return "?"
        return "Yes" if self.reward >= 0.5 else "No"


@dataclass
class SolutionResult:
    """The verification of one input record."""

    record: dict[str, Any]
    step_rewards: list[float | None]
    step_status: list[StepStatus]
    first_error: int
    steps: list[StepResult]
    threshold: float
    model: str
    config: dict[str, Any]
    stopped_early: bool = False
    seconds: float = 0.0
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSONL record: the input's own fields first, then ours."""
        ours = asdict(self)
        record = ours.pop("record")
        return {**record, **ours, "format_version": FORMAT_VERSION}


def first_error_of(step_rewards: list[float | None], threshold: float) -> int:
    """Index of the first step whose reward is below ``threshold``; -1 when there is none.

    Unreadable steps (``None``) are not counted as errors: no evidence is not evidence of an error.
    """
    for i, reward in enumerate(step_rewards):
        if reward is not None and reward < threshold:
            return i
    return -1
