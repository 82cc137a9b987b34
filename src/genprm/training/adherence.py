"""Format adherence of a verifier, from an evaluation run's store: does it write GenPRM's turns?

A trained verifier should, on every step, write its analysis and close ``</analyze>`` itself, then
write code that runs, then reach ``<output>`` (the judgement) on its own. The verifier forces the
verdict either way, so the F1 alone does not show whether the format was learned. A path-step
*adheres* when all three hold; this module counts them over the paths a run stored.

How each part is read from a stored turn (:class:`genprm.verifier.records.PathStep`):

- reached the verdict: ``degraded`` is empty (no fallback to analysis-only);
- ran code: at least one code run with non-empty code;
- closed the analysis: not degraded, or it ran code, or the verify stage called the engine (more
  than the analysis call and the verdict call), since the verify stage starts only after
  ``</analyze>``.

Cancelled path-steps (``--stop-at-first-error``) are left out. Run
``python -m genprm.training.adherence RUN [RUN ...]`` for the before/after table of ProcessBench runs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genprm.store import STORE_FILE, RunStore

PROCESSBENCH_FILE = "processbench.json"


@dataclass
class FormatAdherence:
    """Counts over path-steps; ``share`` turns one into a fraction."""

    path_steps: int = 0
    closed_analysis: int = 0
    ran_code: int = 0
    reached_verdict: int = 0
    adherent: int = 0
    readable: int = 0
    degraded: dict[str, int] = field(default_factory=dict)

    def add(self, turn: Mapping[str, Any]) -> None:
        """Count one stored path-step (a ``PathStep`` as a dict)."""
        if turn.get("cancelled"):
            return
        degraded = turn.get("degraded")
        ran_code = any(str(run.get("code", "")).strip() for run in turn.get("code_runs") or [])
        reached = not degraded
        closed = reached or ran_code or int(turn.get("engine_calls", 0)) > 2
        self.path_steps += 1
        self.closed_analysis += closed
        self.ran_code += ran_code
        self.reached_verdict += reached
        self.adherent += closed and ran_code and reached
        self.readable += bool(turn.get("readable"))
        if degraded:
            self.degraded[str(degraded)] = self.degraded.get(str(degraded), 0) + 1

    def share(self, count: int) -> float | None:
        return count / self.path_steps if self.path_steps else None

    @property
    def adherence(self) -> float | None:
        return self.share(self.adherent)

    @property
    def readable_rate(self) -> float | None:
        return self.share(self.readable)


def count_adherence(turns: Iterable[Mapping[str, Any]]) -> FormatAdherence:
    counts = FormatAdherence()
    for turn in turns:
        counts.add(turn)
    return counts


def run_adherence(run: str | Path, *, settings: str | None = None, n: int | None = None) -> FormatAdherence:
    """Adherence over the paths a run folder's store holds.

    ``settings``/``n`` default to those of the run's ``processbench.json`` when it has one (so the
    counts cover exactly the paths its figures rest on), else every stored path.
    """
    folder = Path(run)
    figures = _figures(folder)
    if figures is not None:
        settings = settings or figures.get("settings")
        n = n or figures.get("n")
    if not (folder / STORE_FILE).is_file():
        raise FileNotFoundError(f"{folder} holds no {STORE_FILE}")
    with RunStore(folder) as store:
        return count_adherence(_turns(store, settings, n))


def _turns(store: RunStore, settings: str | None, n: int | None) -> Iterable[Mapping[str, Any]]:
    for trajectory in store.all_paths(settings, n):
        yield from trajectory


def _figures(folder: Path) -> dict[str, Any] | None:
    path = folder / PROCESSBENCH_FILE
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def before_after(runs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """One row per ProcessBench run: model, N, F1 (Avg at Maj@N and Pass@1), readable rate, adherence."""
    rows = []
    for run in runs:
        figures = _figures(Path(run)) or {}
        n = int(figures.get("n", 1))
        average = figures.get("average", {})
        counts = run_adherence(run)
        rows.append({
            "run": str(run), "model": figures.get("model"), "n": n,
            "f1_maj": average.get(f"Maj@{n}") if n > 1 else average.get("Pass@1"),
            "f1_pass1": average.get("Pass@1"), "readable": counts.readable_rate, "adherence": counts.adherence,
            "closed_analysis": counts.share(counts.closed_analysis), "ran_code": counts.share(counts.ran_code),
            "reached_verdict": counts.share(counts.reached_verdict), "path_steps": counts.path_steps,
            "degraded": counts.degraded,
        })
    return rows


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| run | model | N | F1 Maj@N | F1 Pass@1 | readable % | adherence % | closed analyze % | ran code % "
            "| reached verdict % | path-steps |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [
        f"| {r['run']} | {r['model']} | {r['n']} | {_pct(r['f1_maj'])} | {_pct(r['f1_pass1'])} | {_pct(r['readable'])} "
        f"| {_pct(r['adherence'])} | {_pct(r['closed_analysis'])} | {_pct(r['ran_code'])} "
        f"| {_pct(r['reached_verdict'])} | {r['path_steps']} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Before/after table of ProcessBench runs: F1, readable "
                                     "verdicts and format adherence, from each run's store.")
    parser.add_argument("runs", nargs="+", type=Path, help="Run folders of `genprm eval processbench`.")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON instead of a table.")
    args = parser.parse_args(argv)
    rows = before_after(args.runs)
    print(json.dumps(rows, indent=1) if args.json else markdown_table(rows))


if __name__ == "__main__":
    main()

