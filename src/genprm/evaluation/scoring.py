"""Score samples with the verifier into a :class:`RunStore`, computing only the paths it lacks.

The evaluation commands share this: ProcessBench samples and Best-of-N responses are both
"a problem and its steps". A sample's result is its per-path trajectories; the reward of step s
at Maj@k is the mean of the readable rewards of paths 0..k-1 at s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genprm.engines.base import Engine
from genprm.errors import ConfigError
from genprm.evaluation.chat import ChatModel
from genprm.executor import Executor, HeldModels, Resources
from genprm.io import SolutionInput
from genprm.protocol.chat import template_fields
from genprm.store import RunStore, settings_key
from genprm.verifier.config import VerifyConfig
from genprm.verifier.records import ComputeUsage, SolutionFailure, SolutionResult
from genprm.verifier.scheduler import Scheduler, attempt, longest_first
from genprm.verifier.solution import SolutionVerifier

COMPUTE_KIND = "compute"
"""Store items holding each sample's :class:`ComputeUsage` (kept beside its paths)."""
FAILED_KIND = "failed"
"""Store items recording why a sample's verification failed (its latest attempt)."""

RewardMatrix = list[list[float | None]]
"""``matrix[step][path]``: a path's reward at a step; ``None`` when unreadable or not computed."""


@dataclass(frozen=True)
class ScoringProgress:
    done: int
    total: int
    reused: int
    """Samples whose paths were all in the store already (or whose failure is not retried)."""
    failed: int = 0
    """Samples whose verification failed in this call (recorded; the run goes on)."""
    failure: SolutionFailure | None = None
    """The sample that just failed, if this event is about one."""


Trajectory = list[dict[str, Any]]
"""One path's turns, a dict per step it verified, each naming its ``step`` (0-based)."""


def trajectories(result: SolutionResult) -> dict[int, Trajectory]:
    """Split a solution's result into one trajectory per path index.

    A path need not verify every step (``adaptive_n`` draws some paths first at a later step), so
    each turn carries the index of its step: readers go through :func:`turns_by_step`, never by
    position in the list.
    """
    per_path: dict[int, Trajectory] = {}
    for step in result.steps:
        for path in step.paths:
            per_path.setdefault(path.path, []).append({"step": step.index, **asdict(path)})
    return per_path


def turns_by_step(trajectory: Trajectory) -> dict[int, dict[str, Any]]:
    """A trajectory's turns keyed by their step index (turns stored without one are in step order)."""
    return {int(turn.get("step", position)): turn for position, turn in enumerate(trajectory)}


def reward_matrix(paths: dict[int, Trajectory], n_steps: int, n: int) -> RewardMatrix:
    """Rewards of paths 0..n-1 at every step (``None`` where unreadable or absent)."""
    matrix: RewardMatrix = [[None] * n for _ in range(n_steps)]
    for index, trajectory in paths.items():
        if index >= n:
            continue
        for s, turn in turns_by_step(trajectory).items():
            if s < n_steps and turn.get("readable") and turn.get("reward") is not None:
                matrix[s][index] = float(turn["reward"])
    return matrix


KEY_VERSION = 2
"""Bumped when what a key means changes; version 2 (the paper's reward by default, inert settings out,
the chat template in) changed every key once, so runs stored before it are not reused."""


