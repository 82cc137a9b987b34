"""``genprm serve``: GenPRM as the reward of reinforcement learning, over HTTP.

    from genprm.serving import ServeConfig, serve
    serve(ServeConfig(model="smollm2-135m-instruct"))      # blocks; SIGTERM drains and exits

One :class:`VerificationService` is shared by every request, so concurrent requests batch on one
engine; duplicates are answered from the run store; the queue is bounded. See docs/serving.md.
The HTTP parts need the ``serve`` extra (``pip install 'genprm[serve]'``) and are imported when used.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from genprm.errors import MissingDependencyError
from genprm.serving.config import API_KEY_ENV, ServeConfig, is_loopback
from genprm.serving.queries import DEFAULT_SPECIAL_TOKENS, QueryParser
from genprm.serving.service import QueueFull, VerificationService

_HTTP = {"create_app": "genprm.serving.app", "serve": "genprm.serving.server",
         "uvicorn_config": "genprm.serving.server"}
_NEEDS = ("fastapi", "uvicorn", "prometheus_client")


def __getattr__(name: str) -> Any:
    """The HTTP layer on first use, with a clear message when the ``serve`` extra is missing."""
    if name not in _HTTP:
        raise AttributeError(f"module 'genprm.serving' has no attribute {name!r}")
    for package in _NEEDS:
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package.replace("_", "-"), "serve")
    return getattr(importlib.import_module(_HTTP[name]), name)


__all__ = [
    "API_KEY_ENV",
    "DEFAULT_SPECIAL_TOKENS",
    "QueryParser",
    "QueueFull",
    "ServeConfig",
    "VerificationService",
    "create_app",
    "is_loopback",
    "serve",
    "uvicorn_config",
]
