"""``genprm synth`` end to end on a real model (the demo GGUF, llama.cpp) in real subprocesses:
every stage alone through the CLI, and a run killed with ``kill -9`` that resumes without losing or
duplicating anything.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import SHARED_DATA

GSM8K = SHARED_DATA / "gsm8k" / "train.jsonl"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not GSM8K.is_file(), reason="needs ../shared/data/gsm8k")]

SMALL = ["--num-paths", "2", "--first-draws", "4", "--draws-per-try", "4", "--num-try", "1"]
MODEL = "smollm2-135m-instruct"


def genprm(*args: str, timeout: float = 900) -> str:
    done = subprocess.run([sys.executable, "-m", "genprm.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stderr


def rows(run: Path) -> list[tuple]:
    db = sqlite3.connect(run / "store.sqlite")
    try:
        return db.execute("SELECT kind, sample, settings, slot, value, created FROM items "
                          "WHERE kind LIKE 'synth-%' ORDER BY kind, sample, settings, slot").fetchall()
    finally:
        db.close()


def test_every_stage_runs_alone_through_the_cli(tmp_path, demo_gguf):
    run = str(tmp_path / "run")
    common = ["--threads", "1", "--concurrency", "2"]
    genprm("synth", "solutions", "--problems", str(GSM8K), "--limit", "2", "--policy-model", MODEL,
           "--policy-max-tokens", "160", "--run", run, *SMALL, *common)
    genprm("synth", "rollouts", "--run", run, "--k", "2", "--completer-max-tokens", "96", *common)
    genprm("synth", "label", run)
    genprm("synth", "critique", "--run", run, "--teacher-model", MODEL, "--teacher-max-tokens", "160",
           "--index-samples", "2", *common)
    genprm("synth", "filter", run)
    out = tmp_path / "train.jsonl"
    exported = genprm("synth", "export", run, "--out", str(out))
    assert out.exists() and "conversations written" in exported
    stats = genprm("synth", "stats", run)
    for title in ("problems", "solutions (stage 1)", "rollouts (stage 2)", "labels (RPE)", "teacher critiques",
                  "consensus filter", "export"):
        assert title in stats
    kinds = {kind for kind, *_ in rows(tmp_path / "run")}
    assert {"synth-problem", "synth-draws", "synth-selection"} <= kinds


def _start(run: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "genprm.cli.main", "synth", "run", "--problems", str(GSM8K), "--limit", "3",
        "--policy-model", MODEL, "--teacher-model", MODEL, "--run", str(run), *SMALL, "--k", "2",
        "--policy-max-tokens", "128", "--completer-max-tokens", "64", "--teacher-max-tokens", "96",
        "--index-samples", "2", "--threads", "1", "--concurrency", "1",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_run_killed_with_sigkill_resumes_without_losing_or_duplicating(tmp_path, demo_gguf):
    run = tmp_path / "run"
    first = _start(run)
    deadline = time.monotonic() + 900
    while not (run / "store.sqlite").exists() or not any(kind == "synth-draws" for kind, *_ in rows(run)):
        assert first.poll() is None, first.stdout.read().decode() if first.stdout else ""
        assert time.monotonic() < deadline, "no round of draws finished in time"
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = rows(run)
    assert not any(kind == "synth-export" for kind, *_ in before), "killed mid-run, not after it"

    second = _start(run)
    output = second.communicate(timeout=1800)[0].decode()
    assert second.returncode == 0, output
    after = rows(run)
    assert set(before) <= set(after), "everything stored before the kill is kept as it was, not recomputed"
    keys = [(kind, sample, settings, slot) for kind, sample, settings, slot, *_ in after]
    assert len(keys) == len(set(keys))
    assert sum(kind == "synth-selection" for kind, *_ in after) == 3
    assert "Synthesis funnel" in output

    third = _start(run)  # nothing left to do: nothing is added
    assert third.wait(timeout=900) == 0
    assert rows(run) == after
