"""``genprm report RUN``: a static HTML page of an evaluation run, a thin layer over :mod:`genprm.report`."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from genprm.cli.common import fail_on_errors
from genprm.report import write_report


def report_command(
    run: Annotated[Path, typer.Argument(help="Run folder of `genprm eval ...` (with processbench.json, bon.json "
                                        "or refine.json).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for index.html and its plots. "
                                             "Default: RUN/report.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most K samples per subset on the page (large runs); "
                                              "the figures always use all.")] = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
) -> None:
    """Write a static HTML report: figures, plots, and every sample's steps, rewards, analyses and code."""
    with fail_on_errors():
        page = write_report(run, out, limit=limit)
    typer.echo(str(page))
    if open_page:
        webbrowser.open(page.resolve().as_uri())
