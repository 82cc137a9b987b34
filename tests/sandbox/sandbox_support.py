"""Shared constants of the sandbox tests (a uniquely named module: tests/ has its own conftest)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Iterator

import pytest

from genprm.errors import SandboxUnavailableError
from genprm.sandbox import SandboxConfig, WorkerPool, bwrap_status, plan
from genprm.sandbox.plan import resolve

BWRAP_PATH, BWRAP_REASON = bwrap_status(())
HAVE_BWRAP = BWRAP_PATH is not None
requires_bwrap = pytest.mark.skipif(
    not HAVE_BWRAP, reason=f"bubblewrap unusable here ({BWRAP_REASON}); isolation tests need it"
)
IS_ROOT = os.geteuid() == 0


def _reachable_python() -> str | None:
    """A Python an unprivileged uid can run: ours, else the system one (rlimits as root needs one)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate and os.path.exists(candidate):
            try:
                resolve("rlimits", None if candidate == sys.executable else candidate, None, ())
            except SandboxUnavailableError:
                continue
            return None if candidate == sys.executable else candidate
    return ""


_RLIMITS_PYTHON = _reachable_python() if IS_ROOT else None
HAVE_RLIMITS = _RLIMITS_PYTHON != ""
RLIMITS_PYTHON = _RLIMITS_PYTHON or None
"""The python= that lets rlimits mode run here (None: the default interpreter)."""
requires_rlimits = pytest.mark.skipif(
    not HAVE_RLIMITS, reason="as root, rlimits mode needs a Python that an unprivileged uid can read"
)
USERNS_PYTHON = RLIMITS_PYTHON
"""A Python that bwrap started as an unprivileged uid can reach (for the bwrap+userns launch as root)."""

# Hostile tests do not need sympy & co; without pre-imports a worker starts in ~0.1 s.
FAST = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0)
FAST_BWRAP = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, isolation="bwrap")
FAST_RLIMITS = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, isolation="rlimits", python=RLIMITS_PYTHON)

LAUNCHES = ["bwrap+userns", "bwrap+setuid", "rlimits+uid"] if IS_ROOT else ["bwrap", "rlimits"]
"""Every launch that claims to contain the escapes of genprm issue 11 (items 9-11)."""


def launch_config(launch: str, monkeypatch: pytest.MonkeyPatch, **changes: object) -> SandboxConfig:
    """A fast config that starts workers exactly the way ``launch`` names, or skip saying why not."""
    if launch.startswith("rlimits"):
        if not HAVE_RLIMITS:
            pytest.skip("as root, rlimits mode needs a Python that an unprivileged uid can read")
        cfg = dataclasses.replace(FAST_RLIMITS, **changes)  # type: ignore[arg-type]
    else:
        python = None
        if launch == "bwrap+userns":
            monkeypatch.setattr(plan, "BWRAP_VARIANTS_ROOT", ("userns",))
            python = USERNS_PYTHON
        elif launch == "bwrap+setuid":
            monkeypatch.setattr(plan, "BWRAP_VARIANTS_ROOT", ("setuid",))
        cfg = dataclasses.replace(FAST_BWRAP, python=python, **changes)  # type: ignore[arg-type]
    try:
        chosen = resolve(cfg.isolation, cfg.python, cfg.bwrap, cfg.preimport)
    except SandboxUnavailableError as e:
        pytest.skip(f"{launch} is not available here: {e}")
    assert chosen.label == launch
    return cfg


@pytest.fixture(name="pool")
def pool_fixture() -> Iterator[WorkerPool]:
    """A private pool, so tests never share warm workers or leave them running.

    Test modules import this fixture (no conftest.py here: tests/ has its own, imported by name).
    """
    p = WorkerPool()
    yield p
    p.shutdown()
