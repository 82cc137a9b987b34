"""A process-wide pool of warm, idle workers, so a session starts in microseconds, not seconds.

Each worker serves one session and is then discarded (namespaces and scratch folders are private),
so the pool only ever hands out never-used workers and refills itself from a background thread.
Safe to use from many threads. Shut down at exit (atexit) or explicitly with ``shutdown_pool()``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque

from genprm.errors import SandboxUnavailableError
from genprm.sandbox.config import SandboxConfig
from genprm.sandbox.process import Worker, WorkerSpec

log = logging.getLogger("genprm.sandbox")
_RETRY_AFTER_FAILURE_S = 30.0
_JOIN_ON_SHUTDOWN_S = 5.0


class WorkerPool:
    """Idle warm workers per ``WorkerSpec``, topped up to each spec's requested size."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._idle: dict[WorkerSpec, deque[Worker]] = {}
        self._target: dict[WorkerSpec, int] = {}
        self._starting: dict[WorkerSpec, int] = {}
        self._failed_at: dict[WorkerSpec, float] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._cancel = threading.Event()  # aborts a refill spawn in progress at shutdown

    def acquire(self, config: SandboxConfig) -> Worker:
        """A ready worker for ``config``: a warm idle one if any, else a freshly spawned one.

        Raises SandboxUnavailableError when no worker can be started.
        """
        spec = WorkerSpec.from_config(config)
        worker = None
        with self._cond:
            if self._stopped:
                raise SandboxUnavailableError("the sandbox worker pool was shut down")
            idle = self._idle.get(spec)
            while idle:
                candidate = idle.popleft()
                if candidate.alive():
                    worker = candidate
                    break
                candidate.close()
            self._set_target(spec, config.pool_size)
        return worker if worker is not None else Worker(spec)

    def prewarm(self, config: SandboxConfig) -> None:
        """Start filling the pool for ``config`` in the background (returns at once)."""
        spec = WorkerSpec.from_config(config)
        with self._cond:
            if not self._stopped:
                self._set_target(spec, config.pool_size)

    def idle_count(self, config: SandboxConfig | None = None) -> int:
        """Idle workers ready now (for ``config``, or in total)."""
        with self._cond:
            if config is None:
                return sum(len(q) for q in self._idle.values())
            return len(self._idle.get(WorkerSpec.from_config(config), ()))

    def wait_idle(self, config: SandboxConfig, count: int, timeout_s: float) -> bool:
        """Block until ``count`` idle workers exist for ``config`` (benchmarks, tests)."""
        spec = WorkerSpec.from_config(config)
        end = time.monotonic() + timeout_s
        with self._cond:
            while len(self._idle.get(spec, ())) < count:
                left = end - time.monotonic()
                if left <= 0 or self._stopped:
                    return False
                self._cond.wait(left)
            return True

    def shutdown(self) -> None:
        """Kill all idle workers and stop refilling; workers held by sessions are theirs to close."""
        with self._cond:
            self._stopped = True
            self._cancel.set()
            workers = [w for q in self._idle.values() for w in q]
            self._idle.clear()
            self._cond.notify_all()
            thread = self._thread
        for w in workers:
            w.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=_JOIN_ON_SHUTDOWN_S)

    # -- background refill ---------------------------------------------------------------------

    def _set_target(self, spec: WorkerSpec, size: int) -> None:
        """Caller holds the lock."""
        if size <= 0 and spec not in self._target:
            return
        self._target[spec] = size
        if size > 0 and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._refill_loop, name="genprm-sandbox-pool",
                                             daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def _next_deficit(self) -> WorkerSpec | None:
        """Caller holds the lock. A spec that needs one more worker and is not in back-off."""
        now = time.monotonic()
        for spec, target in self._target.items():
            have = len(self._idle.get(spec, ())) + self._starting.get(spec, 0)
            if have < target and now - self._failed_at.get(spec, -1e9) >= _RETRY_AFTER_FAILURE_S:
                return spec
        return None

    def _refill_loop(self) -> None:
        while True:
            with self._cond:
                spec = None
                while not self._stopped:
                    spec = self._next_deficit()
                    if spec is not None:
                        break
                    self._cond.wait(timeout=5.0)
                if self._stopped or spec is None:
                    return
                self._starting[spec] = self._starting.get(spec, 0) + 1
            worker: Worker | None = None
            try:
                worker = Worker(spec, self._cancel)
            except Exception as e:  # noqa: BLE001 - keep the thread alive; acquire() will raise
                if not self._cancel.is_set():
                    log.warning("genprm sandbox: could not pre-start a worker: %s", e)
            with self._cond:
                self._starting[spec] -= 1
                if worker is None:
                    self._failed_at[spec] = time.monotonic()
                elif self._stopped:
                    pass
                else:
                    self._idle.setdefault(spec, deque()).append(worker)
                    worker = None
                self._cond.notify_all()
            if worker is not None:
                worker.close()


_pool_lock = threading.Lock()
_pool: WorkerPool | None = None


def get_pool() -> WorkerPool:
    """The process-wide pool, created on first use (again after ``shutdown_pool``)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = WorkerPool()
        return _pool


def shutdown_pool() -> None:
    """Kill the process-wide pool's idle workers; the next ``get_pool()`` starts a new pool."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown()


def _forget_pool_in_child() -> None:
    """After os.fork() the child must not touch the parent's workers (nor kill them at exit)."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


atexit.register(shutdown_pool)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)
