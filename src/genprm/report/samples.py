"""What the page shows per ProcessBench sample: every step, its rewards, and each path's turn.

Rewards are recomputed from the stored trajectories with the same functions the evaluation uses
(``reward_matrix``, ``step_rewards_at``), so the colours agree with the figures; the prediction
shown is the one ``processbench.json`` recorded for the largest N.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from genprm.evaluation.metrics import step_rewards_at
from genprm.evaluation.scoring import reward_matrix, turns_by_step
from genprm.protocol.parse import analysis_of
from genprm.report.run import Json
from genprm.store import RunStore

Tone = Literal["yes", "no", "unknown", "absent"]
"""A verdict colour: reward at or above the threshold, below it, unreadable, or not verified."""

Trajectories = dict[int, list[dict[str, Any]]]


def tone_of(reward: float | None, threshold: float, *, verified: bool = True) -> Tone:
    if not verified:
        return "absent"
    if reward is None:
        return "unknown"
    return "yes" if reward >= threshold else "no"


def final_method(n: int) -> str:
    """The method whose prediction the page shows: Maj@N (Pass@1 when N is 1)."""
    return "Pass@1" if n <= 1 else f"Maj@{n}"


@dataclass(frozen=True)
class CodeView:
    """One code block a path ran (or, in code-no-exec mode, imagined) and its output."""

    round: int
    code: str
    output: str
    seconds: float
    executed: bool


@dataclass(frozen=True)
class PathView:
    """One path's turn on one step."""

    index: int
    verdict: str
    """The verdict written into the turn (sampled; it can disagree with the reward)."""
    reward: float | None
    tone: Tone
    analysis: str
    code: list[CodeView]
    text: str
    notes: list[str]


@dataclass(frozen=True)
class StepView:
    """One solution step with its Maj@N reward and every path's turn."""

    index: int
    text: str
    reward: float | None
    tone: Tone
    paths: list[PathView]
    predicted: bool
    """The predicted first error."""
    labelled: bool
    """The labelled first error."""


@dataclass(frozen=True)
class SampleView:
    """One ProcessBench sample: its label, our prediction and its steps."""

    key: str
    id: str
    subset: str
    label: int
    prediction: int | None
    critic: int | None
    problem: str
    steps: list[StepView]

    @property
    def correct(self) -> bool:
        return self.prediction == self.label


def sample_views(store: RunStore | None, results: Json, *, limit: int | None = None) -> list[SampleView]:
    """Views of the samples in ``processbench.json`` (at most ``limit`` per subset, in file order)."""
    n, threshold = int(results["n"]), float(results["threshold"])
    method = final_method(n)
    views = []
    for entry in first_per_subset(results.get("samples", []), limit):
        key = str(entry["key"])
        record = store.record(key) if store else None
        paths = store.paths(key, str(results["settings"]), n) if store else {}
        views.append(_sample_view(entry, record or {}, paths, n, threshold, method))
    return views


def first_per_subset(entries: Iterable[Json], limit: int | None) -> list[Json]:
    """The first ``limit`` entries of each subset, order kept (all of them when ``limit`` is None)."""
    taken: dict[str, int] = {}
    chosen = []
    for entry in entries:
        subset = str(entry.get("subset", ""))
        if limit is None or taken.get(subset, 0) < limit:
            taken[subset] = taken.get(subset, 0) + 1
            chosen.append(entry)
    return chosen


def _sample_view(
    entry: Json, record: Json, paths: Trajectories, n: int, threshold: float, method: str
) -> SampleView:
    texts = [str(s) for s in record.get("steps", [])] or [""] * int(entry.get("steps", 0))
    rewards = step_rewards_at(reward_matrix(paths, len(texts), n), n)
    label = int(entry["label"])
    prediction = entry.get("predictions", {}).get(method)
    steps = [
        _step_view(s, text, rewards[s], paths, threshold, predicted=s == prediction, labelled=s == label)
        for s, text in enumerate(texts)
    ]
    return SampleView(
        key=str(entry["key"]), id=str(entry.get("id", entry["key"])), subset=str(entry.get("subset", "")),
        label=label, prediction=prediction, critic=entry.get("critic"), problem=str(record.get("problem", "")),
        steps=steps,
    )


def _step_view(
    index: int, text: str, reward: float | None, paths: Trajectories, threshold: float, *,
    predicted: bool, labelled: bool,
) -> StepView:
    at_step = ((j, turns_by_step(trajectory).get(index)) for j, trajectory in sorted(paths.items()))
    turns = [_path_view(j, turn, threshold) for j, turn in at_step if turn is not None]
    tone = tone_of(reward, threshold, verified=bool(turns))
    return StepView(index, text, reward, tone, turns, predicted, labelled)


def _path_view(index: int, step: dict[str, Any], threshold: float) -> PathView:
    readable = bool(step.get("readable"))
    reward = step.get("reward") if readable else None
    text = str(step.get("text", ""))
    return PathView(
        index=index,
        verdict=str(step.get("verdict", "?")),
        reward=reward,
        tone=tone_of(reward, threshold),
        analysis=analysis_of(text),
        code=[_code_view(run) for run in step.get("code_runs", [])],
        text=text,
        notes=_notes(step),
    )


def _code_view(run: dict[str, Any]) -> CodeView:
    return CodeView(
        round=int(run.get("round", 0)), code=str(run.get("code", "")), output=str(run.get("output", "")),
        seconds=float(run.get("seconds", 0.0)), executed=bool(run.get("executed", True)),
    )


def _notes(step: dict[str, Any]) -> list[str]:
    """Why a path's turn is unusual: unreadable verdict, dropped verify part, cancelled, branched."""
    notes = []
    if step.get("unreadable_reason"):
        notes.append(f"unreadable: {step['unreadable_reason']}")
    if step.get("degraded"):
        notes.append(f"verify dropped ({step['degraded']})")
    if step.get("cancelled"):
        notes.append("cancelled")
    if step.get("branched_from") is not None:
        notes.append(f"history of path {step['branched_from']}")
    return notes
