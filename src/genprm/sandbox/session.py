"""``CodeSession``: one verification path's persistent Python namespace, living in a sandbox.

Upstream GenPRM ran ``exec(code, namespace)`` in its own process; here the namespace lives in a
separate worker process, so the model's code can hang, crash, fork or exhaust memory without
touching the verifier. Whatever the code does comes back as the transcript string; only "the
sandbox itself cannot run" raises ``SandboxUnavailableError``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from types import TracebackType

from genprm.sandbox.config import SandboxConfig
from genprm.sandbox.pool import WorkerPool, get_pool
from genprm.sandbox.process import Worker


class CodeSession:
    """Run code blocks one after another in one private, persistent namespace.

    If the worker had to be killed (timeout, crash, memory), the next ``run`` starts a fresh one
    and first replays, silently, every earlier block that ran cleanly (no exception, no time-out),
    so the namespace is rebuilt; ``restarts`` counts the fresh workers. A replayed block that now
    fails or times out is dropped from the history and counted in ``replay_failures``; the model
    never sees replay output.

    ``replay``: blocks to run silently before the first ``run`` (another path's history, when a path
    branches off it); they join the history when they run cleanly.
    """

    def __init__(self, config: SandboxConfig | None = None, *, pool: WorkerPool | None = None,
                 replay: Sequence[str] = ()) -> None:
        self.config = config if config is not None else SandboxConfig()
        self._pool = pool
        self._lock = threading.Lock()
        self._worker: Worker | None = None
        self._finalizer: weakref.finalize[[], CodeSession] | None = None
        self._lost = False
        self._closed = False
        if isinstance(replay, str) or not all(isinstance(b, str) for b in replay):
            raise TypeError("replay must be a sequence of code strings")
        self._history: list[str] = list(replay)
        self._replay_due = bool(self._history)
        self.restarts = 0
        self.runs = 0
        self.replayed = 0
        self.replay_failures = 0

    def __enter__(self) -> CodeSession:
        with self._lock:
            self._ensure_worker()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def isolation(self) -> str | None:
        """"bwrap" or "rlimits" once a worker is attached, else None."""
        worker = self._worker
        return worker.spec.isolation if worker is not None else None

    @property
    def worker_info(self) -> dict[str, object]:
        """What the current worker reported at start-up (pid, uid, applied limits, preimports)."""
        worker = self._worker
        return dict(worker.info) if worker is not None else {}

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    @property
    def history(self) -> tuple[str, ...]:
        """The blocks that ran cleanly in this namespace, in order: what a replay re-runs.

        Seeded ``replay`` blocks count from the start (until a replay shows that one fails).
        """
        return tuple(self._history)

    def run(self, code: str) -> str:
        """Execute ``code`` in the session namespace; return the text for the code-output fence."""
        if not isinstance(code, str):
            raise TypeError(f"code must be str, not {type(code).__name__}")
        with self._lock:
            if self._closed:
                raise RuntimeError("CodeSession.run() after close()")
            if self._replay_due:
                self._replay()
            worker = self._ensure_worker()
            result = worker.execute(code, self.config.timeout_s, self.config.max_output_chars)
            self.runs += 1
            if result.ok:
                self._history.append(code)
            if result.worker_lost:
                self._discard_worker()
                self._lost = True
                self._replay_due = bool(self._history)
            return result.text

    def close(self) -> None:
        """Kill the worker and delete its scratch folder; idempotent."""
        with self._lock:
            self._closed = True
            self._discard_worker()

    def _replay(self) -> None:
        """Caller holds the lock. Rebuild the namespace in a fresh worker from the clean history.

        A block that kills this worker too is dropped and the replay starts over in the next one,
        so it ends after at most one fresh worker per dropped block.
        """
        pending = list(self._history)
        while True:
            worker = self._ensure_worker()
            done: list[str] = []
            for i, block in enumerate(pending):
                result = worker.execute(block, self.config.timeout_s, 1)
                self.replayed += 1
                if result.ok:
                    done.append(block)
                    continue
                self.replay_failures += 1
                if result.worker_lost:
                    self._discard_worker()
                    self._lost = True
                    pending = done + pending[i + 1 :]
                    break
            else:
                self._history = done
                self._replay_due = False
                return

    def _ensure_worker(self) -> Worker:
        """Caller holds the lock. Attach a worker (raises SandboxUnavailableError if none starts)."""
        if self._worker is not None:
            return self._worker
        pool = self._pool if self._pool is not None else get_pool()
        worker = pool.acquire(self.config)
        if self._lost:
            self.restarts += 1
            self._lost = False
        self._worker = worker
        self._finalizer = weakref.finalize(self, worker.close)
        return worker

    def _discard_worker(self) -> None:
        """Caller holds the lock."""
        worker, self._worker = self._worker, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if worker is not None:
            worker.close()
