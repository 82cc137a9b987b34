"""The commands against a real ``ray start --head`` on loopback, started and stopped here: with
``--ray`` each writes what the same command writes without it (the scripted engine is
deterministic), for ``eval processbench``, ``eval bon``, ``refine`` and a synthesis stage.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.distributed import scripted
from tests.distributed.ray_fixtures import needs_ray, ray
from typer.testing import CliRunner

from genprm.cli.main import app
from genprm.executor.ray import ray_token_exists
from genprm.synthesis.store import SynthStore

RAY = shutil.which("ray")
GENPRM = shutil.which("genprm")
pytestmark = [needs_ray, pytest.mark.skipif(not (RAY and GENPRM), reason="needs the ray and genprm commands on PATH")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def head() -> Iterator[str]:
    """``ray start --head --block`` on 127.0.0.1 with 2 CPUs, in a session of its own, so that
    stopping it here ends only its processes (not another Ray on this machine); its address.
    """
    assert not ray.is_initialized()
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    command = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
               "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp]
    # One authentication mode for the head, the probe and the genprm drivers: `ray start` turns token
    # auth on only when ~/.ray/auth_token exists (a local ray.init() earlier in the session makes one),
    # while a client told RAY_AUTH_MODE=token against a head without it crashes. So name it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE") or ("token" if ray_token_exists() else "disabled"))
        yield from _started_head(command, temp, f"127.0.0.1:{port}")


def _started_head(command: list[str], temp: str, address: str) -> Iterator[str]:
    """Run ``command`` (a blocking ``ray start --head``) until the caller is done with ``address``."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = Path(temp) / "ray-start.log"  # what ray start said, for the failure message
    with log.open("wb") as output:
        started = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(address, started, log)
        yield address
    finally:
        started.terminate()  # `ray start --block` stops its processes (a signal to all of them at once
        try:  # would kill the GCS first and leave it a minute waiting to drain the node)
            started.wait(60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(started.pid, signal.SIGKILL)  # whatever is left of its session
        except ProcessLookupError:
            pass
        started.wait(10)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for(address: str, started: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    def said() -> str:
        return log.read_text(errors="replace")[-2000:]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.poll() is not None:
            pytest.fail(f"ray start exited with {started.returncode}; it said:\n{said()}")
        probe = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True)
        if probe.returncode == 0 and "CPU" in probe.stdout:
            return
        time.sleep(1.0)
    pytest.fail(f"no Ray head at {address} after {timeout:g} s; ray start said:\n{said()}")


def genprm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The ``genprm`` command in a process of its own (the driver), against the cluster."""
    done = subprocess.run([GENPRM, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def here(*args: str) -> None:
    """The same command without Ray, in this process (quicker: no new interpreter to start)."""
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output


def figures(path: Path) -> Any:
    """A figures file without its timing fields and with its run folder's name taken out."""
    return scripted.without_timing(json.loads(path.read_text(encoding="utf-8").replace(str(path.parent), "RUN")))


def test_eval_processbench_on_the_cluster_writes_the_local_figures(head, tmp_path):
    data = scripted.write_processbench(tmp_path / "data", 3)
    args = ["eval", "processbench", "--data", str(data), "--engine", "scripted", "--model", "m", "--n", "2",
            "--concurrency", "2", "--subsets", "gsm8k,math"]
    here(*args, "--run", str(tmp_path / "local"))
    on_ray = genprm(*args, "--run", str(tmp_path / "ray"), "--ray", "auto", "--replicas", "2",
                    env={"RAY_ADDRESS": head})
    assert "Pass@1" in on_ray.stderr or "Avg" in on_ray.stderr
    assert figures(tmp_path / "ray" / "processbench.json") == figures(tmp_path / "local" / "processbench.json")
    assert scripted.stored_paths(tmp_path / "ray") == scripted.stored_paths(tmp_path / "local")


def test_eval_bon_and_refine_on_the_cluster_write_the_local_figures(head, tmp_path):
    bon = tmp_path / "bon.jsonl"
    bon.write_text("".join(json.dumps(p) + "\n" for p in [
        {"id": "p0", "problem": "What is 1+1?", "answer": "2", "score": [False, True],
         "responses": ["Start.\n\nSo \\boxed{3}.", "So \\boxed{2}."]},
    ]), encoding="utf-8")
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "#### 4"}) + "\n", encoding="utf-8")
    commands = {
        "bon.json": ["eval", "bon", "--data", str(bon), "--engine", "scripted", "--model", "m", "--mode", "direct",
                     "--n", "1"],
        "refine.json": ["refine", "--data", str(problems), "--engine", "scripted", "--model", "m", "--rounds", "1",
                        "--mode", "analyze"],
    }
    for result, args in commands.items():
        local, remote = tmp_path / f"local-{result}", tmp_path / f"ray-{result}"
        here(*args, "--run", str(local))
        genprm(*args, "--run", str(remote), "--ray-address", head)
        assert figures(remote / result) == figures(local / result)


def test_a_synthesis_stage_on_the_cluster_stores_what_a_local_run_stores(head, tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                                for i in range(3)), encoding="utf-8")
    args = ["synth", "solutions", "--problems", str(problems), "--policy-engine", "scripted", "--policy-model", "m",
            "--first-draws", "2", "--draws-per-try", "2", "--num-try", "0", "--num-paths", "2"]
    here(*args, "--run", str(tmp_path / "local"))
    genprm(*args, "--run", str(tmp_path / "ray"), "--ray", head, "--replicas", "2")
    assert _solutions(tmp_path / "ray") == _solutions(tmp_path / "local")


def _solutions(run: Path) -> Any:
    with SynthStore(run) as store:
        key = store.stage("solutions").key
        return scripted.without_timing(json.loads(json.dumps(store.selections(key), default=repr)))
