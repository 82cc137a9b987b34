"""Write ``RUN/report/index.html``: one self-contained page, with its PNG plots beside it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import DictLoader, Environment, StrictUndefined
from markupsafe import Markup

from genprm.report import plots
from genprm.report.run import Json, RunResults, load_run
from genprm.report.samples import final_method, sample_views
from genprm.report.synthesis import is_synthesis_run, write_synthesis_report
from genprm.report.templates import SCRIPT, STYLE, TEMPLATES
from genprm.store import RunStore

REPORT_DIR = "report"
PAGE_FILE = "index.html"

Configs = dict[str, tuple[str, dict[str, Any]]]
"""Store settings key -> (model, the settings that differ from the defaults)."""


def write_report(run_dir: str | Path, out: str | Path | None = None, *, limit: int | None = None) -> Path:
    """Write the report of ``run_dir`` (into ``out``, default ``RUN/report``); returns the page's path.

    ``limit`` keeps at most that many samples per subset on the page (the figures always use all).
    A ``genprm synth`` run folder gets the synthesis page instead (``limit``: solutions on the page).
    """
    if is_synthesis_run(run_dir):
        return write_synthesis_report(run_dir, Path(out or Path(run_dir) / REPORT_DIR) / PAGE_FILE, limit=limit)
    run = load_run(run_dir)
    folder = Path(out) if out is not None else run.dir / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    drawn = draw_plots(run, folder)
    page = folder / PAGE_FILE
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(render_page(run, drawn, limit=limit), encoding="utf-8")
    tmp.replace(page)
    return page


def draw_plots(run: RunResults, folder: Path) -> dict[str, str]:
    """Draw the plots the run has data for; plot name -> file name (relative to the page)."""
    wanted = []
    if run.processbench is not None:
        wanted.append(("f1_vs_n", plots.F1_VS_N, plots.f1_vs_n(run.processbench)))
    if run.bon is not None:
        wanted.append(("bon_vs_budget", plots.BON_VS_BUDGET, plots.bon_vs_budget(run.bon)))
    return {name: file for name, file, plot in wanted if plots.draw(plot, folder / file)}


def render_page(run: RunResults, drawn: dict[str, str], *, limit: int | None = None) -> str:
    """The page's HTML; every value that comes from the run is escaped by the template."""
    with _open_store(run) as store:
        configs: Configs = store.settings() if store else {}
        pb = run.processbench
        samples = sample_views(store, pb, limit=limit) if pb else []
    context = {
        "run_name": run.dir.resolve().name,
        "run_dir": str(run.dir.resolve()),
        "facts": facts(run, configs),
        "pb": pb,
        "bon": run.bon,
        "refine": run.refine,
        "plots": drawn,
        "method": final_method(int(pb["n"])) if pb else "",
        "best_threshold": best_threshold(pb) if pb else None,
        "budgets": budgets(run.bon) if run.bon else [],
        "samples": samples,
        "total_samples": len(pb.get("samples", [])) if pb else 0,
        "has_store": run.store_path is not None,
        "style": Markup(STYLE),
        "script": Markup(SCRIPT),
    }
    return _environment().get_template("page").render(**context)


def facts(run: RunResults, configs: Configs) -> list[tuple[str, str]]:
    """The header: what was evaluated, with which model and settings."""
    rows = []
    if pb := run.processbench:
        rows.append(("ProcessBench", f"{pb['model']} · {len(pb.get('samples', []))} samples · N={pb['n']} paths · "
                     f"threshold {pb['threshold']} · subsets {', '.join(pb['subsets'])}"))
        rows.append(("settings", describe_settings(str(pb["settings"]), configs)))
    if bon := run.bon:
        rows.append(("Best-of-N", f"{bon['model']} · {bon.get('problems', '?')} problems · "
                     f"{bon.get('responses', '?')} responses · N={bon.get('n', '?')} paths"))
        if bon.get("settings"):
            rows.append(("settings", describe_settings(str(bon["settings"]), configs)))
    if refine := run.refine:
        rows.append(("refine", f"policy {refine.get('policy', '?')} · verifier {refine.get('verifier', '?')} · "
                     f"{refine.get('rounds', len(refine['accuracy']) - 1)} rounds · "
                     f"{refine.get('problems', '?')} problems"))
    return rows


def describe_settings(key: str, configs: Configs) -> str:
    """``key: model, option=value, ...`` (the options that differ from the defaults)."""
    if key not in configs:
        return key
    model, config = configs[key]
    options = ", ".join(f"{name}={value}" for name, value in sorted(config.items())) or "defaults"
    return f"{key}: {model}, {options}"


def best_threshold(results: Json) -> float | None:
    """The sweep's threshold with the best Avg F1 (the first of ties)."""
    scored = [p for p in results.get("sweep", []) if p.get("f1_avg") is not None]
    return max(scored, key=lambda p: p["f1_avg"])["threshold"] if scored else None


def budgets(results: Json) -> list[str]:
    """Every budget any method reports, in increasing order (JSON keys are strings)."""
    return sorted({b for per in results["methods"].values() for b in per}, key=int)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def first_error(index: int | None) -> str:
    """A first-error index as words: -1 is "no error", ``None`` "unparsed" (a critic's bad answer)."""
    if index is None:
        return "unparsed"
    return "no error" if index < 0 else f"step {index}"


@cache
def _environment() -> Environment:
    env = Environment(
        loader=DictLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=pct, number=number, first_error=first_error)
    return env


@contextmanager
def _open_store(run: RunResults) -> Iterator[RunStore | None]:
    """The run's store if it has one (never creates one where there is none)."""
    if run.store_path is None:
        yield None
        return
    with RunStore(run.store_path) as store:
        yield store
