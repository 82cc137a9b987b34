"""What every command shares: the stderr console and one-line user errors (exit status 2)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from genprm.errors import GenPRMError

err = Console(stderr=True)


def print_table(console: Console, table: Table, title: str, caption: str | None = None) -> None:
    """A table with its title (and caption) on lines of their own, so that a narrow table does not
    wrap them (rich wraps a table's own title to the table's width).
    """
    console.print(title, style="bold", highlight=False, markup=False)
    console.print(table)
    if caption:
        console.print(caption, style="dim", highlight=False, markup=False)


def fail(message: str) -> NoReturn:
    # the message is plain text: "pip install 'genprm[ray]'" must not lose its brackets to markup
    err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def describe(exc: Exception) -> str:
    """One line for the user: pydantic errors become ``--option value: reason``."""
    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors():
            option = "--" + "-".join(str(x) for x in error["loc"]).replace("_", "-")
            parts.append(f"{option} {error.get('input')!r}: {error['msg']}")
        return "; ".join(parts)
    text = str(exc).strip()
    return " ".join(text.split()) if text else type(exc).__name__


@contextmanager
def fail_on_errors() -> Iterator[None]:
    """Turn our errors and bad settings into one line on stderr and exit status 2."""
    try:
        yield
    except (GenPRMError, ValidationError) as exc:
        fail(describe(exc))


@contextmanager
def phase_bar() -> Iterator[Progress]:
    """A progress display on stderr with one bar per phase of a long command."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
    ) as bar:
        yield bar


def phase_updater(bar: Progress, *, log_every_s: float = 30.0) -> Callable[[str, int, int], None]:
    """An ``on_progress(phase, done, total)`` that keeps one bar per phase.

    A bar draws nothing when stderr is not a terminal (``nohup``, CI logs), so there a plain line
    ``phase: done/total, elapsed`` is written instead, at most every ``log_every_s`` seconds per phase
    and always when a phase completes: a long background run stays observable.
    """
    tasks: dict[str, TaskID] = {}
    plain = not bar.console.is_terminal
    started: dict[str, float] = {}
    last_line: dict[str, float] = {}
    closed: set[str] = set()

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
            started[phase] = time.monotonic()
        bar.update(tasks[phase], completed=done, total=total)
        now = time.monotonic()
        if not plain or phase in closed:
            return
        if done >= total:
            closed.add(phase)
        elif now - last_line.get(phase, -math.inf) < log_every_s:
            return
        last_line[phase] = now
        bar.console.print(f"{phase}: {done}/{total}, {_clock(now - started[phase])} elapsed", highlight=False)

    return update


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
