"""One worker process seen from the parent: spawn, handshake, run with a wall clock, kill.

All waiting happens here, in the parent, with ``poll`` on non-blocking pipes: the worker is never
trusted to stop itself. On timeout, close or any protocol surprise the whole process tree is
killed: in bwrap mode by SIGKILLing the init of its pid namespace (the kernel then kills every
process in it), in rlimits mode by closing the keeper's control pipe (the keeper kills every
process of the worker's uid, or walks its subreaper tree, then exits), with SIGKILL of the
process group as the last resort.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from genprm.errors import SandboxUnavailableError
from genprm.sandbox import isolation, plan, uids
from genprm.sandbox.config import SandboxConfig
from genprm.sandbox.messages import (
    TIMEOUT_MESSAGE,
    WORKER_DIED_NAME,
    format_error,
    format_timeout,
    format_truncation,
)
from genprm.sandbox.spawner import spawner

_HEADER = struct.Struct(">I")
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is started with; equal specs give interchangeable (poolable) workers."""

    plan: plan.Plan
    memory_mb: int
    cpu_s: int
    max_processes: int
    max_file_mb: int
    preimport: tuple[str, ...]

    @property
    def isolation(self) -> str:
        """"bwrap" or "rlimits"."""
        return self.plan.isolation

    @classmethod
    def from_config(cls, config: SandboxConfig) -> WorkerSpec:
        """Decide the isolation now (raises SandboxUnavailableError with a one-line fix when unsafe)."""
        chosen = plan.resolve(config.isolation, config.python, config.bwrap, config.preimport)
        return cls(chosen, config.memory_mb, config.cpu_s, config.max_processes, config.max_file_mb,
                   config.preimport)


@dataclass(frozen=True)
class RunResult:
    """The transcript text of one run, whether the worker is gone afterwards, and whether it ran cleanly.

    ok: the code finished without an exception or time-out (what a replay may repeat).
    """

    text: str
    worker_lost: bool
    ok: bool = False


class _ProtocolError(Exception):
    """The worker said something that is not a well-formed reply."""


