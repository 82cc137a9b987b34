"""The sandboxed worker: runs model-written code in a persistent namespace and reports the output.

Two roles, both stdlib-only (nothing from genprm is imported, so they run under ``-I`` with a
minimal ``sys.path``):

* the worker itself, started as ``python -I -B -c <bootstrap> <size> <config-json>``: the parent
  writes this file's source into its stdin, so the worker needs no access to genprm's folder;
* in rlimits mode, the keeper (``python -I -S -B worker.py --keeper <json>``), run by the parent
  with the parent's rights: a child subreaper that starts the worker (as the worker's own uid when
  we are root), reaps everything the model's code leaves behind and, when the parent closes its
  control pipe or the worker dies, kills the whole process tree and exits with the worker's status
  (128 + signal for a signal death, like bwrap).

Worker start-up order matters: move the protocol pipes off fds 0/1, drop root (bwrap+setuid only),
set the resource limits, pre-import the heavy modules under those limits, point fds 0/1/2 at
/dev/null and only then report ready. Messages are 4-byte big-endian length + UTF-8 JSON.

The worker is a child subreaper too: whatever the code forks (even after ``setsid`` and a double
fork) stays its descendant, and after each run that left processes behind they are all killed --
with ``kill(-1)`` where that reaches only the sandbox (own pid namespace, or own uid), else by
walking the process tree.

CPU time is limited per run: before each run the soft RLIMIT_CPU is set to the CPU used so far
plus ``cpu_s``; hitting it raises ``TimeoutError("Code execution timed out")`` in the code, which
is upstream's time-out text. The hard limit is left alone, so a worker never dies of old age.

What this process does NOT protect against by itself: the code runs with full Python powers inside
whatever the parent built around it (bwrap namespaces, or nothing but rlimits). The code can forge
protocol replies for its own session; the parent treats any malformed reply as a crash.
"""

from __future__ import annotations

import gc
import io
import json
import math
import os
import resource
import select
import signal
import struct
import sys
import time
from typing import Any

_HEADER = struct.Struct(">I")
_MAX_REQUEST = 64 * 1024 * 1024
_MAIN_PID = os.getpid()
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_KILL_DEADLINE_S = 5.0
_proto: dict[str, int] = {}
_in_code = [False]  # the SIGXCPU handler only interrupts the model's code, never our own


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


# -- process trees ------------------------------------------------------------------------------


def _children_by_parent() -> dict[int, list[int]]:
    """The children of every process, from /proc/<pid>/stat (its comm field may hold spaces and parentheses)."""
    tree: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return tree
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            tree.setdefault(int(fields[1]), []).append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return tree


def _descendants(root: int) -> list[int]:
    tree = _children_by_parent()
    found, todo = [], list(tree.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, ()))
    return found


