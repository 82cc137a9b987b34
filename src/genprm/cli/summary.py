"""Human-readable rendering of results for the terminal (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from genprm.verifier.records import SolutionResult


def _verdict_markup(verdict: str) -> str:
    return {"Yes": "[green]Yes[/]", "No": "[red]No[/]"}.get(verdict, "[yellow]?[/]")


def print_solution(console: Console, result: SolutionResult, title: str) -> None:
    """One table per solution: each step's verdict, mean reward, per-path rewards and a critique."""
    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    table.add_column("step", justify="right")
    table.add_column("verdict")
    table.add_column("reward", justify="right")
    table.add_column("paths", overflow="fold")
    table.add_column("critique", overflow="ellipsis", max_width=70, no_wrap=True)
    for step in result.steps:
        paths = " ".join("--" if p.reward is None else f"{p.reward:.2f}" for p in step.paths)
        reward = "--" if step.reward is None else f"{step.reward:.3f}"
        table.add_row(str(step.index), _verdict_markup(step.verdict), reward, paths, step.critique)
    console.print(table)
    where = "none" if result.first_error < 0 else f"step {result.first_error}"
    extra = " (stopped there)" if result.stopped_early else ""
    console.print(f"first error: [bold]{where}[/]{extra}   {result.seconds:.1f}s\n")
