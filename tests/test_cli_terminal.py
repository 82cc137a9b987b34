"""The per-solution table in a real 80-column terminal (a tmux pane, a real pseudo-terminal): every
column keeps its header and values; only the critique is shortened.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import pytest

SCRIPT = """
import math
from rich.console import Console
from genprm.cli.summary import print_solution
from genprm.engines.scripted import ScriptedEngine
from genprm.verifier import SolutionVerifier, VerifyConfig
critique = "The paragraph correctly computes the total number of apples as three plus four, which is seven."
engine = ScriptedEngine(respond=lambda p, r: critique + "\\n</analyze>\\n", verdict=lambda p: (math.log(0.7), math.log(0.3)))
result = SolutionVerifier(engine, VerifyConfig(n={n}, mode="analyze", reward="raw")).verify("p", ["a", "b", "c"])
print_solution(Console(stderr=True), result, "r0: 3 step(s)")
print("DONE", flush=True)
"""


def _pane(tmp_path, n: int, columns: int = 80) -> list[str]:
    script = tmp_path / "table.py"
    script.write_text(SCRIPT.replace("{n}", str(n)))
    socket = f"genprm-test-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket]
    subprocess.run([*tmux, "new-session", "-d", "-x", str(columns), "-y", "40", f"{sys.executable} {script}; sleep 30"],
                   check=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True).stdout
            if "DONE" in lines:
                return lines.splitlines()
            time.sleep(0.3)
        raise AssertionError(f"the table did not print in time:\n{lines}")
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (scripts/setup installs it)")
@pytest.mark.parametrize("n", [2, 8])
def test_an_80_column_terminal_shows_every_column(tmp_path, n):
    lines = _pane(tmp_path, n)
    header = next(line for line in lines if "critique" in line or "┃ step" in line)
    for column in ("step", "verdict", "reward", "paths", "critique"):
        assert column in header, header
    rows = [line for line in lines if "0.700" in line]
    assert len(rows) == 3
    assert all("Yes" in row and "0.70 0.70" in row and "The paragraph" in row for row in rows)
    assert all(len(line) <= 80 for line in lines)
