"""The run store: idempotent writes, per-path reuse, and a real run surviving ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genprm.store import RunStore, settings_key

PROCESSBENCH = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "processbench"


def test_writes_are_idempotent_and_keyed_by_settings(tmp_path):
    with RunStore(tmp_path / "run") as store:
        key = store.register_settings("m", {"n": 4, "temperature": 0.6})
        assert key == settings_key("m", {"n": 8, "temperature": 0.6})  # n does not shape a path
        assert key != settings_key("m", {"n": 4, "temperature": 0.7})
        assert key != settings_key("other", {"n": 4, "temperature": 0.6})
        store.put_paths("s1", {"problem": "p"}, key, {0: [{"reward": 0.5}], 1: [{"reward": 0.25}]})
        store.put_paths("s1", {"problem": "p"}, key, {0: [{"reward": 0.99}]})  # a re-run never overwrites
        assert store.paths("s1", key) == {0: [{"reward": 0.5}], 1: [{"reward": 0.25}]}
        assert store.paths("s1", key, n=1) == {0: [{"reward": 0.5}]}
        assert store.path_indices("s1", key) == {0, 1}
        store.put_item("critic", "s1", "c", {"prediction": 2})
        store.put_item("critic", "s1", "c", {"prediction": 3})
        assert store.item("critic", "s1", "c") == {"prediction": 2}
        assert store.record("s1") == {"problem": "p"}
    with RunStore(tmp_path / "run") as again:  # reopening sees everything
        assert again.count_paths() == 2


def _run(run: Path, n: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "genprm.cli.main", "eval", "processbench", "--data", str(PROCESSBENCH),
        "--subsets", "gsm8k", "--limit", "2", "--n", str(n), "--mode", "analyze", "--max-step-tokens", "48",
        "--threads", "1", "--run", str(run),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _rows(run: Path) -> list[tuple[str, int, str, float]]:
    db = sqlite3.connect(run / "store.sqlite")
    try:
        return db.execute("SELECT sample, path, steps, created FROM paths ORDER BY sample, path").fetchall()
    finally:
        db.close()


def _stored_any(run: Path) -> bool:
    """Whether the run stored a path yet (the file may exist before its tables do)."""
    try:
        return (run / "store.sqlite").exists() and bool(_rows(run))
    except sqlite3.OperationalError:
        return False


@pytest.mark.skipif(not PROCESSBENCH.is_dir(), reason="needs ../shared/data/processbench")
def test_a_run_killed_with_sigkill_resumes_without_losing_or_duplicating(tmp_path, demo_gguf):
    run = tmp_path / "run"
    first = _run(run, 1)
    deadline = time.monotonic() + 600
    while not _stored_any(run):
        assert first.poll() is None, first.stdout.read().decode() if first.stdout else ""
        assert time.monotonic() < deadline, "no sample finished in time"
        time.sleep(0.5)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = _rows(run)
    assert len(before) == 1, "killed after the first sample: exactly one stored"

    second = _run(run, 1)
    output = second.communicate(timeout=900)[0].decode()
    assert second.returncode == 0, output
    after = _rows(run)
    assert len(after) == 2 and len({(s, p) for s, p, *_ in after}) == 2
    assert before[0] in after, "the sample finished before the kill is kept as it was, not recomputed"
    results = json.loads((run / "processbench.json").read_text())
    assert results["rows"]["Pass@1"]["gsm8k"]["n_error"] + results["rows"]["Pass@1"]["gsm8k"]["n_correct"] == 2

    third = _run(run, 2)  # a larger N computes only path 1
    output = third.communicate(timeout=900)[0].decode()
    assert third.returncode == 0, output
    extended = _rows(run)
    assert len(extended) == 4
    assert all(row in extended for row in after)
    assert "Maj@2" in json.loads((run / "processbench.json").read_text())["rows"]
