"""One validated settings record for verification; the CLI fills the same record."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genprm.errors import ConfigError
from genprm.protocol.chat import AssistantHeader
from genprm.protocol.prompts import FIRST_TURN_FORMATS, Mode


class VerifyConfig(BaseModel):
    """How to verify solutions. Defaults reproduce the GenPRM paper's setting.

    That includes the reward: ``reward="paper"`` reads P(Yes)/(P(Yes)+P(No)) from the distribution
    vLLM V0 sampled the verdict from (``temperature``, ``top_k``, ``top_p`` applied, so a verdict token
    outside the nucleus counts as 0), as the released evaluation did; ``reward_temperature`` and
    ``min_verdict_mass`` apply only to ``reward="raw"`` (the model's own distribution). See
    docs/rewards.md.

    Unknown fields are rejected: a typo in a config file must not silently fall back to a default.
    Adaptive compute is off by default: ``cascade`` (cheap modes first, escalating while the reward
    is uncertain) and ``adaptive_n`` (draw paths until the mean is decisive, ``n`` at most) are
    independent options and combine; :mod:`genprm.verifier.adaptive` holds their rules.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    n: int = Field(1, ge=1, le=1024, description="Verification paths per step; rewards are averaged (Maj@N).")
    mode: Mode = Field(Mode.FULL, description="full | analyze | code-no-exec | direct.")
    paths: Literal["independent", "shared"] = Field(
        "independent",
        description="independent: each path keeps its own history and code namespace (the paper's "
        "formula). shared: every path of a step continues path 0's history (the released code).",
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="A step whose reward is below this is an error.")
    stop_at_first_error: bool = Field(
        False, description="Stop a solution at the first step judged wrong (first_error is unchanged)."
    )
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(20, ge=0)
    max_step_tokens: int = Field(2048, ge=16, description="Generated-token budget of one step's turn.")
    max_code_rounds: int = Field(3, ge=1, description="Code blocks executed per step before degrading.")
    first_turn: str = Field("question", description="question: 'Question: {problem}\\n\\n{step}'; plain: "
                            "'{problem}\\n{step}'.")
    assistant_header: AssistantHeader = Field(AssistantHeader.TEMPLATE)
    reward: Literal["paper", "raw"] = Field(
        "paper",
        description="paper: P(Yes)/(P(Yes)+P(No)) after the sampling transforms (temperature, top-k, top-p; "
        "a token outside the nucleus counts 0), as the paper's vLLM 0.7.1 V0 measured it. raw: the model's own "
        "distribution (at reward_temperature) renormalised over Yes and No.",
    )
    reward_temperature: float = Field(
        1.0, gt=0.0, description="reward=raw only: temperature applied to the Yes/No logits when reading the reward."
    )
    min_verdict_mass: float = Field(
        1e-6, ge=0.0, lt=1.0, description="reward=raw only: below this P(Yes)+P(No) the verdict is unreadable."
    )
    seed: int = Field(0, description="Base seed; each path, step and stage derives its own.")
    code_timeout_s: float = Field(5.0, gt=0.0)
    sandbox: Literal["auto", "bwrap", "rlimits"] = Field(
        "auto",
        description="Isolation of model code: auto/bwrap (bubblewrap; refuse without it) or rlimits (resource limits "
        "only: unsafe, see docs/sandbox.md).",
    )
    code_max_output_chars: int = Field(8192, ge=64)
    cascade: tuple[Mode, ...] | None = Field(
        None,
        description="Modes to try per step, cheapest first (e.g. direct, analyze, full); a step moves to the next "
        "mode only while its reward is within cascade_band of the threshold. Replaces mode when set.",
    )
    cascade_band: float = Field(
        0.2, ge=0.0, le=1.0, description="A reward r with |r - threshold| < band is uncertain: the cascade escalates."
    )
    adaptive_n: bool = Field(
        False,
        description="Sequential path sampling: draw min_paths paths, then adaptive_batch more at a time, until the "
        "mean reward is at least adaptive_margin away from the threshold or n paths are drawn.",
    )
    min_paths: int = Field(2, ge=1, description="adaptive_n: paths drawn before the first stopping check.")
    adaptive_batch: int = Field(1, ge=1, description="adaptive_n: paths drawn per later round.")
    adaptive_margin: float = Field(
        0.2, ge=0.0, le=1.0, description="adaptive_n: stop once |mean reward - threshold| >= this."
    )

    def model_post_init(self, __context: object) -> None:
        if self.first_turn not in FIRST_TURN_FORMATS:
            raise ConfigError("first_turn", self.first_turn, f"choose one of {sorted(FIRST_TURN_FORMATS)}")

    @property
    def levels(self) -> tuple[Mode, ...]:
        """The modes a step may be verified in, in order: the cascade, or just ``mode``."""
        return self.cascade or (self.mode,)

    @property
    def adaptive(self) -> bool:
        """Whether a step's compute depends on its rewards (so a subset of paths is not a prefix of a run)."""
        return self.adaptive_n or len(self.levels) > 1

    @property
    def paths_independent(self) -> bool:
        """Whether each path's work is the same however many paths run: not with adaptive options, nor
        with early stopping (which cuts every path at the step the others make an error).
        """
        return not (self.adaptive or self.stop_at_first_error)

    def inert_fields(self) -> set[str]:
        """Settings that cannot change any verification result given the others, so that a store
        key leaves them out (a rerun at another ``--threshold`` reuses independent paths).

        The threshold only steers compute (early stopping, the cascade band, sequential sampling's
        margin); each option's own parameters matter only while it is on; a cascade replaces ``mode``.
        """
        inert: set[str] = {"sandbox"}  # where the code runs, not what it prints
        if self.reward == "paper":
            inert.update({"reward_temperature", "min_verdict_mass"})  # they shape raw readings only
        if self.paths_independent:
            inert.add("threshold")
        if len(self.levels) == 1:
            inert.add("cascade_band")
        if self.cascade is not None:
            inert.add("mode")
        if not self.adaptive_n:
            inert.update({"min_paths", "adaptive_batch", "adaptive_margin"})
        return inert

    @field_validator("cascade", mode="before")
    @classmethod
    def _split_cascade(cls, value: object) -> object:
        """Accept ``"direct,analyze,full"`` (the CLI's spelling) and name a bad mode plainly."""
        if not isinstance(value, str):
            return value
        names = [part.strip() for part in value.split(",") if part.strip()]
        known = [m.value for m in Mode]
        for name in names:
            if name not in known:
                raise ValueError(f"unknown mode {name!r}: choose from {', '.join(known)}")
        return names

    @field_validator("cascade")
    @classmethod
    def _check_cascade(cls, levels: tuple[Mode, ...] | None) -> tuple[Mode, ...] | None:
        """A cascade needs distinct modes, and only its last may execute code.

        A level that does not decide the step leaves no turn in the paths' histories; if it had run
        code, the code namespace would hold effects of code that no history shows.
        """
        if levels is None:
            return None
        if not levels:
            raise ValueError("give at least one mode")
        if len(set(levels)) != len(levels):
            raise ValueError("each mode may appear once")
        if any(m.executes for m in levels[:-1]):
            raise ValueError(f"only the last mode may execute code ({Mode.FULL.value} goes last)")
        return levels