def _reap() -> bool:
    """Reap every exited child; True while children remain."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _kill_tree(root: int) -> None:
    """SIGKILL every descendant of ``root`` (a subreaper: orphans come back to it) until none is left.

    A process forked between a scan and the kills is the child of a killed one, so it is
    reparented to ``root`` and found by the next scan.
    """
    end = time.monotonic() + _KILL_DEADLINE_S
    while time.monotonic() < end:
        victims = _descendants(root)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not _reap() and not victims:
            return
        time.sleep(0.002)


def _kill_all_but_me() -> None:
    """``kill(-1, SIGKILL)``: every process we may signal except ourselves (and a pid namespace's init)."""
    for _ in range(2):
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass


def _clean_up_after_run(cfg: dict[str, Any]) -> None:
    """Kill and reap whatever the code left running (background processes, a fork bomb)."""
    if not _reap():
        return
    if cfg["in_pidns"] or cfg["own_uid"]:
        _kill_all_but_me()
        end = time.monotonic() + _KILL_DEADLINE_S
        while _reap() and time.monotonic() < end:
            _kill_all_but_me()
            time.sleep(0.002)
    else:
        _kill_tree(os.getpid())


# -- per-run CPU limit --------------------------------------------------------------------------


def _on_cpu_limit(_signum: int, _frame: Any) -> None:
    if _in_code[0]:
        raise TimeoutError("Code execution timed out")


def _set_cpu_budget(seconds: float | None) -> None:
    """Soft RLIMIT_CPU = CPU used so far + ``seconds`` (None: as high as the hard limit allows)."""
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if seconds is None:
            want = hard
        else:
            use = resource.getrusage(resource.RUSAGE_SELF)
            want = int(math.ceil(use.ru_utime + use.ru_stime + seconds))
            if hard != resource.RLIM_INFINITY:
                want = min(want, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (want, hard))
    except (ValueError, OSError):
        pass


# -- running one block --------------------------------------------------------------------------


def _run(code: str, namespace: dict[str, Any], limit: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Execute one code block with upstream semantics; never raises."""
    cap = _Capture(limit)
    sys.stdout, sys.stderr = cap, _Null()
    _set_cpu_budget(cfg["cpu_s"])
    try:
        _in_code[0] = True
        exec(code, namespace)
        _in_code[0] = False
        reply: dict[str, Any] = {"kind": "ok"}
    except TimeoutError as e:  # upstream caught its own TimeoutError first, so user ones look alike
        _in_code[0] = False
        reply = {"kind": "timeout"}
        reply["msg"], reply["dropped"] = _text(e, limit)
    except BaseException as e:  # noqa: BLE001 - SystemExit/KeyboardInterrupt are data too
        _in_code[0] = False
        reply = {"kind": "error", "type": type(e).__name__}
        reply["msg"], reply["dropped"] = _text(e, limit)
        if isinstance(e, MemoryError):
            reply["recycle"] = _out_of_memory()
    finally:
        _in_code[0] = False
        if os.getpid() != _MAIN_PID:
            os._exit(0)  # a forked child of user code unwound to here: vanish silently
        sys.stdout = sys.stderr = _Null()
    _set_cpu_budget(None)
    if reply["kind"] == "ok":
        reply["out"], reply["dropped"] = cap.result()
    _clean_up_after_run(cfg)
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
    uid = os.getuid()
    nproc = cfg["max_processes"] + (0 if uid == 0 else _tasks_of_uid(uid))
    wanted = [
        ("RLIMIT_AS", cfg["memory_mb"] * mib),
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
    _set_cpu_budget(cfg["cpu_s"])  # the pre-imports run under the per-run budget too
    applied.append("RLIMIT_CPU")
    return applied


def _drop_privileges(uid: int) -> None:
    """Become an unprivileged uid (groups, gid, then uid): the permitted and effective capabilities go with root."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise RuntimeError(f"could not drop to uid {uid}")
    _clear_capabilities()


def _clear_capabilities() -> None:
    """capset(2) everything to zero: also the inheritable set, which bwrap fills with its --cap-add."""
    try:
        import ctypes

        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
        data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} words, all zero
        if ctypes.CDLL(None, use_errno=True).capset(header, data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
    except AttributeError:
        pass


def _setup(cfg: dict[str, Any]) -> dict[str, Any]:
    """Everything between exec and 'ready'; raises on failure (the parent reads our stderr)."""
    _proto["in"], _proto["out"] = os.dup(0), os.dup(1)  # dup() fds are close-on-exec
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    if sys.platform.startswith("linux"):
        _libc_prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # setuid binaries cannot regain root
    if cfg["drop_uid"] is not None:
        _drop_privileges(cfg["drop_uid"])
    if sys.platform.startswith("linux"):
        _libc_prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of the code stay ours
        if cfg["pdeathsig"]:
            _libc_prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # die with the keeper
            if os.getppid() != cfg["parent_pid"]:
                os._exit(1)  # the keeper died before PDEATHSIG was armed
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-size writes raise OSError instead of killing
    signal.signal(signal.SIGXCPU, _on_cpu_limit)
    applied = _set_limits(cfg)
    for path in cfg["extra_paths"]:
        if path not in sys.path:
            sys.path.append(path)
    import importlib

    for name in cfg["preimport"]:
        importlib.import_module(name)
    _set_cpu_budget(None)
    gc.collect()
    os.dup2(null, 2)
    os.close(null)
    sys.stdout = sys.stderr = _Null()
    return {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "limits": applied,
            "preimported": cfg["preimport"]}


def worker_main(cfg: dict[str, Any]) -> None:
    """Serve run requests until the parent closes the pipe."""
    info = _setup(cfg)
    _send({"kind": "ready", **info})
    namespace: dict[str, Any] = {}  # upstream: exec(code, {}) -- no __name__ == "__main__"
    while True:
        req = _recv()
        if req is None:
            os._exit(0)
        reply = _run(str(req["code"]), namespace, int(req["limit"]), cfg)
        reply["seq"] = req["seq"]
        _send(reply)


# -- the keeper (rlimits mode) ------------------------------------------------------------------


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid``: a child becomes that uid and calls ``kill(-1, SIGKILL)``.

    Complete when ``uid`` is the worker's alone: kill(-1) is atomic with respect to fork.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            _kill_all_but_me()
        finally:
            os._exit(0)
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _start_worker(cfg: dict[str, Any], keep: tuple[int, ...]) -> int:
    """Fork and exec the worker (after dropping to its uid, when there is one); returns its pid."""
    argv = list(cfg["argv"])
    spec = json.loads(argv[-1])
    spec["parent_pid"] = os.getpid()
    argv[-1] = json.dumps(spec)
    pid = os.fork()
    if pid != 0:
        return pid
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in keep:
            os.close(fd)
        if cfg["uid"] is not None:
            _drop_privileges(cfg["uid"])
        os.execve(argv[0], argv, cfg["env"])
    except BaseException as e:  # noqa: BLE001 - report and vanish, never return into the keeper
        os.write(2, f"genprm sandbox keeper: cannot start the worker: {e}\n".encode(errors="replace"))
    os._exit(127)


def keeper_main(cfg: dict[str, Any]) -> None:
    """Own the worker's process tree until the parent lets go or the worker dies; then kill it all."""
    _libc_prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    control = int(cfg["control_fd"])
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    signal.set_wakeup_fd(wake_w)
    worker = _start_worker(cfg, (control, wake_r, wake_w))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # the protocol pipes are the worker's alone: EOF must mean "the worker is gone"
    os.dup2(null, 1)
    os.close(null)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    status: int | None = None
    released = False
    while status is None and not released:
        for fd, _event in poller.poll(1000):
            if fd == control:
                released = True  # the parent closed the pipe (or wrote to it): clean up now
            else:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == worker:
                status = st
    if cfg["uid"] is not None:
        _kill_uid(cfg["uid"])
    _kill_tree(os.getpid())
    if status is None:
        os._exit(0)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def main() -> None:
    """Dispatch on the role: ``--keeper <json>`` or (bootstrapped) ``<size> <config-json>``."""
    if len(sys.argv) == 3 and sys.argv[1] == "--keeper":
        keeper_main(json.loads(sys.argv[2]))
    else:
        worker_main(json.loads(sys.argv[-1]))


if __name__ == "__main__":
    main()
