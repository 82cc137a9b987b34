"""A driver process for the kill -9 test: verifies a ProcessBench copy on Ray replicas, printing a
line per stored sample so the test knows when to kill it mid-run.

    python -m tests.distributed.driver DATA RUN ADDRESS DELAY_S
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.distributed import scripted

from genprm.cli.cluster import Cluster, verifier_models
from genprm.evaluation.processbench import evaluate_processbench, load_processbench
from genprm.evaluation.scoring import StoreScorer
from genprm.store import RunStore
from genprm.verifier import VerifyConfig

CONFIG = VerifyConfig(n=3, seed=7)
CONCURRENCY = 3


def verify(data: Path, run: Path, cluster: Cluster | None) -> object:
    """Verify every sample of ``data`` into ``run`` (on ``cluster``, or in this process); the figures."""
    samples = load_processbench(data, ["gsm8k", "math"])
    with RunStore(run) as store, verifier_models(cluster, {"verifier": scripted.verifier_spec()}, 2) as (
        engines, executor
    ):
        scorer = StoreScorer(store, engines["verifier"], CONFIG, concurrency=CONCURRENCY, executor=executor)
        return evaluate_processbench(samples, scorer, on_progress=_say)


def _say(phase: str, done: int, total: int) -> None:
    print(f"{phase} {done}/{total}", flush=True)


if __name__ == "__main__":
    import ray

    data, run, address, delay = sys.argv[1:5]
    scripted.DELAY_S = float(delay)
    ray.cloudpickle.register_pickle_by_value(scripted)
    verify(Path(data), Path(run), Cluster(address, replicas=2))
