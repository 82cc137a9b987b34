"""The whole synthesis pipeline: the models of the three roles and the six stages in order.

Roles: the *policy* writes solutions, the *completer* rolls them out (the paper: another model;
default here: the policy), the *teacher* critiques. Each is any engine; a model named by two roles
on the same engine with the same options is loaded once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genprm.engines import Engine, load_engine
from genprm.evaluation.chat import ChatModel
from genprm.executor import Executor, LocalExecutor
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


@dataclass(frozen=True)
class RoleSpec:
    """How to start one role's model."""

    engine: str
    model: str
    options: tuple[tuple[str, Any], ...] = ()
    chat_template: str | None = None
    """A Jinja template overriding the model's own."""

    @property
    def loads(self) -> tuple[str, str, tuple[tuple[str, Any], ...]]:
        """What identifies the loaded engine (the template is applied per role)."""
        return self.engine, self.model, self.options


class Roles:
    """The role models, each engine loaded on first use and only once; close() releases them."""

    def __init__(self, specs: dict[str, RoleSpec]) -> None:
        self.specs = specs
        self._engines: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Engine] = {}
        self._stack = ExitStack()

    def chat(self, role: str) -> ChatModel:
        spec = self.specs[role]
        engine = self._engines.get(spec.loads)
        if engine is None:
            engine = self._stack.enter_context(load_engine(spec.engine, spec.model, **dict(spec.options)))
            self._engines[spec.loads] = engine
        return ChatModel(engine, spec.chat_template)

    @property
    def loaded(self) -> int:
        return len(self._engines)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Roles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def local_executor(chat: ChatModel, concurrency: int, *, conversation: bool = False) -> Executor:
    """Threads for one stage on ``chat``'s engine: ``concurrency`` units on a batching engine. On one
    that runs a request at a time (llama.cpp) 2, so grading overlaps generation, or 1 for units that
    are conversations (a critique): interleaving them would evict each one's prefix from the engine's
    single KV cache and make every chunk compute its whole prompt again.
    """
    if chat.engine.max_batch > 1:
        return LocalExecutor(concurrency)
    return LocalExecutor(1 if conversation else min(concurrency, 2))


def run_pipeline(
    store: SynthStore,
    records: Iterable[Problem | Skipped],
    roles: Roles,
    settings: SynthSettings,
    concurrency: int,
    out: Path,
    on_progress: ProgressFn = _quiet,
) -> Iterator[StageReport]:
    """Run the six stages in order, yielding each stage's report as it ends."""
    policy = roles.chat("policy")
    yield run_solutions(store, records, policy, settings.solutions, local_executor(policy, concurrency), on_progress)
    completer = roles.chat("completer")
    yield run_rollouts(store, completer, settings.rollouts, local_executor(completer, concurrency), on_progress)
    yield run_labels(store, settings.labels, on_progress)
    teacher = roles.chat("teacher")
    yield run_critiques(store, teacher, settings.critique, settings.filter.critiques,
                        local_executor(teacher, concurrency, conversation=True), seed=settings.seed,
                        on_progress=on_progress)
    yield run_filter(store, settings.filter, on_progress)
    yield run_export(store, settings.export, out, on_progress)
