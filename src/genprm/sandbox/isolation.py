"""How a worker process is walled off: its environment, what it must read, the bubblewrap command.

With bubblewrap the worker gets a read-only view of the root filesystem with /root, /home, /tmp,
/var/tmp, /run, /mnt and /media replaced by empty tmpfs (only the Python installation and the
site-packages of the pre-imported modules are bound back, read-only); one writable folder (the
scratch folder, also its cwd, $HOME and $TMPDIR); fresh pid, network (loopback only, down), ipc,
uts and cgroup namespaces; a fresh /proc and a minimal /dev; an empty environment apart from
PATH/HOME/LANG and thread-count variables; and ``--cap-drop ALL``. Who the code runs as is decided
in :mod:`genprm.sandbox.plan` (always an unprivileged uid with no capabilities).

The worker's own source is not read from disk by the worker: the parent writes it into the
worker's stdin and a one-line bootstrap executes it, so the worker never needs to reach genprm's
installation folder (which may be private to root).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from genprm.errors import SandboxUnavailableError

log = logging.getLogger("genprm.sandbox")

HIDDEN_DIRS: tuple[str, ...] = ("/root", "/home", "/tmp", "/var/tmp", "/run", "/mnt", "/media")
"""Host folders replaced by an empty tmpfs inside bwrap (user data, sockets, other temp files)."""

SCRATCH_IN_SANDBOX = "/tmp/scratch"
"""Where the scratch folder appears inside bwrap; it is the worker's cwd, $HOME and $TMPDIR."""

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
_TMPFS_BYTES = 16 * 1024 * 1024
_warn_lock = threading.Lock()
_warned: set[str] = set()

BOOTSTRAP = (
    "import os,sys\n"
    "n=int(sys.argv[1]);b=bytearray()\n"
    "while len(b)<n:\n"
    " c=os.read(0,n-len(b))\n"
    " if not c:raise SystemExit('genprm sandbox: worker source truncated')\n"
    " b+=c\n"
    "exec(compile(bytes(b),'genprm-sandbox-worker','exec'),{'__name__':'__main__'})\n"
)
"""``python -c`` program that reads exactly argv[1] bytes of worker source from stdin and runs it."""


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
def worker_source() -> bytes:
    """The worker program, as written into its stdin at start-up."""
    with open(WORKER_SCRIPT, "rb") as fh:
        return fh.read()


def worker_command(python: str, spec_json: str) -> list[str]:
    """A worker's command line (``-I``: no env vars, no user site, no cwd on path)."""
    return [python, "-I", "-B", "-c", BOOTSTRAP, str(len(worker_source())), spec_json]


def keeper_command(keeper_json: str) -> list[str]:
    """The rlimits-mode keeper (our own interpreter, our own rights) that owns a worker's process tree."""
    return [sys.executable, "-I", "-S", "-B", WORKER_SCRIPT, "--keeper", keeper_json]


# -- the interpreter the worker runs ------------------------------------------------------------


@dataclass(frozen=True)
class Interpreter:
    """A Python that runs workers, and the folders it must read.

    python: absolute path executed. paths: its prefixes, the folder of its real executable and the
    roots of the pre-imported packages. extra_paths: sys.path entries the worker appends (the roots
    of pre-imports that the verifier's own sys.path found; only for the verifier's interpreter).
    """

    python: str
    paths: tuple[str, ...]
    extra_paths: tuple[str, ...]


_FACTS_SCRIPT = (
    "import importlib.util, json, os, sys\n"
    "roots = []\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        spec = importlib.util.find_spec(name.split('.')[0])\n"
    "    except (ImportError, ValueError):\n"
    "        spec = None\n"
    "    if spec is not None and spec.submodule_search_locations:\n"
    "        roots.append(os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0])))\n"
    "    elif spec is not None and spec.origin and os.path.isabs(spec.origin):\n"
    "        roots.append(os.path.dirname(spec.origin))\n"
    "print(json.dumps({'prefixes': [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix],\n"
    "                  'executable': os.path.realpath(sys.executable), 'roots': roots}))\n"
)


