"""Fault injection for the Ray tests: an executor that harms the pool after chosen outcomes, and the
ProcessBench scoring that the fault tests compare with the local run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.distributed import scripted
from tests.distributed.driver import CONCURRENCY, CONFIG

from genprm.evaluation.processbench import StoredFigures, evaluate_processbench, load_processbench
from genprm.evaluation.scoring import FAILED_KIND, StoreScorer
from genprm.executor import Executor, Resources, UnitRun
from genprm.executor.base import Outcome, Work
from genprm.executor.ray import RayExecutor, ReplicaPool, ReplicaSettings
from genprm.store import RunStore

Harm = Callable[[ReplicaPool], None]


class Sabotage(Executor):
    """Runs units on ``inner``, calling ``harm[k](pool)`` after the k-th outcome of a run."""

    def __init__(self, inner: RayExecutor, harm: dict[int, Harm]) -> None:
        self.inner = inner
        self.harm = harm
        self.max_in_flight = inner.max_in_flight
        self.runs: list[Any] = []
        """The Ray executor's runs (their ``resubmitted`` counts)."""

    def run(self, work: Work[Any, Any], units: Iterable[Any] = (), resources: Resources | None = None) -> UnitRun:
        run = self.inner.run(work, units, resources)
        self.runs.append(run)
        return _Sabotaged(run, self.inner.pool, self.harm)


class _Sabotaged(UnitRun):
    def __init__(self, run: UnitRun, pool: ReplicaPool, harm: dict[int, Harm]) -> None:
        self.run, self.pool, self.harm = run, pool, harm

    def submit(self, unit: Any) -> None:
        self.run.submit(unit)

    def __iter__(self) -> Iterator[Outcome]:
        for count, outcome in enumerate(self.run, 1):
            if count in self.harm:
                self.harm[count](self.pool)
            yield outcome


def sabotaged_run(
    run: Path, data: Path, harm: dict[int, Harm], settings: ReplicaSettings
) -> tuple[StoredFigures, Sabotage, dict[str, Any]]:
    """The ProcessBench copy in ``data`` verified on replicas that ``harm`` hits: figures, the
    executor (how many units went out again) and the failures the store recorded.
    """
    samples = load_processbench(data, ["gsm8k", "math"])
    with ReplicaPool({"verifier": scripted.verifier_spec()}, settings) as pool, RunStore(run) as store:
        executor = Sabotage(pool.executor(2), harm)
        scorer = StoreScorer(store, pool.engine("verifier"), CONFIG, concurrency=CONCURRENCY, executor=executor)
        return evaluate_processbench(samples, scorer), executor, store_failures(store)


def store_failures(store: RunStore) -> dict[str, Any]:
    """Recorded failures by sample key."""
    return {sample: value for sample, _, _, value in store.items(FAILED_KIND)}
