"""Run the reward server: uvicorn on the configured address, draining requests in flight on SIGTERM.

The llama.cpp engine makes every call from one thread of its own with OpenMP threads that sleep
(see genprm.engines.llamacpp): many request threads calling it would otherwise each get a spinning
OpenMP team (measured here: 42 s per request, 4.8 s after).

uvicorn handles SIGTERM and SIGINT: it stops accepting connections, waits up to ``drain_s`` for the
requests in flight to be answered, then runs the app's shutdown, which lets every solution already
accepted finish before the engine closes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from genprm.engines import Engine
from genprm.serving.app import create_app
from genprm.serving.config import ServeConfig

if TYPE_CHECKING:
    import uvicorn


def uvicorn_config(config: ServeConfig, engine: Engine | None = None, *, log_level: str = "info") -> uvicorn.Config:
    """The ``uvicorn.Config`` that serves :func:`create_app` of ``config`` (tests run it in a thread)."""
    import uvicorn

    return uvicorn.Config(
        create_app(config, engine), host=config.host, port=config.port, log_level=log_level,
        timeout_graceful_shutdown=int(config.drain_s) if config.drain_s else None, lifespan="on",
        proxy_headers=False, server_header=False, access_log=True,
    )


def serve(config: ServeConfig, engine: Engine | None = None, *, log_level: str = "info") -> None:
    """Serve until SIGTERM or SIGINT; returns once in-flight requests are answered and the engine closed."""
    import uvicorn

    logging.getLogger("genprm").setLevel(log_level.upper())
    server = uvicorn.Server(uvicorn_config(config, engine, log_level=log_level))
    server.run()
