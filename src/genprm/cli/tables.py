"""Evaluation tables for the terminal (rich): our figures beside the published ones."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from genprm.cli.common import print_table
from genprm.evaluation.bon import BonResults
from genprm.evaluation.metrics import SubsetScore
from genprm.evaluation.processbench import PUBLISHED, ProcessBenchResults


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _cell(score: SubsetScore) -> str:
    return f"{pct(score.f1)} ({pct(score.error_acc)}/{pct(score.correct_acc)}, n={score.n_error}+{score.n_correct})"


def _average(results: ProcessBenchResults, method: str) -> str:
    """The Avg cell: the mean F1, saying how many subsets it rests on when not all of them."""
    rests_on, total = len(results.averaged_subsets(method)), len(results.subsets)
    value = pct(results.average(method))
    return value if rests_on == total or rests_on == 0 else f"{value} of {rests_on}/{total}"


def print_processbench(console: Console, results: ProcessBenchResults) -> None:
    """Per method: F1 per subset (error acc / correct acc, sample counts) and Avg; then published rows."""
    table = Table()
    table.add_column("method")
    for subset in results.subsets:
        table.add_column(subset, justify="right")
    table.add_column("Avg", justify="right", style="bold")
    partial = False
    for method, per in results.rows.items():
        partial |= len(results.averaged_subsets(method)) < len(results.subsets)
        table.add_row(method, *[_cell(per[s]) for s in results.subsets], _average(results, method))
    caption = "cell: F1 (acc. on erroneous / acc. on correct, n = erroneous + correct samples)"
    if partial:
        caption += "; Avg 'of k/m': the mean over the k subsets with an F1"
    print_table(console, table, f"ProcessBench F1 — {results.model}, threshold {results.threshold}", caption)
    if results.failed:
        console.print(
            f"{len(results.failed)} sample(s) failed and count as wrong (their reasons are in processbench.json; "
            "--retry-failed tries them again)", highlight=False,
        )
    published = Table()
    published.add_column("model")
    published.add_column("Pass@1 / single", justify="right")
    published.add_column("Maj@8", justify="right")
    for row in PUBLISHED:
        published.add_row(row.name, f"{row.pass1:.1f}" if row.pass1 else "–", f"{row.maj8:.1f}" if row.maj8 else "–")
    print_table(console, published, "Published ProcessBench F1 Avg (for orientation; full benchmark)")
    scored = [(t, f) for t, f in results.sweep if f is not None]
    if scored:
        best_t, best_f = max(scored, key=lambda x: x[1])
        console.print(
            f"threshold sweep (Maj@{results.n}, from saved rewards): best Avg F1 {pct(best_f)} at {best_t:.2f}",
            highlight=False,
        )
    if results.paths_dependent:
        console.print(
            "paths depend on each other here (adaptive options or early stopping): only the run's own "
            f"Maj@{results.n} is reported, and the sweep only at thresholds the saved rewards decide exactly",
            highlight=False,
        )
    if results.compute:
        spent, fixed = results.compute["path_steps"], results.compute["path_steps_every_step"]
        saved = f" ({1 - spent / fixed:.0%} saved)" if fixed else ""
        console.print(
            f"compute: {spent} path-steps of the {fixed} that N={results.n} paths on every step take{saved}, "
            f"{results.compute['generated_tokens']:,} tokens generated",
            highlight=False,
        )


def print_bon(console: Console, results: BonResults) -> None:
    """Accuracy (%) per method and budget, then how our grading agrees with the data's labels."""
    budgets = range(1, results.responses + 1)
    console.print(
        f"[bold]Best-of-N[/] — {escape(results.model)}: {results.problems} problems × {results.responses} responses, "
        f"N={results.n} verification paths",
        highlight=False,
    )
    table = Table()
    table.add_column("method")
    for b in budgets:
        table.add_column(str(b), justify="right")
    for method, per in results.methods.items():
        table.add_row(method, *[pct(per[b]) for b in budgets], style="dim" if "@" in method else None)
    print_table(
        console, table, "accuracy (%) per budget",
        "method: step-reward aggregation / selection; budget b: mean over the chunks of b consecutive responses",
    )
    agreement = results.agreement
    if agreement.total:
        console.print(
            f"grading agrees with the shipped labels on {agreement.matches}/{agreement.total} responses "
            f"({pct(agreement.rate)}%)",
            highlight=False,
        )
