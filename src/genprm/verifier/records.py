"""What verification produces, per solution, step and path; the JSONL output is these, as dicts.

Dataclasses for values; ``to_dict`` gives the persisted form, which carries ``format_version`` so
that readers can tell layouts apart when it changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from genprm.errors import ContextOverflowError, EngineError, InputError, SandboxUnavailableError, is_transient

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
    reward_exact: bool = True
    """False when the engine could not report enough of the distribution for the reward mode (an
    OpenAI-compatible server's capped top log-probabilities, say): the reward is then an approximation."""
    reward_note: str | None = None
    """What is worth knowing about a readable reward: why it is approximate, or that it is the paper
    mode's neutral 0.5 (Yes and No both outside the sampling nucleus)."""
    code_runs: list[CodeRun] = field(default_factory=list)
    degraded: str | None = None
    """Why the verify part was dropped, if it was: 'code-rounds', 'token-budget' or 'eos'."""
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_calls: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    """Stopped unfinished because the step was already an error whatever it returned (no reward)."""
    branched_from: int | None = None
    """adaptive_n: the path whose history this path took over at this step (it had none of its own)."""


@dataclass
class StepResult:
    """All paths of one step and their mean reward.

    With a cascade, ``paths`` and ``reward`` are those of the level that decided the step (``level``,
    ``mode``); ``level_rewards`` has the reward of every level run, in order.
    """

    index: int
    reward: float | None
    status: StepStatus
    paths: list[PathStep]
    critique: str = ""
    mode: str | None = None
    level: int = 0
    level_rewards: list[float | None] = field(default_factory=list)
    cancelled_paths: int = 0
    """Paths stopped unfinished (``--stop-at-first-error``); ``reward`` is then the finished paths' mean."""

    @property
    def verdict(self) -> str:
        if self.reward is None:
            return "?"
        return "Yes" if self.reward >= 0.5 else "No"


@dataclass
class ModeUsage:
    """Compute spent in one mode."""

    path_steps: int = 0
    generated_tokens: int = 0


@dataclass
class ComputeUsage:
    """Compute spent on one solution against what a fixed run would have spent on the same steps.

    ``path_steps`` counts path-step turns that called the engine at least once, in every cascade level,
    cancelled ones included; ``path_steps_fixed`` is (paths asked for) x (steps verified): a run with
    fixed N in the top mode alone. Generated tokens include turns that were discarded.
    """

    path_steps: int = 0
    path_steps_fixed: int = 0
    generated_tokens: int = 0
    cancelled_paths: int = 0
    by_mode: dict[str, ModeUsage] = field(default_factory=dict)

    def add(self, mode: str, paths: Iterable[PathStep]) -> None:
        """Count one level's paths of one step, run in ``mode``."""
        for path in paths:
            self._count(mode, int(path.engine_calls > 0), path.completion_tokens)
            self.cancelled_paths += int(path.cancelled)

    def merge(self, other: ComputeUsage) -> None:
        """Add another solution's usage (for a run's total)."""
        self.path_steps_fixed += other.path_steps_fixed
        self.cancelled_paths += other.cancelled_paths
        for mode, usage in other.by_mode.items():
            self._count(mode, usage.path_steps, usage.generated_tokens)

    def _count(self, mode: str, path_steps: int, tokens: int) -> None:
        usage = self.by_mode.setdefault(mode, ModeUsage())
        usage.path_steps += path_steps
        usage.generated_tokens += tokens
        self.path_steps += path_steps
        self.generated_tokens += tokens

    @property
    def path_steps_saved(self) -> int:
        return self.path_steps_fixed - self.path_steps

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ComputeUsage:
        """Read back ``dataclasses.asdict`` of one (as a run store keeps it)."""
        usage = cls(path_steps_fixed=int(value.get("path_steps_fixed", 0)),
                    cancelled_paths=int(value.get("cancelled_paths", 0)))
        for mode, spent in (value.get("by_mode") or {}).items():
            usage._count(mode, int(spent.get("path_steps", 0)), int(spent.get("generated_tokens", 0)))
        return usage


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
    compute: ComputeUsage = field(default_factory=ComputeUsage)

    def to_dict(self) -> dict[str, Any]:
        """The JSONL record: the input's own fields first, then ours."""
        ours = asdict(self)
        record = ours.pop("record")
        return {**record, **ours, "format_version": FORMAT_VERSION}


@dataclass
class SolutionFailure:
    """A solution that could not be verified, recorded so that the run goes on without it.

    ``transient`` failures (a server or the sandbox failing) are retried when a run resumes; others
    (a bug, a bad record) would fail the same way again, so they are retried only when asked.
    """

    record: dict[str, Any]
    key: str
    reason: str
    """A short category: ``engine``, ``sandbox``, ``context``, ``input`` or ``error``."""
    error: str
    """The exception's type and message, on one line."""
    transient: bool

    @classmethod
    def of(cls, record: dict[str, Any], key: str, exc: BaseException) -> SolutionFailure:
        message = " ".join(str(exc).split()) or type(exc).__name__
        return cls(dict(record), key, _reason_of(exc), f"{type(exc).__name__}: {message}", is_transient(exc))

    def value(self) -> dict[str, Any]:
        """What a store keeps of it."""
        return {"reason": self.reason, "error": self.error, "transient": self.transient}

    def to_dict(self) -> dict[str, Any]:
        """The JSONL record of a failed input: its own fields, its key, and ``failed``."""
        return {**self.record, "key": self.key, "failed": self.value(), "format_version": FORMAT_VERSION}


def _reason_of(exc: BaseException) -> str:
    for kind, reason in ((ContextOverflowError, "context"), (EngineError, "engine"),
                         (SandboxUnavailableError, "sandbox"), (InputError, "input")):
        if isinstance(exc, kind):
            return reason
    return "error"


def first_error_of(step_rewards: list[float | None], threshold: float) -> int:
    """Index of the first step whose reward is below ``threshold``; -1 when there is none.

    Unreadable steps (``None``) are not counted as errors: no evidence is not evidence of an error.
    """
    for i, reward in enumerate(step_rewards):
        if reward is not None and reward < threshold:
            return i
    return -1
