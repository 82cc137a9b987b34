"""What the serving tests share: a real server on a free loopback port in a thread, scripted engines."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from genprm.engines.scripted import ScriptedEngine
from genprm.serving import ServeConfig, uvicorn_config

CHATML_PROMPT = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
    "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
)


def chatml_prompt(question: str) -> str:
    return CHATML_PROMPT.format(question=question)


class GatedEngine(ScriptedEngine):
    """A scripted engine whose replies depend on the prompt and seed (a mix-up between paths shows), that
    can be held (``gate`` cleared: every call waits) and slowed (``delay`` seconds per call).
    """

    def __init__(self, *, delay: float = 0.0, max_batch: int = 8, fail_on: str | None = None) -> None:
        super().__init__(respond=self._reply, verdict=self._verdict, max_batch=max_batch)
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on = fail_on
        self.entered = threading.Event()
        self.generations = 0
        self._count = threading.Lock()

    def _reply(self, prompt: str, request) -> str:
        self.entered.set()
        self.gate.wait(60)
        if self.delay:
            time.sleep(self.delay)
        with self._count:
            self.generations += 1
        if self.fail_on is not None and self.fail_on in prompt:
            raise RuntimeError(f"engine broke on /secret/path/{self.fail_on}")
        seed = (request.params.seed or 0) % 1000
        if prompt.endswith("step by step: "):
            return f"seed {seed} looks at {len(prompt)} chars\n</analyze>\n"
        if prompt.endswith("```python\n"):
            return f"print({seed} + {len(prompt) % 97})\n```\n"
        return f"fine {seed}\n</verify>\n<output>"

    @staticmethod
    def _verdict(prompt: str) -> tuple[float, float]:
        p = (len(prompt) % 89 + 5) / 100
        return math.log(p), math.log(1 - p)


class ServedURL(str):
    """The base URL of a test server; ``bound`` is the address its socket is bound to."""

    bound: tuple = ()


@contextmanager
def running(config: ServeConfig, engine=None) -> Iterator[ServedURL]:
    """Serve ``create_app(config, engine)`` with uvicorn on a free loopback port; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(config.model_copy(update={"port": 0}), engine, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    url = ServedURL(f"http://127.0.0.1:{bound[1]}")
    url.bound = bound
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(120)
