"""Sandboxed execution of model-written Python for GenPRM's code-verification steps.

``CodeSession(SandboxConfig()).run(code)`` returns exactly the text upstream GenPRM spliced into
the transcript (stdout stripped, or ``Code execute Error: Name: msg``, or the time-out line), but
the code runs in a separate worker process, never in ours, and never with our rights:

* always: a wall clock enforced by the parent, a per-run CPU budget (upstream's time-out text when
  hit), RLIMIT_AS/NPROC/FSIZE/NOFILE/CORE, bounded output, an empty environment, a private scratch
  folder as cwd/$HOME, the whole process tree killed on time-out and close (even children that
  ``setsid`` and double-fork), and, after a kill, a fresh worker into which the earlier clean
  blocks are replayed;
* ``isolation="auto"``/``"bwrap"`` (the default): bubblewrap -- read-only root filesystem with the
  home folders, /tmp and /run hidden, no network, private pid/ipc/uts namespaces, no
  capabilities, a uid other than 0 (its own one per worker when we are root). Without a usable
  bubblewrap this raises SandboxUnavailableError with a one-line fix instead of running the code;
* ``"rlimits"`` (explicit, unsafe): resource limits and process-tree tracking only. As root the
  code runs as its own unprivileged uid (or we refuse); as a normal user it runs as that user.

See docs/sandbox.md for exactly what each mode contains and does not contain.
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
from genprm.sandbox.plan import bwrap_status, check
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
    "check",
    "format_error",
    "format_timeout",
    "get_pool",
    "shutdown_pool",
]
