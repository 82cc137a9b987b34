"""Fixtures for the engine tests: the in-process demo model, a real llama_cpp.server on loopback, and vLLM.

Each engine is started once per session: the shared suite (``test_engine_suite.py``) and the
backend-specific modules use the same instance, so vLLM's start-up (~20 s on 2 cores) is paid once.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

API_KEY = "genprm-test-key"
READY_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LlamaServer:
    url: str
    api_key: str
    log: Path


def _server_importable() -> str | None:
    """Why ``python -m llama_cpp.server`` cannot run here, or None."""
    try:
        import llama_cpp.server.app  # noqa: F401  (pulls fastapi, uvicorn, sse_starlette, starlette_context)
    except ImportError as exc:
        return (
            f"llama_cpp.server is not usable ({exc}); install its extras without rebuilding llama-cpp-python: "
            "pip install fastapi uvicorn sse-starlette 'starlette-context>=0.3.6,<0.4' pydantic-settings PyYAML"
        )
    return None


@pytest.fixture(scope="session")
def llama_server(demo_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """``python -m llama_cpp.server`` with the demo model on a free loopback port, for the session."""
    pytest.importorskip("httpx", reason="the openai engine needs httpx: pip install 'genprm[openai]'")
    import httpx

    reason = _server_importable()
    if reason:
        pytest.skip(reason)
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(demo_gguf), "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", "4096", "--logits_all", "true", "--api_key", API_KEY,
        "--n_threads", "1", "--n_threads_batch", "1",
    ]  # no `--cache true`: its RAM prompt cache restored a wrong state on an AMD EPYC (AVX2) build of
    # 0.3.36 ("What is the capital of France?" answered "La femme de France, le Grand Croix" after two
    # other prompts; "The capital of France is Paris." without it). genprm's docs do not use it either.
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({process.returncode}):\n{log.read_text()[-2000:]}")
            try:
                answer = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=2)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready after {READY_S:.0f} s:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield LlamaServer(url, API_KEY, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def inprocess_engine(demo_gguf: Path):
    pytest.importorskip("llama_cpp")
    from genprm.engines.llamacpp import LlamaCppEngine

    with LlamaCppEngine(str(demo_gguf), n_ctx=4096, n_threads=1) as engine:
        yield engine


@pytest.fixture(scope="session")
def openai_engine(llama_server: LlamaServer, inprocess_engine):
    """The OpenAI-compatible engine on the loopback server; the template comes from the GGUF."""
    from genprm.engines.openai_compat import OpenAIEngine

    with OpenAIEngine(
        base_url=llama_server.url, api_key=llama_server.api_key, chat_template=inprocess_engine.chat_template,
        timeout_s=60,
    ) as engine:
        yield engine


VLLM_MODEL_ENV = "GENPRM_VLLM_MODEL"


def vllm_model() -> str:
    """The Hugging Face folder the vLLM tests run, from ``$GENPRM_VLLM_MODEL``; skips the test when unusable."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not importable here (on a CPU: bash scripts/setup-vllm, then run in its venv)")
    model = os.environ.get(VLLM_MODEL_ENV, "")
    if not model:
        pytest.skip(f"set {VLLM_MODEL_ENV} to a Hugging Face model folder to run the vLLM engine tests")
    if not Path(model).is_dir():
        pytest.skip(f"{VLLM_MODEL_ENV}={model} is not a folder")
    return model


@pytest.fixture(scope="session")
def vllm_engine():
    """The in-process vLLM engine on ``$GENPRM_VLLM_MODEL`` (a ChatML model such as Qwen2.5), for the session.

    float32, not the checkpoint's bf16: the tests compare a request read in a batch with the same request
    read alone to 1e-4, which checks that rows are never mixed up. vLLM is not batch-invariant, and on a
    CPU with bf16 kernels (AVX512-BF16/AMX) a batch's shape moves a log-probability by up to ~0.06
    (measured: -7.62 vs -7.68), which would fail that check for a reason that is not a bug.
    """
    model = vllm_model()
    from genprm.engines.vllm_engine import VLLMEngine

    with VLLMEngine(model, max_model_len=4096, max_batch=64, dtype="float32") as engine:
        yield engine
