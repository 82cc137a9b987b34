"""Where worker processes are born: one long-lived thread, so they do not die with short-lived ones."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from concurrent.futures import Future
from typing import Any


class _Spawner:
    """Starts every worker from one long-lived thread.

    PR_SET_PDEATHSIG (bwrap's --die-with-parent, the rlimits worker's own prctl) fires when the
    *thread* that forked the child exits, not the process: a worker spawned from a short-lived
    scheduler thread or the pool's refill thread would be SIGKILLed when that thread ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Future[subprocess.Popen[bytes]], list[str], dict[str, Any]]]
        self._queue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(argv, **kwargs)``, executed on the spawner thread."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="genprm-sandbox-spawner", daemon=True)
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._queue.put((future, argv, kwargs))
        return future.result()

    def _loop(self) -> None:
        while True:
            future, argv, kwargs = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                future.set_exception(e)

    def forget_thread(self) -> None:
        """After fork, the child has no spawner thread (and must not inherit a held lock)."""
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._thread = None



spawner = _Spawner()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=spawner.forget_thread)
