"""The teacher-side stages as store-backed drivers: critique, consensus filter and export.

``critique`` runs :func:`~genprm.synthesis.critique.critique_solution` for every labelled solution
× ``--critiques N`` (critique ``i`` seeded from the solution and ``i``, each in its own sandbox
session, created here and closed when it ends). ``filter`` decides each solution whose N critiques
are all stored (one still missing leaves it pending, never wrongly dropped). ``export`` turns each
kept solution into a conversation from the first agreeing critique that converts cleanly and
writes them all; a solution none converts is dropped with the converter's reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genprm.evaluation.chat import ChatModel
from genprm.executor import Executor, HeldModels, Resources
from genprm.sandbox import CodeSession, SandboxConfig
from genprm.synthesis import keys
from genprm.synthesis.consensus import FilterSettings, decide
from genprm.synthesis.conversation import ConversationError, ExportSettings, build_conversation
from genprm.synthesis.critique import CritiqueSettings, TeacherCritique, critique_solution
from genprm.synthesis.export_files import write_conversations
from genprm.synthesis.labels import labels_up_to_first_error
from genprm.synthesis.problems import Problem
from genprm.synthesis.stages import ProgressFn, StageReport, _quiet, labelled_solutions, required_stage
from genprm.synthesis.store import StageRecord, SynthStore
from genprm.verifier.path import derive_seed


@dataclass(frozen=True)
class CritiqueUnit:
    problem: Problem
    steps: tuple[str, ...]
    solution: str
    index: int


def critique_seed(seed: int, solution: str, index: int) -> int:
    return derive_seed(seed, "synth-critique", solution, index)


@dataclass(frozen=True)
class CritiqueWork:
    """One teacher critique, its code run in a sandbox session of the worker that runs it."""

    settings: CritiqueSettings
    seed: int
    sandbox: SandboxConfig

    def __call__(self, resources: Resources, unit: CritiqueUnit) -> TeacherCritique:
        teacher = resources.chat("teacher")
        with CodeSession(self.sandbox) as session:
            return critique_solution(teacher.engine, teacher.template, unit.problem.problem, unit.steps,
                                     self.settings, seed=critique_seed(self.seed, unit.solution, unit.index),
                                     run_code=session.run)


def run_critiques(
    store: SynthStore,
    teacher: ChatModel,
    settings: CritiqueSettings,
    critiques: int,
    executor: Executor,
    *,
    seed: int = 0,
    sandbox: SandboxConfig | None = None,
    on_progress: ProgressFn = _quiet,
) -> StageReport:
    """Critique every labelled solution up to ``critiques`` times (only the missing ones run)."""
    solutions = labelled_solutions(store, "critique")
    key = keys.teacher_key(teacher, settings, seed)
    store.set_stage("critique", StageRecord(key, {**settings.__dict__, "critiques": critiques, "seed": seed},
                                            {"label": required_stage(store, "label", "critique").key},
                                            teacher.engine.model_id))
    report = StageReport("critique")
    stored = store.critiques(key)
    units = []
    for problem, steps, solution, _labels in solutions:
        for i in range(critiques):
            if i in stored.get(solution, {}):
                report.reused += 1
            else:
                units.append(CritiqueUnit(problem, tuple(steps), solution, i))
    sandbox = sandbox or SandboxConfig(timeout_s=settings.code_timeout_s)
    total, finished = len(units), 0
    on_progress("critique", finished, total)

    work = CritiqueWork(settings, seed, sandbox)
    for outcome in executor.run(work, units, HeldModels(teacher=teacher)):
        unit = outcome.unit
        finished += 1
        if outcome.ok and outcome.value is not None:
            store.put_critique(unit.solution, key, unit.index, outcome.value.to_dict())
            report.computed += 1
        else:
            store.put_failure("critique", key, f"{unit.solution}:{unit.index}", outcome.error or "no result")
            report.failed += 1
        on_progress("critique", finished, total)
    return report


def run_filter(store: SynthStore, settings: FilterSettings, on_progress: ProgressFn = _quiet) -> StageReport:
    """Decide every labelled solution whose ``settings.critiques`` critiques are all stored."""
    solutions = labelled_solutions(store, "filter")
    label, teacher = required_stage(store, "label", "filter"), required_stage(store, "critique", "filter")
    key = keys.filter_key(label.key, teacher.key, settings)
    store.set_stage("filter", StageRecord(key, settings.to_dict(), {"label": label.key, "critique": teacher.key}))
    report = StageReport("filter")
    existing = store.verdicts(key)
    stored = store.critiques(teacher.key)
    pending = 0
    for done, (_problem, steps, solution, labels) in enumerate(solutions, start=1):
        if solution in existing:
            report.reused += 1
            continue
        found = stored.get(solution, {})
        if any(i not in found for i in range(settings.critiques)):
            pending += 1
            continue
        indices = [found[i]["index"] for i in range(settings.critiques)]
        verdict = decide(int(labels["first_error"]), len(steps), indices, settings.vote)
        store.put_verdict(solution, key, verdict.to_dict())
        report.computed += 1
        on_progress("filter", done, len(solutions))
    on_progress("filter", len(solutions), len(solutions))
    report.notes["pending"] = pending
    return report


def run_export(
    store: SynthStore, settings: ExportSettings, out: Path, on_progress: ProgressFn = _quiet
) -> StageReport:
    """Write one conversation per kept solution to ``out`` (.parquet or .jsonl); returns the counts."""
    solutions = labelled_solutions(store, "export")
    filter_ = required_stage(store, "filter", "export")
    teacher = required_stage(store, "critique", "export")
    key = keys.export_key(filter_.key, settings)
    store.set_stage("export", StageRecord(key, {**settings.__dict__, "out": str(out)}, {"filter": filter_.key}))
    report = StageReport("export")
    verdicts = store.verdicts(filter_.key)
    stored = store.critiques(teacher.key)
    existing = store.exports(key)
    rows: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    for done, (problem, steps, solution, labels) in enumerate(solutions, start=1):
        verdict = verdicts.get(solution)
        if verdict is None or not verdict["kept"]:
            continue
        judged = labels_up_to_first_error(labels["labels"])
        outcome = existing.get(solution)
        conversation: list[dict[str, str]] | None = None
        failure: ConversationError | None = None
        for index in verdict["agreeing"]:
            try:
                conversation = build_conversation(problem.problem, steps, stored[solution][index]["text"], judged,
                                                  settings)
                break
            except ConversationError as exc:
                failure = failure or exc
        if outcome is None:
            outcome = ({"kept": True, "reason": "kept", "turns": (len(conversation) - 1) // 2}
                       if conversation is not None else
                       {"kept": False, "reason": failure.reason if failure else "no-critique-text",
                        "detail": str(failure) if failure else ""})
            store.put_export(solution, key, outcome)
            report.computed += 1
        else:
            report.reused += 1
        if conversation is None:
            reasons[outcome["reason"]] += 1
        else:
            rows.append({"conversations": conversation, "problem_id": problem.id, "problem_key": problem.key,
                         "solution_key": solution, "first_error": int(labels["first_error"]),
                         "labels": judged, "source_run": str(store.run_dir)})
        on_progress("export", done, len(solutions))
    report.notes["written"] = write_conversations(rows, out)
    report.notes["dropped"] = dict(reasons)
    report.notes["out"] = str(out)
    return report
