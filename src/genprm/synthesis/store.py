"""Where a synthesis run keeps everything: the run folder's ``store.sqlite``, under synth kinds.

The same :class:`~genprm.store.RunStore` file and conventions as evaluation runs: each unit's result
is one idempotent insert in its own transaction (a ``kill -9`` loses at most the units in flight,
never half a record, and a rerun never duplicates), keyed by content (problem, solution) and by a
hash of the model and the settings that shape it, so other settings live beside earlier ones and
larger settings (more problems, a larger K, more critiques) compute only what is missing.

Kinds (``sample`` / ``settings`` / ``slot`` -> value):

=====================  ======================================================================
``synth-problem``      problem key / ``""`` / ``""`` -> :class:`Problem` fields
``synth-skipped``      record key / ``""`` / ``""`` -> :class:`Skipped` fields
``synth-draws``        problem key / draw key / round -> ``{"seed", "draws": [Draw], "prompt_tokens"}``
``synth-selection``    problem key / selection key / ``""`` -> :class:`Selection`
``synth-rollouts``     solution key (problem key for t = 0) / completer key / ``"t:start"`` ->
                       ``{"correct": [0|1, ...], "completion_tokens", "prompt_tokens", "lengths", "seconds"}``
``synth-labels``       solution key / label key / ``""`` -> ``{"problem", "k", "mc_s1", **StepLabels}``
``synth-critique``     solution key / teacher key / critique index -> ``TeacherCritique.to_dict()``
``synth-consensus``    solution key / filter key / ``""`` -> :class:`~genprm.synthesis.consensus.Verdict`
``synth-export``       solution key / export key / ``""`` -> ``{"kept", "reason", "turns"}``
``synth-failure``      unit id / stage key / stage -> ``{"reason", "time"}`` (the unit is retried next run;
                       unit ids: ``problem:round``, ``sample:t:start``, ``solution:index``)
=====================  ======================================================================

Each stage records the key and settings it last ran with in the meta table (``synth.stage.NAME``);
a later stage reads its inputs under those keys, so one stage can be rerun with other settings.

Read API (for ``genprm synth stats``, ``export`` and the report's synthesis page):
:meth:`SynthStore.problems`, :meth:`skipped`, :meth:`stage`, :meth:`selections` (problem key ->
:class:`Selection`), :meth:`draw_rounds`, :meth:`rollout_scores`, :meth:`labels`, :meth:`critiques`,
:meth:`verdicts`, :meth:`exports`, :meth:`failures` and :meth:`solution_views`, which joins
everything one solution has for a page.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genprm.store import RunStore
from genprm.synthesis.problems import Problem, Skipped
from genprm.synthesis.solutions import Draw, Selection, Solution

PROBLEM = "synth-problem"
SKIPPED = "synth-skipped"
DRAWS = "synth-draws"
SELECTION = "synth-selection"
ROLLOUTS = "synth-rollouts"
LABELS = "synth-labels"
CRITIQUE = "synth-critique"
CONSENSUS = "synth-consensus"
EXPORT = "synth-export"
FAILURE = "synth-failure"

STAGES = ("solutions", "rollouts", "label", "critique", "filter", "export")


@dataclass(frozen=True)
class StageRecord:
    """What a stage last ran with: its store key, the keys of its inputs, and its settings."""

    key: str
    settings: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "settings": self.settings, "inputs": self.inputs, "model": self.model}


@dataclass(frozen=True)
class RolloutChunk:
    """One request's rollouts of a prefix: samples ``start .. start + len(correct) - 1``."""

    start: int
    correct: list[int]
    completion_tokens: int = 0
    prompt_tokens: int = 0
    lengths: int = 0
    """Rollouts cut by the token budget (graded like the others: no answer means wrong)."""
    seconds: float = 0.0
    """Wall time of the request (with others in flight on a batching engine)."""


