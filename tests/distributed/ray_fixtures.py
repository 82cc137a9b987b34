"""Real Ray for the distributed tests: a private instance per module (2 CPUs), shut down at its end.
The modules import these fixtures by name (a conftest.py here would shadow the tests' root
``conftest`` that other test modules import as a module).

The scripted models' functions travel to the actors by value (cloudpickle), so Ray's workers need
not import the tests package; each module starts its own instance so that the multi-node module
can start Ray's ``Cluster`` utility instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.distributed import scripted
from tests.synthesis import scripted_models

try:
    import ray
except ImportError:  # the tests without a cluster still run (among them: the message when Ray is missing)
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="needs genprm[ray]")


def carry_by_value() -> None:
    """Pickle the scripted models' code by value: Ray's workers cannot import ``tests``."""
    assert ray is not None
    for module in (scripted, scripted_models):
        ray.cloudpickle.register_pickle_by_value(module)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A private Ray instance on this machine with 2 CPUs (two CPU replicas)."""
    carry_by_value()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    """A ProcessBench copy: 4 samples in each of two subsets."""
    return scripted.write_processbench(tmp_path_factory.mktemp("pb"), 4)


@pytest.fixture(scope="session")
def local_run(tmp_path_factory, data) -> tuple[Path, Any]:
    """The same samples verified in this process, without Ray: what every Ray run must equal."""
    from tests.distributed.driver import verify

    run = tmp_path_factory.mktemp("local")
    return run, verify(data, run, None)
