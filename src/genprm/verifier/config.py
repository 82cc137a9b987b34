"""One validated settings record for verification; the CLI fills the same record."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from genprm.protocol.chat import AssistantHeader
from genprm.protocol.prompts import FIRST_TURN_FORMATS, Mode


class VerifyConfig(BaseModel):
    """How to verify solutions. Defaults reproduce the GenPRM paper's setting.

    Unknown fields are rejected: a typo in a config file must not silently fall back to a default.
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
    reward_temperature: float = Field(
        1.0, gt=0.0, description="Temperature applied to the Yes/No logits when reading the reward."
    )
    min_verdict_mass: float = Field(1e-6, ge=0.0, lt=1.0)
    seed: int = Field(0, description="Base seed; each path, step and stage derives its own.")
    code_timeout_s: float = Field(5.0, gt=0.0)
    code_max_output_chars: int = Field(8192, ge=64)

    def model_post_init(self, __context: object) -> None:
        if self.first_turn not in FIRST_TURN_FORMATS:
            from genprm.errors import ConfigError

            raise ConfigError("first_turn", self.first_turn, f"choose one of {sorted(FIRST_TURN_FORMATS)}")
