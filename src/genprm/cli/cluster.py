"""``--ray``: where a long command's models run. Without it they load in this process, as always;
with it they load on Ray replicas (:mod:`genprm.executor.ray`) and this process is the driver: it
hands out units, shows progress and is the store's one writer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from genprm.engines import Engine
from genprm.errors import ConfigError
from genprm.evaluation.chat import ChatModel
from genprm.executor import Executor, Resources, Roles, RoleSpec
from genprm.synthesis.pipeline import ExecutorFor, local_executor, units_in_flight

if TYPE_CHECKING:
    from genprm.executor.ray import ReplicaPool

SPARE_CALLS = 8
"""Actor threads beyond the units in flight: engine calls from the driver (critic, policy) and probes."""


@dataclass(frozen=True)
class Cluster:
    """The ``--ray``, ``--replicas`` and ``--gpus-per-replica`` a command was given."""

    address: str
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0


def cluster_of(address: str | None, replicas: int, gpus_per_replica: float, threads: int | None) -> Cluster | None:
    """The cluster to run on, or ``None`` for this process (refusing replica options without ``--ray``)."""
    if address is None:
        if replicas != 1:
            raise ConfigError("--replicas", replicas, "needs --ray (replicas are Ray actors)")
        if gpus_per_replica:
            raise ConfigError("--gpus-per-replica", gpus_per_replica, "needs --ray")
        return None
    return Cluster(address, replicas, gpus_per_replica, float(threads or 1))


@contextmanager
def replica_pool(cluster: Cluster, specs: Mapping[str, RoleSpec], units: int) -> Iterator[ReplicaPool]:
    """The replicas of ``specs`` on ``cluster``, each taking up to ``units`` units at once."""
    from genprm.executor.ray import ReplicaPool, ReplicaSettings

    settings = ReplicaSettings(replicas=cluster.replicas, gpus_per_replica=cluster.gpus_per_replica,
                               cpus_per_replica=cluster.cpus_per_replica, max_concurrency=units + SPARE_CALLS)
    with ReplicaPool(specs, settings, address=cluster.address) as pool:
        yield pool


@contextmanager
def verifier_models(
    cluster: Cluster | None, specs: Mapping[str, RoleSpec], units: int
) -> Iterator[tuple[dict[str, Engine], Executor | None]]:
    """The engines of ``specs`` by role (one load per distinct model) and, on a cluster, the executor
    that verifies samples on the replicas (``units`` samples in flight on each).
    """
    if cluster is not None:
        with replica_pool(cluster, specs, units) as pool:
            yield {role: pool.engine(role) for role in specs}, pool.executor(units)
        return
    with Roles(specs) as roles:
        yield {role: roles.engine(role) for role in specs}, None


def replica_executor(pool: ReplicaPool) -> ExecutorFor:
    """The synthesis stages' executors on ``pool``: as many units per replica as one local engine gets."""
    from genprm.executor.ray import replica_units

    def executor_for(chat: ChatModel, concurrency: int, *, conversation: bool = False) -> Executor:
        return pool.executor(units_in_flight(replica_units(chat), concurrency, conversation=conversation))

    return executor_for


@contextmanager
def role_models(
    cluster: Cluster | None, specs: Mapping[str, RoleSpec], concurrency: int
) -> Iterator[tuple[Resources, ExecutorFor]]:
    """The synthesis roles' models and where each stage's units run: this process, or the replicas."""
    if cluster is None:
        with Roles(specs) as roles:
            yield roles, local_executor
        return
    with replica_pool(cluster, specs, concurrency) as pool:
        yield pool, replica_executor(pool)
