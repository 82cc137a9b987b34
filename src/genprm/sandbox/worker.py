"""The sandboxed worker: runs model-written code in a persistent namespace and reports the output.

Started by the parent as ``python -I -B <this file> <config-json>`` (inside bubblewrap when
available). It is deliberately stdlib-only and imports nothing from genprm, so it can run under
``-I`` with a minimal ``sys.path`` and without executing the package's ``__init__`` files.

Start-up order matters: move the protocol pipes off fds 0/1, set the resource limits, drop root
(when asked), pre-import the heavy modules under those limits, point fds 0/1/2 at /dev/null and
only then report ready. Messages are 4-byte big-endian length + UTF-8 JSON.

What this process does NOT protect against by itself: the code runs with full Python powers inside
whatever the parent built around it (bwrap namespaces, or nothing but rlimits). The code can forge
protocol replies for its own session; the parent treats any malformed reply as a crash.
"""

from __future__ import annotations

import gc
import io
import json
import os
import resource
import signal
import struct
import sys
import time
from typing import Any

_HEADER = struct.Struct(">I")
_MAX_REQUEST = 64 * 1024 * 1024
_MAIN_PID = os.getpid()
_forks = [0]  # forks (os.fork and friends) made by user code since the last run started
_proto: dict[str, int] = {}


