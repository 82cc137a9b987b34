"""Human-readable rendering of results for the terminal (rich)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from genprm.cli.common import print_table
from genprm.verifier.records import ComputeUsage, SolutionResult


def _verdict_markup(verdict: str) -> str:
    return {"Yes": "[green]Yes[/]", "No": "[red]No[/]"}.get(verdict, "[yellow]?[/]")


def saves_compute(config: dict[str, object]) -> bool:
    """Whether a run's settings can spend less than fixed N in one mode (so compute is worth showing)."""
    return bool(config.get("cascade") or config.get("adaptive_n") or config.get("stop_at_first_error"))


PATHS_MAX_WIDTH = 29
"""The per-path rewards fold onto more lines past six of them, so that many paths do not crowd out the rest."""


def print_solution(console: Console, result: SolutionResult, title: str) -> None:
    """One table per solution: each step's verdict, mean reward, per-path rewards and a critique.

    Every column but the critique keeps its natural width, and the critique gets what the terminal
    has left (cut with an ellipsis): left to itself, rich squeezes the narrow columns, headers and
    all, to nothing in an 80-column terminal before it shortens a no-wrap column.
    """
    cascade = bool(result.config.get("cascade"))
    rows = []
    for step in result.steps:
        paths = " ".join("--" if p.reward is None else f"{p.reward:.2f}" for p in step.paths)
        reward = "--" if step.reward is None else f"{step.reward:.3f}"
        mode = [step.mode or ""] if cascade else []
        rows.append([str(step.index), step.verdict, reward, *mode, paths, step.critique])
    headers = ["step", "verdict", "reward", *(["mode"] if cascade else []), "paths"]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    widths[-1] = min(widths[-1], PATHS_MAX_WIDTH)
    # each column adds 2 of padding and 1 of border; the table's last border adds 1
    left = console.width - sum(w + 3 for w in widths) - 4
    table = Table(show_lines=False, expand=False)
    for header, width in zip(headers, widths):
        wraps = header == "paths"
        table.add_column(header, justify="right" if header in ("step", "reward") else "left", no_wrap=not wraps,
                         min_width=width, max_width=width, overflow="fold" if wraps else "ellipsis")
    table.add_column("critique", overflow="ellipsis", no_wrap=True, max_width=max(8, min(70, left)))
    for row in rows:
        table.add_row(row[0], _verdict_markup(row[1]), *row[2:])
    print_table(console, table, title)
    where = "none" if result.first_error < 0 else f"step {result.first_error}"
    extra = " (stopped there)" if result.stopped_early else ""
    spent = f"   {_path_steps(result.compute)}" if saves_compute(result.config) else ""
    console.print(f"first error: [bold]{where}[/]{extra}{spent}   {result.seconds:.1f}s\n")


def _path_steps(usage: ComputeUsage) -> str:
    fixed = usage.path_steps_fixed
    saved = f" ({usage.path_steps_saved / fixed:.0%} saved)" if fixed else ""
    return f"{usage.path_steps} of {fixed} path-steps{saved}"


@dataclass
class ComputeTotals:
    """Compute summed over a run's solutions, against fixed N in the top mode on the same steps."""

    top_mode: str
    usage: ComputeUsage = field(default_factory=ComputeUsage)
    solutions: int = 0

    def add(self, result: SolutionResult) -> None:
        self.solutions += 1
        self.usage.merge(result.compute)

    def fixed_tokens_estimate(self) -> int | None:
        """Tokens fixed N would have generated: the top mode's mean per path-step here, times the fixed
        path-steps. ``None`` when no top-mode path-step ran. An estimate: steps that reach the top of a
        cascade are the hard ones, and cancelled turns are short.
        """
        top = self.usage.by_mode.get(self.top_mode)
        if top is None or top.path_steps == 0:
            return None
        return round(top.generated_tokens / top.path_steps * self.usage.path_steps_fixed)

    def line(self) -> str:
        usage = self.usage
        parts = [f"compute over {self.solutions} solution(s): {_path_steps(usage)}"]
        if len(usage.by_mode) > 1:
            parts.append(", ".join(f"{m} {u.path_steps}" for m, u in usage.by_mode.items()))
        if usage.cancelled_paths:
            parts.append(f"{usage.cancelled_paths} path(s) cancelled")
        tokens = f"{usage.generated_tokens:,} tokens generated"
        fixed = self.fixed_tokens_estimate()
        if fixed:
            tokens += f" vs ~{fixed:,} for fixed N in {self.top_mode} (~{1 - usage.generated_tokens / fixed:.0%} saved)"
        parts.append(tokens)
        return "; ".join(parts)


def print_compute_total(console: Console, totals: ComputeTotals) -> None:
    """The run's compute saved, one line (shown when adaptive options or --stop-at-first-error are on)."""
    if totals.solutions:
        console.print(totals.line(), highlight=False)
