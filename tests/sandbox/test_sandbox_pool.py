"""The warm pool: hands out never-used workers, refills in the background, is thread-safe."""

from __future__ import annotations

import os
import threading
import time

import pytest
from sandbox_support import FAST, FAST_RLIMITS, HAVE_RLIMITS, pool_fixture  # noqa: F401

from genprm.errors import SandboxUnavailableError
from genprm.sandbox import CodeSession, SandboxConfig, WorkerPool, get_pool, shutdown_pool

POOLED = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=2)


def test_pool_prestarts_and_refills(pool: WorkerPool) -> None:
    pool.prewarm(POOLED)
    assert pool.wait_idle(POOLED, 2, timeout_s=30)
    with CodeSession(POOLED, pool=pool) as s:
        assert s.run("print('warm')") == "warm"
        assert pool.idle_count(POOLED) <= 2
        assert pool.wait_idle(POOLED, 2, timeout_s=30)  # topped up again while the session runs
    assert pool.idle_count() == 2


def test_pooled_workers_are_never_reused(pool: WorkerPool) -> None:
    pool.prewarm(POOLED)
    pids = set()
    for i in range(4):
        with CodeSession(POOLED, pool=pool) as s:
            assert s.run("print(leftover)").startswith("Code execute Error: NameError")
            s.run(f"leftover = {i}")
            pids.add((s.worker_info["pid"], s._worker.proc.pid if s._worker else None))
    assert len(pids) == 4


def test_concurrent_sessions_from_threads(pool: WorkerPool) -> None:
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            with CodeSession(POOLED, pool=pool) as s:
                s.run(f"v = {i}")
                for _ in range(5):
                    out = s.run("v = v * 2 + 1 - v - 1\nprint(v)")
                    if out != str(i):
                        errors.append(f"session {i}: {out!r}")
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(f"session {i}: {e!r}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors


def test_shutdown_kills_idle_workers_and_refuses_new_ones() -> None:
    pool = WorkerPool()
    pool.prewarm(POOLED)
    assert pool.wait_idle(POOLED, 2, timeout_s=30)
    procs = [w.proc for q in pool._idle.values() for w in q]
    pool.shutdown()
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(SandboxUnavailableError):
        pool.acquire(POOLED)


def test_process_wide_pool_can_be_shut_down_and_recreated() -> None:
    first = get_pool()
    with CodeSession(FAST) as s:  # no pool= : uses the process-wide pool
        assert s.run("print(1)") == "1"
    shutdown_pool()
    second = get_pool()
    assert second is not first
    shutdown_pool()


def test_session_close_kills_worker(pool: WorkerPool) -> None:
    s = CodeSession(FAST, pool=pool)
    s.run("print(1)")
    assert s._worker is not None
    proc = s._worker.proc
    s.close()
    assert proc.poll() is not None
    os.kill(os.getpid(), 0)


@pytest.mark.parametrize("cfg", [FAST, FAST_RLIMITS], ids=["auto", "rlimits"])
def test_session_outlives_the_thread_that_started_it(pool: WorkerPool, cfg: SandboxConfig) -> None:
    # PR_SET_PDEATHSIG fires when the spawning *thread* exits; workers must not die with it
    if cfg.isolation == "rlimits" and not HAVE_RLIMITS:
        pytest.skip("as root, rlimits mode needs a Python that an unprivileged uid can read")
    box: dict[str, CodeSession] = {}

    def start() -> None:
        box["s"] = CodeSession(cfg, pool=pool)
        box["s"].run("x = 1")

    t = threading.Thread(target=start)
    t.start()
    t.join()
    time.sleep(0.3)
    with box["s"] as s:
        assert s.run("print(x)") == "1"
        assert s.restarts == 0