def key_fields(config: VerifyConfig, template: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings that shape the store key: those differing from the defaults (so that a new
    option at its default keeps existing stores valid), without the ones that cannot change a result
    (:meth:`VerifyConfig.inert_fields`), plus ``template`` (``protocol.chat.template_fields``: a
    digest of a chat template that overrides the model's).

    With adaptive options or early stopping a path's work depends on the others
    (``config.paths_independent`` is false): the sample's paths are then computed, stored and reused
    together, and N is part of the key.
    """
    inert = config.inert_fields()
    fields = {k: v for k, v in config.model_dump(mode="json", exclude_defaults=True).items() if k not in inert}
    return {**fields, **(template or {}), "key_version": KEY_VERSION}


def path_settings_key(model_id: str, config: VerifyConfig, template: dict[str, str] | None = None) -> str:
    """The key a :class:`StoreScorer` of ``model_id``, ``config`` and ``template`` stores paths under."""
    return settings_key(model_id, key_fields(config, template), independent_paths=config.paths_independent)


def stored_models(store: RunStore, config: VerifyConfig, template: dict[str, str] | None = None) -> list[str]:
    """Models (engine model ids) with results in ``store`` under ``config``'s settings."""
    registered = store.settings()
    return sorted(
        {model for model, _ in registered.values() if path_settings_key(model, config, template) in registered}
    )


def stored_model(store: RunStore, config: VerifyConfig, hint: str, template: dict[str, str] | None = None) -> str:
    """The model whose results under ``config`` a run holds: the only one, or the one ``hint`` names
    (a model id, a path, or a built-in name without ``.gguf``).
    """
    models = stored_models(store, config, template)
    if len(models) == 1:
        return models[0]
    if not models:
        raise ConfigError("--run", str(store.run_dir), "holds no results with these settings (give the run's own "
                          "--mode, --max-step-tokens, --temperature, --seed and adaptive options)")
    named = Path(hint)
    matching = [m for m in models if m == hint or Path(m).name == named.name or Path(m).stem == named.name]
    if len(matching) == 1:
        return matching[0]
    raise ConfigError("--model", hint, f"the run holds results of {', '.join(models)} with these settings: name one")


def complete(store: RunStore, item: SolutionInput, key: str, config: VerifyConfig) -> bool:
    """Whether every path ``config`` asks for is stored (any, when the paths are stored together)."""
    have = store.path_indices(item.key, key)
    if not config.paths_independent:
        return bool(have)
    return all(j in have for j in range(config.n))


def stored_failure(store: RunStore, item: SolutionInput, key: str, config: VerifyConfig) -> SolutionFailure | None:
    """The recorded failure of ``item``'s last attempt under ``key``, unless its paths are all stored."""
    value = store.item(FAILED_KIND, item.key, key)
    if not isinstance(value, dict) or complete(store, item, key, config):
        return None
    return SolutionFailure(item.record, item.key, str(value.get("reason", "error")), str(value.get("error", "")),
                           bool(value.get("transient")))


def stored_compute(store: RunStore, items: Sequence[SolutionInput], key: str) -> ComputeUsage | None:
    """Compute spent on ``items`` as stored beside their paths; ``None`` if any lacks the record."""
    total = ComputeUsage()
    for item in items:
        value = store.item(COMPUTE_KIND, item.key, key)
        if not isinstance(value, dict):
            return None
        total.merge(ComputeUsage.from_dict(value))
    return total


@dataclass(frozen=True)
class VerifyUnit:
    """One sample to verify, and which of its paths (``None``: all, stored together)."""

    item: SolutionInput
    path_ids: list[int] | None


@dataclass(frozen=True)
class VerifyWork:
    """Verify one sample on a worker's ``verifier`` model. Each worker builds one :class:`Scheduler`
    per settings and runs every unit it is given through it, so the paths of all its units in flight
    (up to ``concurrency``) share its engine's batch, as one local process with ``--concurrency``.
    Returns a :class:`SolutionResult` or :class:`SolutionFailure` (never raises).
    """

    config: VerifyConfig
    chat_template: str | None = None
    concurrency: int = 1

    def __call__(self, resources: Resources, unit: VerifyUnit) -> SolutionResult | SolutionFailure:
        scheduler = resources.state(("verify", self), lambda: self._scheduler(resources))
        return attempt(scheduler.verifier, unit.item, unit.path_ids)

    def _scheduler(self, resources: Resources) -> Scheduler:
        engine = resources.chat("verifier").engine
        verifier = SolutionVerifier(engine, self.config, chat_template=self.chat_template)
        return Scheduler(verifier, concurrency=self.concurrency)


def lost(unit: VerifyUnit, error: str | None) -> SolutionFailure:
    """The failure of a unit whose work never returned (its worker died too often running it): not
    transient, so a resumed run does not retry it unless asked (``--retry-failed``).
    """
    return SolutionFailure(unit.item.record, unit.item.key, "replica", error or "no result", False)


class StoreScorer:
    """Runs the verifier over samples, keeping every path in the store; re-runs reuse them."""

    def __init__(
        self,
        store: RunStore,
        engine: Engine,
        config: VerifyConfig,
        *,
        chat_template: str | None = None,
        concurrency: int = 1,
        retry_failed: bool = False,
        executor: Executor | None = None,
    ) -> None:
        """``retry_failed``: verify again samples whose last attempt failed for a reason that would
        recur (transient failures are always retried). ``executor``: where samples are verified
        (Ray replicas, :mod:`genprm.executor.ray`), each worker keeping ``concurrency`` paths in flight;
        without it they are verified in this process. Either way only this process writes the store.
        """
        if config.paths != "independent":
            raise ValueError("stored evaluation needs independent paths (each path is stored on its own)")
        self.store = store
        self.engine = engine
        self.config = config
        self.concurrency = concurrency
        self.retry_failed = retry_failed
        self.executor = executor
        self.chat_template = chat_template
        self.verifier = SolutionVerifier(engine, config, chat_template=chat_template)
        self.dependent = not config.paths_independent
        self.template = template_fields(self.verifier.chat.source, engine.chat_template)
        self.settings = store.register_settings(
            engine.model_id, key_fields(config, self.template), independent_paths=config.paths_independent
        )

    def missing(self, item: SolutionInput) -> list[int]:
        failure = self.failure(item)
        if failure is not None and not (failure.transient or self.retry_failed):
            return []
        if self.dependent:  # stored in one transaction: any path means the whole sample
            return [] if complete(self.store, item, self.settings, self.config) else list(range(self.config.n))
        have = self.store.path_indices(item.key, self.settings)
        return [j for j in range(self.config.n) if j not in have]

    def failure(self, item: SolutionInput) -> SolutionFailure | None:
        """Why ``item``'s last attempt failed, if it did and its paths are not all stored since."""
        return stored_failure(self.store, item, self.settings, self.config)

    def _path_ids(self, wanted: list[int]) -> list[int] | None:
        return None if self.dependent else wanted

    def score(
        self, items: Sequence[SolutionInput], on_progress: Callable[[ScoringProgress], None] | None = None
    ) -> None:
        """Compute and store every missing path of ``items``; each sample is committed as it finishes."""
        wanted = {item.key: self.missing(item) for item in items}
        todo = [item for item in items if wanted[item.key]]
        reused = len(items) - len(todo)
        done, failed = reused, 0

        def finished(result: SolutionResult) -> None:
            nonlocal done
            if self.dependent:  # before the paths: a sample with paths always has its compute
                self.store.put_item(COMPUTE_KIND, result.key, self.settings, asdict(result.compute))
            self.store.put_paths(result.key, result.record, self.settings, trajectories(result))
            done += 1
            if on_progress:
                on_progress(ScoringProgress(done, len(items), reused, failed))

        def failure(failed_item: SolutionFailure) -> None:
            nonlocal done, failed
            value = failed_item.value()
            self.store.put_item(FAILED_KIND, failed_item.key, self.settings, value, record=failed_item.record,
                                replace=True)
            done, failed = done + 1, failed + 1
            if on_progress:
                on_progress(ScoringProgress(done, len(items), reused, failed, failed_item))

        if on_progress:
            on_progress(ScoringProgress(done, len(items), reused))
        if self.executor is not None:
            # costliest first, as the local scheduler starts them, so that replicas end on short samples
            ordered = longest_first(todo, lambda item: self._path_ids(wanted[item.key]), self.config.n)
            units = [VerifyUnit(item, None if ids is None else list(ids)) for item, ids in ordered]
            self._run_on(self.executor, units, finished, failure)
            return
        if self.concurrency <= 1:
            for item in todo:
                outcome = attempt(self.verifier, item, self._path_ids(wanted[item.key]))
                if isinstance(outcome, SolutionFailure):
                    failure(outcome)
                else:
                    finished(outcome)
            return
        scheduler = Scheduler(self.verifier, concurrency=self.concurrency)
        try:
            scheduler.run(todo, finished, path_ids_of=lambda item: self._path_ids(wanted[item.key]), on_failure=failure)
        finally:
            scheduler.close()

    def _run_on(
        self, executor: Executor, units: list[VerifyUnit], finished: Callable[[SolutionResult], None],
        failure: Callable[[SolutionFailure], None],
    ) -> None:
        resources = HeldModels(verifier=ChatModel(self.engine, self.chat_template))
        work = VerifyWork(self.config, self.chat_template, self.concurrency)
        try:
            for outcome in executor.run(work, units, resources):
                value = outcome.value
                if isinstance(value, SolutionResult):
                    finished(value)
                else:
                    failure(value if isinstance(value, SolutionFailure) else lost(outcome.unit, outcome.error))
        finally:
            resources.close()

    def compute(self, items: Sequence[SolutionInput]) -> ComputeUsage | None:
        """Compute spent on ``items`` (adaptive or early-stopping settings; ``None`` otherwise or if any lacks it)."""
        return stored_compute(self.store, items, self.settings) if self.dependent else None

    def matrix(self, item: SolutionInput, n: int | None = None) -> RewardMatrix:
        k = n or self.config.n
        return reward_matrix(self.store.paths(item.key, self.settings, k), len(item.steps), k)
