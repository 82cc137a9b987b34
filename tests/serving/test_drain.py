"""`genprm serve` as a user runs it, on the demo model: SIGTERM lets the request in flight finish, then exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from genprm.store import RunStore

from .support import chatml_prompt

pytestmark = pytest.mark.e2e

RESPONSE = "Half of 18 is 9, and 9 + 2 = 11.\n\nThe answer is $\\boxed{11}$."


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"genprm serve exited early:\n{process.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("genprm serve did not become healthy")


def test_sigterm_drains_the_request_in_flight_then_exits(demo_gguf, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "genprm.cli.main", "serve", "--model", str(demo_gguf), "--n", "1", "--mode",
         "analyze", "--max-step-tokens", "24", "--threads", "2", "--port", str(port), "--run", str(tmp_path / "run"),
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _wait_healthy(url, process)
        prompt = chatml_prompt("Take half of 18 and add 2.")
        answers: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{url}/get_reward", json={"query": [prompt + RESPONSE + "<|im_end|>"], "prompts": [prompt]},
            timeout=180)))
        sender.start()
        deadline = time.monotonic() + 60
        while "genprm_solutions_running 1.0" not in httpx.get(f"{url}/metrics", timeout=5).text:
            assert time.monotonic() < deadline, "the request never started verifying"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        sender.join(180)
        code = process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    body = answers[0].json()
    assert body["extra_logs"]["num_steps"] == [2] and len(body["extra_logs"]["step_rewards"][0]) == 2
    # uvicorn re-raises the signal once it has shut down gracefully, so a supervisor sees a SIGTERM stop
    assert code == -signal.SIGTERM
    with RunStore(tmp_path / "run") as store:  # the solution was stored and the store closed cleanly
        assert store.count_paths() == 1
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