class Worker:
    """A started, ready worker owned by exactly one session (or idle in the pool)."""

    def __init__(self, spec: WorkerSpec, cancel: threading.Event | None = None) -> None:
        """Spawn and wait until ready; ``cancel`` (set by a pool shutting down) aborts the wait."""
        self.spec = spec
        self._owner_pid = os.getpid()
        self._seq = 0
        self._closed = False
        self._buf = bytearray()
        self.info: dict[str, Any] = {}
        self._ns_init_pid: int | None = None  # bwrap's pid-namespace init, seen from our namespace
        self._info_r: int | None = None
        self._control: int | None = None  # rlimits: closing it tells the keeper to kill the tree
        self._lease: uids.UidLease | None = None
        self._stderr: IO[bytes] | None = None
        self.scratch = ""
        try:
            self._lease = uids.lease_uid() if spec.plan.own_uid else None
            self.scratch = tempfile.mkdtemp(prefix="genprm-sbx-")
            self._stderr = tempfile.TemporaryFile()
            self.proc = self._spawn()
        except OSError as e:
            self._cleanup_files()
            raise SandboxUnavailableError(f"could not start the sandbox worker: {e}") from e
        except BaseException:
            self._cleanup_files()
            raise
        self._in = self.proc.stdin.fileno() if self.proc.stdin else -1
        self._out = self.proc.stdout.fileno() if self.proc.stdout else -1
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        try:
            self._handshake(cancel)
        except BaseException:
            self.close()
            raise

    @property
    def uid(self) -> int | None:
        """The worker's own unprivileged uid (when we are root), else None."""
        return self._lease.uid if self._lease is not None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start bwrap (or the rlimits keeper) around the worker, as the plan says."""
        spec, chosen = self.spec, self.spec.plan
        uid = self.uid
        if uid is not None:
            os.chown(self.scratch, uid, uid)
        # bwrap+setuid: bwrap is root without CAP_DAC_OVERRIDE and must chdir into the uid's folder
        os.chmod(self.scratch, 0o711 if chosen.self_drop else 0o700)
        cfg = {
            "memory_mb": spec.memory_mb, "cpu_s": spec.cpu_s, "max_processes": spec.max_processes,
            "max_file_mb": spec.max_file_mb, "preimport": list(spec.preimport),
            "drop_uid": uid if chosen.self_drop else None, "own_uid": uid is not None,
            "extra_paths": list(chosen.interpreter.extra_paths),
            "in_pidns": chosen.isolation == "bwrap", "pdeathsig": chosen.isolation == "rlimits",
            "parent_pid": 0,  # the keeper fills in its pid
        }
        command = isolation.worker_command(chosen.interpreter.python, json.dumps(cfg))
        kwargs: dict[str, Any] = {}
        passed: int | None = None
        if chosen.isolation == "bwrap":
            assert chosen.bwrap is not None
            self._info_r, passed = os.pipe()
            command = isolation.bwrap_argv(chosen.bwrap, self.scratch, chosen.interpreter.paths, command,
                                           userns=chosen.userns, keep_setuid=chosen.self_drop, info_fd=passed)
            cwd, home = "/", isolation.SCRATCH_IN_SANDBOX
            if chosen.bwrap_as_worker:
                kwargs = {"user": uid, "group": uid, "extra_groups": []}
        else:
            self._control, passed = os.pipe()
            keeper = {"argv": command, "uid": uid, "control_fd": passed,
                      "env": isolation.sandbox_env(self.scratch)}
            command = isolation.keeper_command(json.dumps(keeper))
            cwd, home = self.scratch, self.scratch
        try:
            return spawner.popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self._stderr, cwd=cwd, env=isolation.sandbox_env(home),
                                 start_new_session=True, close_fds=True, pass_fds=(passed,), **kwargs)
        finally:
            os.close(passed)

    def _read_bwrap_info(self) -> None:
        """Learn the pid of bwrap's namespace init from --info-fd (written before our command ran).

        Killing that process first lets the outer bwrap reap it and exit normally, so no zombie is
        left to an init that might not reap (containers).
        """
        if self._info_r is None:
            return
        data = b""
        try:
            os.set_blocking(self._info_r, False)
            while len(data) < 65536:
                chunk = os.read(self._info_r, 4096)
                if not chunk:
                    break
                data += chunk
        except BlockingIOError:
            pass
        finally:
            os.close(self._info_r)
            self._info_r = None
        try:
            pid = json.loads(data.decode("utf-8")).get("child-pid")
        except (ValueError, AttributeError):
            return
        if isinstance(pid, int) and pid > 1:
            self._ns_init_pid = pid

    def _handshake(self, cancel: threading.Event | None) -> None:
        """Wait for 'ready'; anything else means the sandbox itself cannot run."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        msg: dict[str, Any] | None = None
        why = "timed out"
        try:
            if not self._write_all(isolation.worker_source(), deadline):
                raise _ProtocolError("could not hand the worker its program")
            while msg is None and time.monotonic() < deadline:
                if cancel is not None and cancel.is_set():
                    why = "cancelled"
                    break
                msg = self._read_message(min(deadline, time.monotonic() + 0.1), 1 << 20)
        except _ProtocolError as e:
            why = str(e)
        if msg is not None:
            why = f"unexpected first message {msg!r:.200}"
        if msg is not None and msg.get("kind") == "ready":
            self.info = {**msg, "launch": self.spec.plan.label}
            self._read_bwrap_info()
            return
        self.kill()
        err = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            err = self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
        raise SandboxUnavailableError(
            f"sandbox worker ({self.spec.plan.label}) failed to start: {why}; "
            f"exit status {self.proc.returncode}; stderr: {err or '(empty)'}"
        )

    def alive(self) -> bool:
        """True while the worker process runs and has not been closed."""
        return not self._closed and self.proc.poll() is None

    def execute(self, code: str, timeout_s: float, max_chars: int) -> RunResult:
        """Run ``code`` and return the transcript text; never raises for anything the code does."""
        self._seq += 1
        body = json.dumps({"seq": self._seq, "code": code, "limit": max_chars}).encode("utf-8", "replace")
        deadline = time.monotonic() + timeout_s
        try:
            if not self._write_all(_HEADER.pack(len(body)) + body, deadline):
                return self._lost(TIMEOUT_MESSAGE)
            reply = self._read_message(deadline, 16 * max_chars + (1 << 20))
        except _ProtocolError as e:
            if self._died_of(signal.SIGXCPU):  # the code re-armed the default action of the CPU limit
                return self._lost(TIMEOUT_MESSAGE)
            return self._lost(format_error(WORKER_DIED_NAME, str(e)))
        if reply is None:
            return self._lost(TIMEOUT_MESSAGE)
        if reply.get("seq") != self._seq:
            return self._lost(format_error(WORKER_DIED_NAME, "sandbox protocol out of step"))
        try:
            text = self._render(reply)
        except (KeyError, TypeError, ValueError) as e:
            return self._lost(format_error(WORKER_DIED_NAME, f"malformed reply ({e})"))
        if reply.get("recycle"):
            return self._lost(text)
        return RunResult(text, worker_lost=False, ok=reply["kind"] == "ok")

    @staticmethod
    def _render(reply: dict[str, Any]) -> str:
        kind = reply["kind"]
        dropped = int(reply.get("dropped", 0))
        if kind == "ok":
            text = str(reply["out"])
        elif kind == "error":
            text = format_error(str(reply["type"]), str(reply["msg"]))
        elif kind == "timeout":
            text = format_timeout(str(reply["msg"]))
        else:
            raise ValueError(f"unknown kind {kind!r}")
        return text + format_truncation(dropped) if dropped > 0 else text

    def _lost(self, text: str) -> RunResult:
        """Kill the worker and return what the transcript should say."""
        self.kill()
        return RunResult(text, worker_lost=True)

    def _write_all(self, data: bytes, deadline: float) -> bool:
        view = memoryview(data)
        poller = select.poll()
        poller.register(self._in, select.POLLOUT)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if not poller.poll(left * 1000):
                continue
            try:
                view = view[os.write(self._in, view) :]
            except BlockingIOError:
                continue
            except OSError as e:  # EPIPE: the worker is gone
                raise _ProtocolError(self._death_note(f"worker pipe closed ({e.strerror})")) from e
        return True

    def _read_message(self, deadline: float, max_bytes: int) -> dict[str, Any] | None:
        """One length-prefixed JSON message; None on timeout; _ProtocolError on EOF/garbage."""
        poller = select.poll()
        poller.register(self._out, select.POLLIN)
        while True:
            if len(self._buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buf)
                if size > max_bytes:
                    raise _ProtocolError(f"oversized reply ({size} bytes)")
                if len(self._buf) >= _HEADER.size + size:
                    body = bytes(self._buf[_HEADER.size : _HEADER.size + size])
                    del self._buf[: _HEADER.size + size]
                    try:
                        msg = json.loads(body.decode("utf-8"))
                    except ValueError as e:
                        raise _ProtocolError(f"garbled reply ({e})") from e
                    if not isinstance(msg, dict):
                        raise _ProtocolError("garbled reply (not an object)")
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not poller.poll(min(left, 3600.0) * 1000):
                continue
            try:
                chunk = os.read(self._out, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                raise _ProtocolError(self._death_note("worker process died"))
            self._buf += chunk

    def _exit_code(self) -> int | None:
        """The worker's exit status (negative: killed by that signal), once it is gone."""
        try:
            code = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return None
        return -(code - 128) if code > 128 else code  # bwrap and the keeper report a signal as 128 + signo

    def _died_of(self, sig: signal.Signals) -> bool:
        return self._exit_code() == -int(sig)

    def _death_note(self, what: str) -> str:
        """'worker process died (killed by signal SIGSEGV)' and the like."""
        code = self._exit_code()
        if code is None:
            return what
        if code < 0:
            try:
                return f"{what} (killed by signal {signal.Signals(-code).name})"
            except ValueError:
                return f"{what} (killed by signal {-code})"
        return f"{what} (exit status {code})"

    def kill(self) -> None:
        """Kill the worker's whole process tree and reap it."""
        if self._control is not None:  # rlimits: the keeper kills every process of the tree, then exits
            try:  # a byte, not only EOF: a forked child of ours may hold a copy of the pipe
                os.write(self._control, b"k")
            except OSError:
                pass  # the keeper is gone already
            os.close(self._control)
            self._control = None
            try:
                self.proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.returncode is None and self._ns_init_pid is not None and self.proc.poll() is None:
            try:  # the namespace init dies -> the kernel kills every process in the namespace
                os.kill(self._ns_init_pid, signal.SIGKILL)
                self.proc.wait(timeout=2.0)
            except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                pass
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pass
        code = self.proc.returncode
        if self.uid is not None and self.spec.isolation == "rlimits" and code is not None and code < 0:
            self._sweep_uid()  # the keeper was killed before it could clean up
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def _sweep_uid(self) -> None:
        """Last resort: SIGKILL every process of the worker's uid until none is left."""
        assert self.uid is not None
        for _ in range(100):
            pids = uids.processes_of_uid(self.uid)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def close(self) -> None:
        """Kill the worker and delete its scratch folder (only in the process that started it)."""
        if self._closed or os.getpid() != self._owner_pid:
            return
        self._closed = True
        self.kill()
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        for fd in (self._info_r, self._control):
            if fd is not None:
                os.close(fd)
        self._info_r = self._control = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self.scratch:
            _rmtree(self.scratch)
        if self._lease is not None:
            self._lease.release()


def _rmtree(path: str) -> None:
    """Delete a scratch folder even if the code chmod-ed parts of it unreadable."""

    def fix(func: Any, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p) or p, stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:
        shutil.rmtree(path, onerror=fix)
