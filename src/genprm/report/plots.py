"""The report's PNG plots, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Two curves the paper shows: ProcessBench F1 against the number of paths N (test-time scaling of
the verifier) and Best-of-N accuracy against the response budget, one line per method.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from genprm.errors import MissingDependencyError
from genprm.report.run import Json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

F1_VS_N = "f1_vs_n.png"
BON_VS_BUDGET = "bon_vs_budget.png"

Series = dict[str, list[tuple[float, float]]]
"""Line name -> (x, y) points (y in percent)."""


@dataclass(frozen=True)
class LinePlot:
    title: str
    xlabel: str
    ylabel: str
    series: Series
    emphasis: str | None = None
    """A line drawn thicker (the headline figure)."""
    dashed: frozenset[str] = field(default_factory=frozenset)
    """Lines drawn dashed (baselines)."""


def f1_vs_n(results: Json) -> LinePlot:
    """Avg and per-subset F1 at Pass@1, Maj@2 .. Maj@N (the critic row is not a point on this curve)."""
    rows, subsets = results["rows"], results["subsets"]
    ks = _path_counts(rows)
    series: Series = {"Avg": _points((k, results["average"].get(m)) for k, m in ks)}
    for subset in subsets:
        series[subset] = _points((k, rows[m].get(subset, {}).get("f1")) for k, m in ks)
    return LinePlot(
        f"ProcessBench F1 against paths N — {results['model']}", "paths N (Pass@1, Maj@N)", "F1 (%)",
        series, emphasis="Avg",
    )


def bon_vs_budget(results: Json) -> LinePlot:
    """Accuracy per budget for each method; the baselines (Pass@1, Maj@N, Pass@N) dashed."""
    series = {
        method: _points((int(budget), acc) for budget, acc in per.items())
        for method, per in results["methods"].items()
    }
    return LinePlot(
        f"Best-of-N accuracy against budget — {results['model']}", "responses (budget)", "accuracy (%)",
        series, dashed=frozenset(m for m in series if "@" in m),
    )


def draw(plot: LinePlot, path: Path) -> bool:
    """Save ``plot`` as a PNG; ``False`` (and no file) when it has no point to show."""
    figure = render(plot)
    if figure is None:
        return False
    figure.savefig(path, format="png")
    return True


def render(plot: LinePlot) -> Figure | None:
    """The matplotlib figure of ``plot`` (``None`` when it has no point to show)."""
    if not any(plot.series.values()):
        return None
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("matplotlib", "eval") from None
    figure = Figure(figsize=(8.5, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    palette = colormaps["tab10" if len(plot.series) <= 10 else "tab20"]
    axes.set_prop_cycle(color=[palette(i) for i in range(len(plot.series))])
    for name, points in plot.series.items():
        if points:
            xs, ys = zip(*points)
            axes.plot(
                xs, ys, marker="o", label=name, linewidth=2.6 if name == plot.emphasis else 1.3,
                linestyle="--" if name in plot.dashed else "-",
            )
    axes.set(title=plot.title, xlabel=plot.xlabel, ylabel=plot.ylabel)
    axes.set_xticks(sorted({x for points in plot.series.values() for x, _ in points}))
    axes.set_ylim(*PERCENT_AXIS)
    axes.set_yticks(range(0, 101, 20))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure


PERCENT_AXIS = (-2.0, 102.0)
"""Every plot here shows percentages: the whole 0–100 range (a little room past both ends keeps
markers there whole), so that a flat line at 0 reads as 0, not as noise around it."""


def _path_counts(rows: Mapping[str, object]) -> list[tuple[int, str]]:
    """``(k, method)`` for Pass@1 and every Maj@k row, by k."""
    ks = [(1, m) if m == "Pass@1" else (int(m[4:]), m) for m in rows if m == "Pass@1" or m.startswith("Maj@")]
    return sorted(ks)


def _points(pairs: Iterable[tuple[int, float | None]]) -> list[tuple[float, float]]:
    """Points in percent, leaving out figures that rest on no samples (``None``)."""
    return [(float(x), 100 * float(y)) for x, y in pairs if y is not None]