@functools.cache
def interpreter(python: str | None, preimport: tuple[str, ...]) -> Interpreter:
    """Facts about ``python`` (None: the verifier's own); raises SandboxUnavailableError if it cannot run."""
    if python is None or os.path.abspath(python) == os.path.abspath(sys.executable):
        roots = module_roots(preimport)
        prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
        facts = {"prefixes": prefixes, "executable": os.path.realpath(sys.executable), "roots": list(roots)}
        exe, extra = sys.executable, roots
    else:
        found = shutil.which(python) if os.sep not in python else python
        if found is None:
            raise SandboxUnavailableError(f"sandbox python {python!r} not found on PATH")
        exe = os.path.abspath(found)
        try:
            res = subprocess.run([exe, "-I", "-c", _FACTS_SCRIPT, *preimport], capture_output=True, timeout=60,
                                 stdin=subprocess.DEVNULL, check=False)
            facts = json.loads(res.stdout.decode("utf-8"))
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            raise SandboxUnavailableError(f"sandbox python {python!r} does not run: {e}") from e
        extra = ()
    paths = {os.path.abspath(p) for p in facts["prefixes"]}
    paths.add(os.path.dirname(str(facts["executable"])))
    paths.add(os.path.dirname(exe))
    paths.update(os.path.abspath(p) for p in facts["roots"])
    return Interpreter(exe, tuple(sorted(paths)), tuple(extra))


@functools.cache
def module_roots(preimport: tuple[str, ...]) -> tuple[str, ...]:
    """The sys.path entries of this process that hold the pre-imported packages (found without importing)."""
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


# -- can an unrelated uid reach it? -------------------------------------------------------------


def under(path: str, parent: str) -> bool:
    """``path`` is ``parent`` or inside it."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def blocked_at(path: str, recreated: Iterable[str] = ()) -> str | None:
    """Why an unrelated uid cannot list ``path`` (o+rx) or traverse every folder above it (o+x).

    Returns e.g. "/root is mode 0700", or None when reachable. Folders under ``recreated`` (rebuilt
    with mode 0755 inside bwrap) are not checked.
    """
    skip = tuple(recreated)
    target = os.path.abspath(path)
    parts = target.split("/")
    for i in range(2, len(parts) + 1):
        d = "/".join(parts[:i])
        if any(under(d, h) and d != target for h in skip):
            continue
        try:
            mode = os.stat(d).st_mode
        except OSError as e:
            return f"{d} cannot be read ({e.strerror})"
        need = stat.S_IXOTH | (stat.S_IROTH if d == target else 0)
        if mode & need != need:
            return f"{d} is mode {stat.S_IMODE(mode):04o}"
    return None


def unreachable(paths: Iterable[str], recreated: Iterable[str] = ()) -> str | None:
    """The first reason an unrelated uid cannot read one of ``paths``, or None."""
    hidden = tuple(recreated)
    for p in paths:
        why = blocked_at(p, hidden)
        if why is not None:
            return why
    return None


def executable_by_others(path: str) -> str | None:
    """Why an unrelated uid cannot execute ``path``, or None."""
    why = blocked_at(os.path.dirname(os.path.abspath(path)))
    if why is not None:
        return why
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"{path} cannot be read ({e.strerror})"
    return None if mode & stat.S_IXOTH else f"{path} is mode {stat.S_IMODE(mode):04o}"


# -- the bubblewrap command line ----------------------------------------------------------------


def _hidden_parent(path: str) -> str | None:
    for h in HIDDEN_DIRS:
        if under(path, h) and path != h:
            return h
    return None


def bwrap_argv(bwrap: str, scratch: str, paths: Iterable[str], command: list[str], *, userns: bool,
               keep_setuid: bool, info_fd: int | None = None) -> list[str]:
    """The full bwrap command line around ``command`` (see the module docstring for the policy).

    userns: a new user namespace in which further user namespaces are disabled (bwrap then runs
    as, and maps, the uid it was started with). keep_setuid: bwrap runs as root and the worker
    drops to its uid itself, so CAP_SETUID/CAP_SETGID are kept for that one step (they are gone,
    with every other capability, before any model code runs).
    """
    argv = [bwrap] + (["--info-fd", str(info_fd)] if info_fd is not None else [])
    if userns:
        argv += ["--unshare-user", "--disable-userns"]
    argv += ["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
             "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--ro-bind", "/", "/"]
    for d in HIDDEN_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            argv += ["--size", str(_TMPFS_BYTES), "--tmpfs", d]
    created: set[str] = set()
    binds = sorted({p for p in paths if _hidden_parent(p)})
    for p in binds:
        if any(under(p, q) and p != q for q in binds):
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
    argv += ["--cap-drop", "ALL"]
    if keep_setuid:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return argv + ["--", *command]
