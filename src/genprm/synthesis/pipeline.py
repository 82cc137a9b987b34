"""The whole synthesis pipeline: the models of the three roles and the six stages in order.

Roles: the *policy* writes solutions, the *completer* rolls them out (the paper: another model;
default here: the policy), the *teacher* critiques. Each is any engine; a model named by two roles
on the same engine with the same options is loaded once (:class:`~genprm.executor.Roles`, re-exported
here with :class:`~genprm.executor.RoleSpec`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from genprm.evaluation.chat import ChatModel
from genprm.executor import Executor, LocalExecutor, Resources, Roles, RoleSpec
from genprm.synthesis.consensus import FilterSettings
from genprm.synthesis.conversation import ExportSettings
from genprm.synthesis.critique import CritiqueSettings
from genprm.synthesis.labels import LabelSettings
from genprm.synthesis.problems import Problem, Skipped
from genprm.synthesis.rollouts import RolloutSettings
from genprm.synthesis.solutions import SolutionSettings
from genprm.synthesis.stages import ProgressFn, StageReport, _quiet, run_labels, run_rollouts, run_solutions
from genprm.synthesis.store import SynthStore
from genprm.synthesis.teacher_stages import run_critiques, run_export, run_filter

ROLES = ("policy", "completer", "teacher")
__all__ = ["ROLES", "ExecutorFor", "RoleSpec", "Roles", "SynthSettings", "local_executor", "run_pipeline",
           "units_in_flight"]


@dataclass(frozen=True)
class SynthSettings:
    """Every stage's settings; each default is the paper's (or the released code's where it is silent)."""

    solutions: SolutionSettings = field(default_factory=SolutionSettings)
    rollouts: RolloutSettings = field(default_factory=RolloutSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)
    critique: CritiqueSettings = field(default_factory=CritiqueSettings)
    filter: FilterSettings = field(default_factory=FilterSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    seed: int = 0


def units_in_flight(max_batch: int, concurrency: int, *, conversation: bool = False) -> int:
    """Units one engine gets at once: ``concurrency`` on a batching engine. On one that runs a
    request at a time (llama.cpp) 2, so grading overlaps generation, or 1 for units that are
    conversations (a critique): interleaving them would evict each one's prefix from the engine's
    single KV cache and make every chunk compute its whole prompt again.
    """
    if max_batch > 1:
        return concurrency
    return 1 if conversation else min(concurrency, 2)


def local_executor(chat: ChatModel, concurrency: int, *, conversation: bool = False) -> Executor:
    """Threads for one stage on ``chat``'s engine, :func:`units_in_flight` of them."""
    return LocalExecutor(units_in_flight(chat.engine.max_batch, concurrency, conversation=conversation))


class ExecutorFor(Protocol):
    """Where a stage's units run, given its model: :func:`local_executor`, or replicas on Ray
    (:func:`genprm.cli.cluster.replica_executor`).
    """

    def __call__(self, chat: ChatModel, concurrency: int, *, conversation: bool = False) -> Executor: ...


def run_pipeline(
    store: SynthStore,
    records: Iterable[Problem | Skipped],
    roles: Resources,
    settings: SynthSettings,
    concurrency: int,
    out: Path,
    on_progress: ProgressFn = _quiet,
    executor_for: ExecutorFor = local_executor,
) -> Iterator[StageReport]:
    """Run the six stages in order, yielding each stage's report as it ends."""
    policy = roles.chat("policy")
    yield run_solutions(store, records, policy, settings.solutions, executor_for(policy, concurrency), on_progress)
    completer = roles.chat("completer")
    yield run_rollouts(store, completer, settings.rollouts, executor_for(completer, concurrency), on_progress)
    yield run_labels(store, settings.labels, on_progress)
    teacher = roles.chat("teacher")
    yield run_critiques(store, teacher, settings.critique, settings.filter.critiques,
                        executor_for(teacher, concurrency, conversation=True), seed=settings.seed,
                        on_progress=on_progress)
    yield run_filter(store, settings.filter, on_progress)
    yield run_export(store, settings.export, out, on_progress)
