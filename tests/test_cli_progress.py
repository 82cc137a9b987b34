"""Long commands stay observable when stderr is a log file, not a terminal."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from genprm.cli.common import phase_updater


def _lines(console_file: io.StringIO) -> list[str]:
    """Our plain lines (rich also writes the bars' final state once, at exit)."""
    return [line for line in console_file.getvalue().splitlines() if line.endswith("elapsed")]


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=False, width=200)) as bar:
        update = phase_updater(bar, log_every_s=3600)
        update("verify", 0, 3)
        update("verify", 1, 3)  # throttled: within log_every_s of the first line
        update("verify", 3, 3)
        update("verify", 3, 3)  # a finished phase is written once
        update("critic", 2, 2)
    lines = _lines(out)
    assert [line.split(",")[0] for line in lines] == ["verify: 0/3", "verify: 3/3", "critic: 2/2"]


def test_no_plain_lines_on_a_terminal() -> None:
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=True, width=200), auto_refresh=False) as bar:
        update = phase_updater(bar)
        update("verify", 1, 3)
    assert "verify: 1/3" not in out.getvalue()
