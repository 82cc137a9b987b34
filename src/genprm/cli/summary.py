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


def print_solution(console: Console, result: SolutionResult, title: str) -> None:
    """One table per solution: each step's verdict, mean reward, per-path rewards and a critique."""
    cascade = bool(result.config.get("cascade"))
    table = Table(show_lines=False, expand=False)
    table.add_column("step", justify="right")
    table.add_column("verdict")
    table.add_column("reward", justify="right")
    if cascade:
        table.add_column("mode")
    table.add_column("paths", overflow="fold")
    table.add_column("critique", overflow="ellipsis", max_width=70, no_wrap=True)
    for step in result.steps:
        paths = " ".join("--" if p.reward is None else f"{p.reward:.2f}" for p in step.paths)
        reward = "--" if step.reward is None else f"{step.reward:.3f}"
        mode = [step.mode or ""] if cascade else []
        table.add_row(str(step.index), _verdict_markup(step.verdict), reward, *mode, paths, step.critique)
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