@dataclass
class SolutionView:
    """Everything the run holds about one solution (for the report page)."""

    problem: Problem
    solution: Solution
    mc_s1: float | None
    labels: dict[str, Any] | None
    critiques: dict[int, dict[str, Any]]
    verdict: dict[str, Any] | None
    export: dict[str, Any] | None


class SynthStore:
    """A synthesis run's store; one writer (the stage driver), any number of readers."""

    def __init__(self, run: str | Path) -> None:
        self.runs = RunStore(run)
        self.run_dir = self.runs.run_dir

    def close(self) -> None:
        self.runs.close()

    def __enter__(self) -> SynthStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stages ---------------------------------------------------------------------------------

    def set_stage(self, name: str, record: StageRecord) -> None:
        self.runs.set_meta(f"synth.stage.{name}", record.to_dict())

    def stage(self, name: str) -> StageRecord | None:
        value = self.runs.meta(f"synth.stage.{name}")
        if not isinstance(value, dict):
            return None
        return StageRecord(value["key"], value["settings"], value.get("inputs", {}), value.get("model"))

    # -- problems -------------------------------------------------------------------------------

    def put_problem(self, problem: Problem) -> None:
        self.runs.put_item(PROBLEM, problem.key, "", problem.to_dict())

    def put_skipped(self, skipped: Skipped) -> None:
        self.runs.put_item(SKIPPED, skipped.key, "", skipped.__dict__)

    def problems(self) -> dict[str, Problem]:
        return {key: Problem.from_dict(v) for key, _, _, v in self.runs.items(PROBLEM)}

    def skipped(self) -> list[Skipped]:
        return [Skipped(**v) for _, _, _, v in self.runs.items(SKIPPED)]

    # -- stage 1 --------------------------------------------------------------------------------

    def put_draws(self, problem_key: str, draw_key: str, round_: int, value: dict[str, Any]) -> None:
        self.runs.put_item(DRAWS, problem_key, draw_key, value, slot=str(round_))

    def draw_rounds(self, draw_key: str) -> dict[str, dict[int, dict[str, Any]]]:
        """Problem key -> round -> stored round (``draws`` as :class:`Draw` records)."""
        rounds: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for problem, _, slot, value in self.runs.items(DRAWS, draw_key):
            rounds[problem][int(slot)] = {**value, "draws": [Draw.from_dict(d) for d in value["draws"]]}
        return dict(rounds)

    def put_selection(self, problem_key: str, selection_key: str, selection: Selection) -> None:
        self.runs.put_item(SELECTION, problem_key, selection_key, selection.to_dict())

    def selections(self, selection_key: str) -> dict[str, Selection]:
        return {p: Selection.from_dict(v) for p, _, _, v in self.runs.items(SELECTION, selection_key)}

    # -- stage 2 --------------------------------------------------------------------------------

    def put_rollouts(self, sample_key: str, completer_key: str, t: int, chunk: RolloutChunk) -> None:
        value = {"correct": chunk.correct, "completion_tokens": chunk.completion_tokens,
                 "prompt_tokens": chunk.prompt_tokens, "lengths": chunk.lengths, "seconds": chunk.seconds}
        self.runs.put_item(ROLLOUTS, sample_key, completer_key, value, slot=f"{t}:{chunk.start}")

    def rollout_chunks(self, completer_key: str) -> dict[tuple[str, int], list[RolloutChunk]]:
        """(solution key, t) -> its stored chunks in sample order."""
        chunks: dict[tuple[str, int], list[RolloutChunk]] = defaultdict(list)
        for sample, _, slot, value in self.runs.items(ROLLOUTS, completer_key):
            t, start = (int(x) for x in slot.split(":"))
            chunks[(sample, t)].append(RolloutChunk(start, list(value["correct"]), value["completion_tokens"],
                                                    value["prompt_tokens"], value.get("lengths", 0),
                                                    value.get("seconds", 0.0)))
        for found in chunks.values():
            found.sort(key=lambda c: c.start)
        return dict(chunks)

    # -- labels, critiques, consensus, export ---------------------------------------------------

    def put_labels(self, solution_key: str, label_key: str, value: dict[str, Any]) -> None:
        self.runs.put_item(LABELS, solution_key, label_key, value)

    def labels(self, label_key: str) -> dict[str, dict[str, Any]]:
        return {s: v for s, _, _, v in self.runs.items(LABELS, label_key)}

    def put_critique(self, solution_key: str, teacher_key: str, index: int, value: dict[str, Any]) -> None:
        self.runs.put_item(CRITIQUE, solution_key, teacher_key, value, slot=str(index))

    def critiques(self, teacher_key: str) -> dict[str, dict[int, dict[str, Any]]]:
        """Solution key -> critique index -> stored critique."""
        found: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for solution, _, slot, value in self.runs.items(CRITIQUE, teacher_key):
            found[solution][int(slot)] = value
        return dict(found)

    def put_verdict(self, solution_key: str, filter_key: str, value: dict[str, Any]) -> None:
        self.runs.put_item(CONSENSUS, solution_key, filter_key, value)

    def verdicts(self, filter_key: str) -> dict[str, dict[str, Any]]:
        return {s: v for s, _, _, v in self.runs.items(CONSENSUS, filter_key)}

    def put_export(self, solution_key: str, export_key: str, value: dict[str, Any]) -> None:
        self.runs.put_item(EXPORT, solution_key, export_key, value)

    def exports(self, export_key: str) -> dict[str, dict[str, Any]]:
        return {s: v for s, _, _, v in self.runs.items(EXPORT, export_key)}

    # -- failures -------------------------------------------------------------------------------

    def put_failure(self, stage: str, stage_key: str, unit: str, reason: str) -> None:
        """A unit that failed; it has no result, so the next run of the stage tries it again."""
        self.runs.put_item(FAILURE, unit, stage_key, {"reason": reason, "time": time.time()}, slot=stage)

    def failures(self, stage: str | None = None) -> list[dict[str, Any]]:
        """Every failure recorded (``unit``, ``stage``, ``key``, ``reason``, ``time``), oldest first, with
        ``resolved`` saying whether a later run has since stored the unit's result.
        """
        found = []
        for unit, key, slot, value in self.runs.items(FAILURE):
            if stage is None or slot == stage:
                found.append({"unit": unit, "stage": slot, "key": key, **value,
                              "resolved": self._resolved(slot, key, unit)})
        return found

    def _resolved(self, stage: str, key: str, unit: str) -> bool:
        sample, _, slot = unit.partition(":")
        kind = {"solutions": DRAWS, "rollouts": ROLLOUTS, "critique": CRITIQUE}.get(stage)
        return kind is not None and self.runs.item(kind, sample, key, slot) is not None

    # -- joined views ---------------------------------------------------------------------------

    def solution_views(self) -> Iterator[SolutionView]:
        """Every selected solution of the latest stage keys with what later stages stored for it."""
        selection = self.stage("solutions")
        if selection is None:
            return
        problems = self.problems()
        label_stage, critique_stage, filter_stage, export_stage = (
            self.stage(s) for s in ("label", "critique", "filter", "export")
        )
        labels = self.labels(label_stage.key) if label_stage else {}
        critiques = self.critiques(critique_stage.key) if critique_stage else {}
        verdicts = self.verdicts(filter_stage.key) if filter_stage else {}
        exports = self.exports(export_stage.key) if export_stage else {}
        for problem_key, chosen in self.selections(selection.key).items():
            problem = problems.get(problem_key)
            if problem is None:
                continue
            for solution in chosen.solutions:
                yield SolutionView(problem, solution, chosen.mc_s1, labels.get(solution.key),
                                   critiques.get(solution.key, {}), verdicts.get(solution.key),
                                   exports.get(solution.key))
