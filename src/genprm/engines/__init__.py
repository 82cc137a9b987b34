"""Inference engines behind one interface, found by name and imported only when chosen.

    from genprm.engines import load_engine
    engine = load_engine("llamacpp", "smollm2-135m-instruct")

``llamacpp`` runs GGUF models on the CPU in process. ``scripted`` is a deterministic stand-in
for unit tests, registered like the real ones.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from genprm.engines.base import (
    Engine,
    Generation,
    GenerationRequest,
    LogprobRequest,
    Prompt,
    SamplingParams,
    TokenLogprobs,
)
from genprm.errors import ConfigError, MissingDependencyError

# name -> (module, factory attribute, module it imports, extra that installs it)
_BACKENDS: dict[str, tuple[str, str, str | None, str | None]] = {
    "llamacpp": ("genprm.engines.llamacpp", "LlamaCppEngine", "llama_cpp", "llamacpp"),
    "openai": ("genprm.engines.openai_compat", "OpenAIEngine", "httpx", "openai"),
    "vllm": ("genprm.engines.vllm_engine", "VLLMEngine", "vllm", "vllm"),
    "scripted": ("genprm.engines.scripted", "ScriptedEngine", None, None),
}

_PIP_NAMES = {"llama_cpp": "llama-cpp-python"}  # where the distribution's name differs from its module's


def available_engines() -> list[str]:
    """Names accepted by :func:`load_engine`."""
    return list(_BACKENDS)


def engine_class(name: str) -> Callable[..., Engine]:
    """The engine class registered as ``name``, imported now."""
    if name not in _BACKENDS:
        raise ConfigError("engine", name, f"choose one of {', '.join(_BACKENDS)}")
    module, attribute, needs, extra = _BACKENDS[name]
    if needs is not None and importlib.util.find_spec(needs) is None:
        raise MissingDependencyError(_PIP_NAMES.get(needs, needs), extra or name)
    factory: Callable[..., Engine] = getattr(importlib.import_module(module), attribute)
    return factory


def load_engine(name: str, model: str | None = None, **options: Any) -> Engine:
    """Start engine ``name`` with ``model`` and backend-specific ``options``."""
    factory = engine_class(name)
    return factory(model, **options) if model is not None else factory(**options)


__all__ = [
    "Engine",
    "Generation",
    "GenerationRequest",
    "LogprobRequest",
    "Prompt",
    "SamplingParams",
    "TokenLogprobs",
    "available_engines",
    "engine_class",
    "load_engine",
]
