"""One engine replica: the object a Ray actor wraps (plain Python, so it is testable without Ray).

A replica holds :class:`~genprm.executor.Roles` built from picklable specs, so it loads its own
engines where it runs (a GPU of its node for vLLM, CPU threads for llama.cpp, a client for an
OpenAI-compatible server) and its own sandbox pool (sandbox workers are processes of its node).
Work arrives one unit per call; a Ray actor with ``max_concurrency`` above one runs calls on
threads, so the units in flight share the engine's batch exactly as local threads do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genprm.executor.base import Work, describe_error
from genprm.executor.roles import Roles, RoleSpec

ENGINE_METHODS = frozenset({"generate", "sample", "next_token_logprobs", "tokenize", "detokenize"})
"""Engine operations a driver may call on a replica's model (the :class:`~genprm.engines.Engine` API)."""


@dataclass(frozen=True)
class EngineIdentity:
    """What the driver needs to know of a replica's engine without loading one: what keys and
    prompts are made of (model id, chat template, special tokens) and how it batches.
    """

    name: str
    model_id: str
    chat_template: str | None
    special_tokens: dict[str, str]
    max_batch: int
    shares_sample_prompt: bool


@dataclass(frozen=True)
class UnitResult:
    """A unit's value, or the one-line error that stopped it, and how long the work ran."""

    value: Any
    error: str | None
    seconds: float


class Replica:
    """The resources of one engine replica and the calls a driver makes on them."""

    def __init__(self, specs: Mapping[str, RoleSpec]) -> None:
        self.roles = Roles(specs)

    def ready(self) -> dict[str, Any]:
        """Where this replica runs (also the driver's health probe: it answers once the replica is up)."""
        return {"pid": os.getpid(), "node": _node_id()}

    def describe(self, role: str) -> EngineIdentity:
        """Load ``role``'s engine (if no earlier call did) and say what it is."""
        engine = self.roles.engine(role)
        return EngineIdentity(engine.name, engine.model_id, engine.chat_template, dict(engine.special_tokens),
                              engine.max_batch, engine.shares_sample_prompt)

    def run(self, work: Work[Any, Any], unit: Any) -> UnitResult:
        """One unit; a failure of the work is its result (the driver records it), never an exception."""
        started = time.perf_counter()
        try:
            value = work(self.roles, unit)
        except Exception as exc:  # the unit's failure is data; only a dead replica fails the call
            return UnitResult(None, describe_error(exc), time.perf_counter() - started)
        return UnitResult(value, None, time.perf_counter() - started)

    def call(self, role: str, method: str, argument: Any) -> Any:
        """An engine operation on ``role``'s model, for a driver-side engine proxy."""
        if method not in ENGINE_METHODS:
            raise ValueError(f"{method!r} is not an engine operation ({', '.join(sorted(ENGINE_METHODS))})")
        return getattr(self.roles.engine(role), method)(argument)

    def close(self) -> None:
        self.roles.close()


def _node_id() -> str | None:
    """The Ray node this runs on; ``None`` outside Ray (asking then would start Ray)."""
    try:
        import ray
    except ImportError:
        return None
    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None
