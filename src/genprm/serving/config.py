"""One validated settings record for ``genprm serve``; the CLI fills the same record.

Safe by default: the server binds loopback, and binding any other address without an API key is
refused when the record is built, before a model loads or a port opens.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genprm.errors import ConfigError
from genprm.evaluation.bon_metrics import AGGREGATIONS
from genprm.serving.queries import QueryParser
from genprm.verifier.config import VerifyConfig

Aggregation = Literal["last", "min", "mean", "product"]
assert set(Aggregation.__args__) == set(AGGREGATIONS)  # type: ignore[attr-defined]

API_KEY_ENV = "GENPRM_API_KEY"
"""The environment variable ``genprm serve`` reads the API key from when ``--api-key`` is not given."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` included); anything else reaches other machines."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname other than localhost may resolve anywhere


class ServeConfig(BaseModel):
    """Everything the reward server needs: the model, the verifier's settings, the score, the limits.

    The verifier settings are one :class:`VerifyConfig` (every request is verified with the same one,
    so that results are comparable and duplicates can be answered from the store).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model: str = Field("smollm2-135m-instruct", description="The verifier model (a name or path, as for verify).")
    engine: str = Field("llamacpp", description="The engine that runs it.")
    engine_options: dict[str, Any] = Field(default_factory=dict)
    chat_template: str | None = Field(None, description="A chat template overriding the model's (its text).")
    verify: VerifyConfig = Field(default_factory=VerifyConfig)

    aggregate: Aggregation = Field("min", description="How step rewards become the solution's PRM score.")
    outcome_weight: float = Field(
        0.0, ge=0.0, le=1.0,
        description="reward = (1 - w) * PRM score + w * outcome, the outcome (1 or 0) graded against the "
        "request's label by math-verify; 0 grades nothing.",
    )
    unscored_reward: float = Field(
        0.0, ge=0.0, le=1.0,
        description="The PRM score used for a solution with no readable step (flagged 'scored: false').",
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = Field(None, description="Bearer token every endpoint but /health requires.")
    concurrency: int | None = Field(
        None, ge=1, description="Verification paths in flight at once, across requests (default: see paths_in_flight)."
    )
    max_queue: int = Field(256, ge=1, description="Solutions waiting for a worker; beyond it requests get 503.")
    deadline_s: float = Field(150.0, gt=0.0, description="Seconds a request may take before it gets 504.")
    drain_s: float = Field(120.0, ge=0.0, description="On SIGTERM, seconds to let requests in flight finish.")
    max_body_bytes: int = Field(4 << 20, ge=1024, description="Larger request bodies get 413.")
    max_solutions: int = Field(512, ge=1, description="Queries per /get_reward request.")
    max_steps: int = Field(64, ge=1, description="Steps per solution.")
    max_step_chars: int = Field(16_000, ge=1, description="Characters per step.")
    parser: QueryParser = Field(default_factory=QueryParser)
    run_dir: Path | None = Field(
        None, description="Run folder whose store keeps every verified solution (default: a temporary one)."
    )

    def model_post_init(self, __context: object) -> None:
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(
                "--host", self.host,
                f"binding beyond loopback needs an API key: pass --api-key or set {API_KEY_ENV}",
            )
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("--api-key", "<hidden>", "use at least 8 characters")

    def paths_in_flight(self, engine_name: str, engine_batch: int) -> int:
        """``concurrency``, or a default that suits the engine: its batch on a batching engine (vLLM),
        32 concurrent requests to a server, and on llama.cpp, which runs one call at a time, 2 x N:
        solutions in flight there share the engine, so more would only make each wait on all the others
        (and finish together, late) instead of in arrival order.
        """
        if self.concurrency is not None:
            return self.concurrency
        if engine_name == "llamacpp":
            return 2 * self.verify.n
        return engine_batch if engine_batch > 1 else 32
