"""Shared constants of the sandbox tests (a uniquely named module: tests/ has its own conftest)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from genprm.sandbox import SandboxConfig, WorkerPool
from genprm.sandbox.isolation import bwrap_status

BWRAP_PATH, BWRAP_REASON = bwrap_status(())
HAVE_BWRAP = BWRAP_PATH is not None
requires_bwrap = pytest.mark.skipif(
    not HAVE_BWRAP, reason=f"bubblewrap unusable here ({BWRAP_REASON}); isolation tests need it"
)
IS_ROOT = os.geteuid() == 0

# Hostile tests do not need sympy & co; without pre-imports a worker starts in ~0.1 s.
FAST = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0)
FAST_BWRAP = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, isolation="bwrap")
FAST_RLIMITS = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, isolation="rlimits")


@pytest.fixture(name="pool")
def pool_fixture() -> Iterator[WorkerPool]:
    """A private pool, so tests never share warm workers or leave them running.

    Test modules import this fixture (no conftest.py here: tests/ has its own, imported by name).
    """
    p = WorkerPool()
    yield p
    p.shutdown()
