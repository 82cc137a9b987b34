"""Request and response bodies of the reward server, as pydantic models (data crossing HTTP).

``/get_reward`` follows OpenRLHF's remote reward protocol and ignores fields it does not know (forks
add some, such as ``metas``); ``/v1/verify`` is genprm's own and rejects unknown fields, where a typo
would silently change what is verified.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RewardRequest(BaseModel):
    """OpenRLHF's body: ``query[i]`` is ``prompts[i]`` followed by the policy's response."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(min_length=1)
    prompts: list[str]
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _aligned(self) -> RewardRequest:
        """Lists of different lengths would misalign rewards with samples: refuse them."""
        if len(self.prompts) != len(self.query):
            raise ValueError(f"prompts has {len(self.prompts)} items, query {len(self.query)}: they must align")
        if self.labels is not None and len(self.labels) != len(self.query):
            raise ValueError(f"labels has {len(self.labels)} items, query {len(self.query)}: they must align")
        return self


class RewardResponse(BaseModel):
    """OpenRLHF's answer: ``rewards`` train the policy, ``scores`` (in 0..1) filter groups, ``extra_logs``
    are logged per sample (numbers only: OpenRLHF makes a tensor of each).
    """

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[Any]]


class VerifyRequest(BaseModel):
    """One solution: the problem (or a prompt to take it from) and its steps (or a response to split)."""

    model_config = ConfigDict(extra="forbid")

    problem: str | None = Field(None, description="The question the solution answers.")
    prompt: str | None = Field(None, description="A policy prompt to take the problem from, instead of problem.")
    steps: list[str] | None = Field(None, description="The solution's steps.")
    response: str | None = Field(None, description="The solution as one text, split into steps by the server.")
    label: Any = Field(None, description="The reference answer, for the outcome part of the reward.")
    transcripts: bool = Field(False, description="Also return every path's turn at every step.")

    @model_validator(mode="after")
    def _one_of_each(self) -> VerifyRequest:
        if (self.problem is None) == (self.prompt is None):
            raise ValueError("give exactly one of problem and prompt")
        if (self.steps is None) == (self.response is None):
            raise ValueError("give exactly one of steps and response")
        return self


class VerifyResponse(BaseModel):
    """What genprm's own endpoint returns for one solution."""

    reward: float
    """The number to train on: (1 - w) * PRM score + w * outcome (the fallback PRM score when unscored)."""
    solution_score: float | None
    """The step rewards aggregated (``aggregate``); null when no step was readable."""
    scored: bool
    outcome: bool | None
    step_rewards: list[float | None]
    step_status: list[str]
    first_error: int
    aggregate: str
    cached: bool
    key: str
    model: str
    steps: list[str]
    """The steps verified (as split from ``response`` when one was sent)."""
    problem: str
    transcripts: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """Every error: what went wrong in one line, the fields at fault, and the id the server logged it under."""

    error: str
    fields: list[dict[str, str]] = Field(default_factory=list)
    request_id: str = ""
