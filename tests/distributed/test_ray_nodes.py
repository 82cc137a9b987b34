"""Two Ray nodes on this machine (Ray's ``cluster_utils.Cluster``): replicas are spread over the
nodes, and removing a node mid-run loses and duplicates no record (its replica restarts elsewhere,
its units go out again).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.distributed import ray_fixtures, scripted
from tests.distributed.driver import CONFIG
from tests.distributed.faults import sabotaged_run
from tests.distributed.ray_fixtures import carry_by_value, ray

from genprm.executor.ray import ReplicaPool, ReplicaSettings

pytestmark = ray_fixtures.needs_ray
data, local_run = ray_fixtures.data, ray_fixtures.local_run  # fixtures


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[tuple[Any, Any]]:
    """A head node with 2 CPUs and a worker node with 1; health checks fast enough to see a node go."""
    from ray.cluster_utils import Cluster as RayNodes

    carry_by_value()
    fast = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
    cluster = RayNodes(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "_system_config": fast})
    worker = cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_replicas_spread_over_the_nodes(two_nodes):
    with ReplicaPool({"verifier": scripted.verifier_spec()}, ReplicaSettings(replicas=2)) as pool:
        assert len({place["node"] for place in pool.places}) == 2


def test_removing_a_node_mid_run_loses_and_duplicates_no_record(two_nodes, data, local_run, tmp_path, monkeypatch):
    cluster, worker = two_nodes
    monkeypatch.setattr(scripted, "DELAY_S", 0.03)

    def remove_the_worker_node(pool: ReplicaPool) -> None:
        assert len({place["node"] for place in pool.places}) == 2
        cluster.remove_node(worker)

    figures, executor, failures = sabotaged_run(tmp_path, data, {2: remove_the_worker_node},
                                                ReplicaSettings(replicas=2, max_concurrency=8))
    assert failures == {}
    assert scripted.stored_paths(tmp_path) == scripted.stored_paths(local_run[0])
    assert scripted.path_rows(tmp_path) == 8 * CONFIG.n
    assert figures.results == local_run[1].results
    assert executor.runs[0].resubmitted >= 1  # the lost node's replica held units

