"""How a worker process is walled off: the bubblewrap command line, the environment, the uid.

With bubblewrap ("bwrap" mode) the worker gets: a read-only view of the root filesystem with
/root, /home, /tmp, /var/tmp, /run, /mnt and /media replaced by empty tmpfs (only the Python
installation, the site-packages of the pre-imported modules and this package's directory are bound
back, read-only); one writable directory (the scratch folder, also its cwd, $HOME and $TMPDIR);
fresh pid, network (loopback only, down), ipc and uts namespaces; a fresh /proc and minimal /dev;
an empty environment apart from PATH/HOME/LANG and thread-count variables. When we are root the
worker keeps only CAP_SETUID/CAP_SETGID, sets its rlimits and then drops to a per-worker
unprivileged uid, so RLIMIT_NPROC applies and root-owned files and processes are out of reach.

What it does NOT contain: the rest of the root filesystem is readable (world-readable files under
/etc, /usr, /opt, /work, ...); the kernel attack surface is the full syscall set (no seccomp);
CPU time, cache and timing side channels; disk usage of the scratch folder is only bounded per file
(RLIMIT_FSIZE) and by the wall clock. In "rlimits" mode there is no filesystem, network, process or
environment-of-other-processes isolation at all: the code runs as the calling user (or, for root
where the interpreter is world-readable, as an unprivileged uid) with resource limits only.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable

from genprm.errors import SandboxUnavailableError

log = logging.getLogger("genprm.sandbox")

HIDDEN_DIRS: tuple[str, ...] = ("/root", "/home", "/tmp", "/var/tmp", "/run", "/mnt", "/media")
"""Host folders replaced by an empty tmpfs inside bwrap (user data, sockets, other temp files)."""

SCRATCH_IN_SANDBOX = "/tmp/scratch"
"""Where the scratch folder appears inside bwrap; it is the worker's cwd, $HOME and $TMPDIR."""

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
_TMPFS_BYTES = 16 * 1024 * 1024
_UID_BASE = 200_000
_UID_SPAN = 60_000
_uid_counter = itertools.count()
_warn_lock = threading.Lock()
_warned: set[str] = set()

FALLBACK_WARNING = (
    "genprm sandbox: bubblewrap not available ({reason}); model code runs with resource limits only "
    "(no filesystem/network isolation). Install the Debian package 'bubblewrap'."
)


def warn_once(key: str, message: str) -> None:
    """Log a warning the first time ``key`` is seen in this process."""
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message)


