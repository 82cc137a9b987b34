"""Sandboxed execution of model-written Python for GenPRM's code-verification steps.

``CodeSession(SandboxConfig()).run(code)`` returns exactly the text upstream GenPRM spliced into
the transcript (stdout stripped, or ``Code execute Error: Name: msg``, or the time-out line), but
the code runs in a separate worker process, never in ours:

* always: a wall clock enforced by the parent (SIGKILL of the worker and everything it spawned),
  RLIMIT_AS/CPU/NPROC/FSIZE/NOFILE/CORE, bounded output, an empty environment, a private scratch
  folder as cwd/$HOME, and a fresh worker after any kill;
* with bubblewrap (Linux, ``isolation="auto"``/``"bwrap"``): read-only root filesystem with the home
  folders, /tmp and /run hidden, no network, private pid/ipc/uts namespaces, and (when we are root)
  an unprivileged per-worker uid;
* without bubblewrap (``"rlimits"``): resource limits only -- no filesystem, network or process
  isolation; the code can read your files and signal your processes. A warning says so once.

Not contained in any mode: CPU-time and cache side channels, kernel exploits (no seccomp), reads of
world-readable files outside the hidden folders, and total disk use of the scratch folder beyond
the per-file limit.
"""

from __future__ import annotations

from genprm.sandbox.config import SandboxConfig
from genprm.sandbox.messages import (
    ERROR_TEMPLATE,
    NO_CODE_FOUND,
    TIMEOUT_MESSAGE,
    TIMEOUT_TEMPLATE,
    TRUNCATION_TEMPLATE,
    format_error,
    format_timeout,
)
from genprm.sandbox.plan import bwrap_status
from genprm.sandbox.pool import WorkerPool, get_pool, shutdown_pool
from genprm.sandbox.session import CodeSession

__all__ = [
    "ERROR_TEMPLATE",
    "NO_CODE_FOUND",
    "TIMEOUT_MESSAGE",
    "TIMEOUT_TEMPLATE",
    "TRUNCATION_TEMPLATE",
    "CodeSession",
    "SandboxConfig",
    "WorkerPool",
    "bwrap_status",
    "format_error",
    "format_timeout",
    "get_pool",
    "shutdown_pool",
]