def _read_exact(fd: int, n: int) -> bytes | None:
    """Read exactly n bytes, or None on EOF."""
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv() -> dict[str, Any] | None:
    """One request from the parent, or None when the parent closed the pipe."""
    head = _read_exact(_proto["in"], _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    if size > _MAX_REQUEST:
        return None
    body = _read_exact(_proto["in"], size)
    return None if body is None else dict(json.loads(body.decode("utf-8")))


def _send(obj: dict[str, Any]) -> None:
    """One reply to the parent, written in full."""
    body = json.dumps(obj, ensure_ascii=False).encode("utf-8", "replace")
    data = memoryview(_HEADER.pack(len(body)) + body)
    while data:
        data = data[os.write(_proto["out"], data) :]


def _after_fork_in_child() -> None:
    """A forked child of user code must never speak the protocol: close its copies of the pipes."""
    for fd in _proto.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _proto.clear()


def _count_forks() -> None:
    _forks[0] += 1


class _Capture(io.TextIOBase):
    """Bounded stand-in for upstream's StringIO: skips leading blanks, keeps ``limit`` characters.

    Characters past the limit are only counted, so printing 100 MB costs no memory here. The count
    excludes trailing whitespace, matching upstream's final ``.strip()``.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._parts: list[str] = []
        self._kept = 0
        self._started = False
        self._seen_past = 0  # characters seen beyond the limit
        self._dropped = 0  # of those, up to the last non-blank one

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"string argument expected, got '{type(s).__name__}'")
        n = len(s)
        if not self._started:
            s = s.lstrip()
            if not s:
                return n
            self._started = True
        room = self._limit - self._kept
        if room > 0:
            part = s[:room]
            self._parts.append(part)
            self._kept += len(part)
        if len(s) > room:
            end = len(s.rstrip())
            if end > max(room, 0):
                self._dropped = self._seen_past + end - max(room, 0)
            self._seen_past += len(s) - max(room, 0)
        return n

    def writable(self) -> bool:
        return True

    def result(self) -> tuple[str, int]:
        """The kept text (stripped) and how many meaningful characters were dropped."""
        text = "".join(self._parts)
        return (text if self._dropped else text.rstrip()), self._dropped


class _Null(io.TextIOBase):
    """Where the code's stderr goes: upstream never captured it, and we must not keep it."""

    def write(self, s: str) -> int:
        return len(s)

    def writable(self) -> bool:
        return True


def _text(e: BaseException, limit: int) -> tuple[str, int]:
    """``str(e)`` bounded to ``limit`` characters, robust to a hostile ``__str__``."""
    try:
        s = str(e)
    except BaseException:  # noqa: BLE001 - user-defined __str__ may raise anything
        s = "<exception str() failed>"
    return (s[:limit], len(s) - limit) if len(s) > limit else (s, 0)


def _reap_forked_children(in_pidns: bool) -> None:
    """Kill and reap what os.fork() in user code left behind (e.g. a fork bomb).

    Only inside a private pid namespace: there ``kill(-1)`` reaches just the sandbox's own processes.
    """
    if in_pidns:
        for _ in range(2):
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
    flags = 0 if in_pidns else os.WNOHANG  # after SIGKILL-ing them all, waiting cannot hang long
    while True:
        try:
            pid, _status = os.waitpid(-1, flags)
        except ChildProcessError:
            break
        if pid == 0:
            break
    if in_pidns:  # wait (briefly) until bwrap's init has reaped the orphans: zombies count for NPROC
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _others_in_namespace():
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            time.sleep(0.005)


def _others_in_namespace() -> bool:
    """Any process in our pid namespace besides its init (pid 1) and us?"""
    me = str(os.getpid())
    try:
        return any(p.isdigit() and p not in ("1", me) for p in os.listdir("/proc"))
    except OSError:
        return False


def _run(code: str, namespace: dict[str, Any], limit: int, in_pidns: bool) -> dict[str, Any]:
    """Execute one code block with upstream semantics; never raises."""
    cap = _Capture(limit)
    _forks[0] = 0
    sys.stdout, sys.stderr = cap, _Null()
    try:
        exec(code, namespace)
        reply: dict[str, Any] = {"kind": "ok"}
    except TimeoutError as e:  # upstream caught its own TimeoutError first, so user ones look alike
        reply = {"kind": "timeout"}
        reply["msg"], reply["dropped"] = _text(e, limit)
    except BaseException as e:  # noqa: BLE001 - SystemExit/KeyboardInterrupt are data too
        reply = {"kind": "error", "type": type(e).__name__}
        reply["msg"], reply["dropped"] = _text(e, limit)
        if isinstance(e, MemoryError):
            reply["recycle"] = _out_of_memory()
    finally:
        if os.getpid() != _MAIN_PID:
            os._exit(0)  # a forked child of user code unwound to here: vanish silently
        sys.stdout = sys.stderr = _Null()
    if reply["kind"] == "ok":
        reply["out"], reply["dropped"] = cap.result()
    if _forks[0]:
        _reap_forked_children(in_pidns)
    return reply


def _out_of_memory() -> bool:
    """After a MemoryError, is there still room to work? If not, ask the parent for a fresh worker."""
    gc.collect()
    try:
        probe = bytearray(64 * 1024 * 1024)
        del probe
        return False
    except MemoryError:
        return True


def _libc_prctl(*args: int) -> None:
    """prctl(2) via ctypes; best effort (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(*[ctypes.c_ulong(a) for a in args])
    except (OSError, AttributeError):
        pass


def _tasks_of_uid(uid: int) -> int:
    """Processes+threads visible in /proc owned by ``uid``: RLIMIT_NPROC counts them all."""
    total = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields.get("Threads", "1"))
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return total


def _set_limits(cfg: dict[str, Any]) -> list[str]:
    """Apply the resource limits (lowering is always allowed); returns the ones that took."""
    mib = 1024 * 1024
    uid = cfg["drop_uid"] if cfg["drop_uid"] is not None else os.getuid()
    nproc = cfg["max_processes"] + (0 if uid == 0 else _tasks_of_uid(uid))
    wanted = [
        ("RLIMIT_AS", cfg["memory_mb"] * mib),
        ("RLIMIT_CPU", cfg["cpu_s"]),
        ("RLIMIT_FSIZE", cfg["max_file_mb"] * mib),
        ("RLIMIT_NPROC", nproc),
        ("RLIMIT_NOFILE", 256),
        ("RLIMIT_CORE", 0),
    ]
    applied = []
    for name, value in wanted:
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            _soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
            applied.append(name)
        except (ValueError, OSError):
            pass
    return applied


def _drop_privileges(uid: int) -> None:
    """Become an unprivileged uid (groups, gid, then uid) so RLIMIT_NPROC and permissions bite."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise RuntimeError(f"could not drop to uid {uid}")


def _setup(cfg: dict[str, Any]) -> dict[str, Any]:
    """Everything between exec and 'ready'; raises on failure (the parent reads our stderr)."""
    _proto["in"], _proto["out"] = os.dup(0), os.dup(1)  # dup() fds are close-on-exec
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.register_at_fork(after_in_child=_after_fork_in_child, after_in_parent=_count_forks)
    if sys.platform.startswith("linux"):
        _libc_prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries cannot regain root
        if cfg["pdeathsig"]:
            _libc_prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: die with the parent
            if os.getppid() != cfg["parent_pid"]:
                os._exit(1)  # the parent died before PDEATHSIG was armed
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-size writes raise OSError instead of killing
    applied = _set_limits(cfg)
    if cfg["drop_uid"] is not None:
        _drop_privileges(cfg["drop_uid"])
    for path in cfg["extra_paths"]:
        if path not in sys.path:
            sys.path.append(path)
    import importlib

    for name in cfg["preimport"]:
        importlib.import_module(name)
    gc.collect()
    os.dup2(null, 2)
    os.close(null)
    sys.stdout = sys.stderr = _Null()
    return {"pid": os.getpid(), "uid": os.getuid(), "limits": applied, "preimported": cfg["preimport"]}


def main() -> None:
    """Serve run requests until the parent closes the pipe."""
    cfg = json.loads(sys.argv[1])
    info = _setup(cfg)
    _send({"kind": "ready", **info})
    namespace: dict[str, Any] = {}  # upstream: exec(code, {}) -- no __name__ == "__main__"
    while True:
        req = _recv()
        if req is None:
            os._exit(0)
        reply = _run(str(req["code"]), namespace, int(req["limit"]), bool(cfg["in_pidns"]))
        reply["seq"] = req["seq"]
        _send(reply)


if __name__ == "__main__":
    main()