def sandbox_env(home: str) -> dict[str, str]:
    """The whole environment of a worker: nothing of ours leaks, BLAS stays single-threaded."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "MPLBACKEND": "Agg",
    }
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "GOTO_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = "1"
    return env


@functools.cache
def module_roots(preimport: tuple[str, ...]) -> tuple[str, ...]:
    """The sys.path entries that hold the pre-imported packages (found without importing them)."""
    roots: list[str] = []
    for name in preimport:
        try:
            spec = importlib.util.find_spec(name.split(".")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        if spec.submodule_search_locations:
            where = os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))
        elif spec.origin and os.path.isabs(spec.origin):
            where = os.path.dirname(spec.origin)
        else:
            continue
        if where not in roots:
            roots.append(where)
    return tuple(roots)


def needed_paths(preimport: tuple[str, ...]) -> list[str]:
    """Everything the worker must be able to read: interpreter, its libraries, our worker script."""
    paths = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    paths.add(os.path.dirname(WORKER_SCRIPT))
    paths.update(module_roots(preimport))
    return sorted(paths)


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _reachable_by_others(path: str, recreated: Iterable[str] = ()) -> bool:
    """Can an unrelated uid list ``path`` (o+rx) and traverse every folder above it (o+x)?

    Folders in ``recreated`` (rebuilt with mode 0755 inside bwrap) are not checked.
    """
    skip = tuple(recreated)
    parts = os.path.abspath(path).split("/")
    for i in range(2, len(parts) + 1):
        d = "/".join(parts[:i])
        if any(_under(d, h) and d != path for h in skip):
            continue
        try:
            mode = os.stat(d).st_mode
        except OSError:
            return False
        need = stat.S_IXOTH | (stat.S_IROTH if d == path else 0)
        if mode & need != need:
            return False
    return True


def can_drop_root(mode: str, preimport: tuple[str, ...]) -> bool:
    """As root, will an unprivileged uid still be able to run the interpreter and imports?"""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    hidden = HIDDEN_DIRS if mode == "bwrap" else ()
    return all(_reachable_by_others(p, hidden) for p in needed_paths(preimport))


def allocate_uid() -> int:
    """A uid no other live worker of this process uses, so each worker has its own NPROC budget."""
    return _UID_BASE + (os.getpid() * 7919 + next(_uid_counter)) % _UID_SPAN


def _hidden_parent(path: str) -> str | None:
    for h in HIDDEN_DIRS:
        if _under(path, h) and path != h:
            return h
    return None


def bwrap_argv(bwrap: str, scratch: str, preimport: tuple[str, ...], drop_root: bool,
               command: list[str], info_fd: int | None = None) -> list[str]:
    """The full bwrap command line around ``command`` (see the module docstring for the policy)."""
    argv = [bwrap] + (["--info-fd", str(info_fd)] if info_fd is not None else [])
    argv += ["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--ro-bind", "/", "/"]
    for d in HIDDEN_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            argv += ["--size", str(_TMPFS_BYTES), "--tmpfs", d]
    created: set[str] = set()
    binds = [p for p in needed_paths(preimport) if _hidden_parent(p)]
    for p in binds:
        if any(_under(p, q) and p != q for q in binds):
            continue  # an enclosing folder is bound already
        top = _hidden_parent(p) or "/"
        parts = p[len(top):].strip("/").split("/")
        for i in range(1, len(parts)):
            d = top.rstrip("/") + "/" + "/".join(parts[:i])
            if d not in created:
                created.add(d)
                argv += ["--perms", "0755", "--dir", d]
        argv += ["--ro-bind", p, p]
    argv += ["--bind", scratch, SCRATCH_IN_SANDBOX, "--proc", "/proc", "--dev", "/dev",
             "--chdir", SCRATCH_IN_SANDBOX, "--clearenv"]
    for key, value in sandbox_env(SCRATCH_IN_SANDBOX).items():
        argv += ["--setenv", key, value]
    if drop_root:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return argv + ["--", *command]


@functools.cache
def bwrap_status(preimport: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """(path to bwrap, "") when a probe sandbox runs our interpreter, else (None, why not)."""
    if not sys.platform.startswith("linux"):
        return None, "not Linux"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bwrap not found on PATH"
    scratch = tempfile.mkdtemp(prefix="genprm-sbx-probe-")
    try:
        drop = can_drop_root("bwrap", preimport)
        argv = bwrap_argv(bwrap, scratch, preimport, drop, [sys.executable, "-I", "-c", "pass"])
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                             env=sandbox_env(scratch), check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"probe failed: {e}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if res.returncode != 0:
        return None, f"probe exited {res.returncode}: {res.stderr.decode(errors='replace').strip()[:300]}"
    return bwrap, ""


def resolve_isolation(requested: str, preimport: tuple[str, ...]) -> str:
    """Turn "auto" into "bwrap" or "rlimits"; "bwrap" raises when bubblewrap cannot run here."""
    if requested == "rlimits":
        return "rlimits"
    bwrap, reason = bwrap_status(preimport)
    if bwrap is not None:
        return "bwrap"
    if requested == "bwrap":
        raise SandboxUnavailableError(f"isolation='bwrap' requested but bubblewrap is unusable: {reason}")
    warn_once("fallback", FALLBACK_WARNING.format(reason=reason))
    return "rlimits"


def worker_command(spec_json: str) -> list[str]:
    """The interpreter command line of a worker (``-I``: no env vars, no user site, no cwd on path)."""
    return [sys.executable, "-I", "-B", WORKER_SCRIPT, spec_json]
