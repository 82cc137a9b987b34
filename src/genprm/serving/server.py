"""Run the reward server: uvicorn on the configured address, draining requests in flight on SIGTERM.

``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` here (set it to override): llama.cpp's CPU backend uses
OpenMP, and every path thread that calls into it gets its own OpenMP team, whose idle threads spin
on the cores the working team needs. Measured here (demo model, one request at a time, a busy
2-core machine): 42 s per request with spinning teams, 4.8 s with passive ones.

uvicorn handles SIGTERM and SIGINT: it stops accepting connections, waits up to ``drain_s`` for the
requests in flight to be answered, then runs the app's shutdown, which lets every solution already
accepted finish before the engine closes.
"""

from __future__ import annotations

import logging
import os
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

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when the engine's library loads: see above
    logging.getLogger("genprm").setLevel(log_level.upper())
    server = uvicorn.Server(uvicorn_config(config, engine, log_level=log_level))
    server.run()
