"""Per-worker unprivileged uids (when we are root), leased so no two workers ever share one.

A worker's uid is its identity for the kernel: RLIMIT_NPROC counts its processes, other users'
files and processes are out of its reach, and "every process of this uid" is exactly the worker's
process tree, so killing them all (``kill(-1)`` as that uid) is a complete clean-up. That only holds
if the uid is ours alone, hence the lease: an ``flock`` on ``<lock dir>/<uid>`` held for the
worker's life (shared by every genprm process on the machine), and a uid is skipped if it names a
user or group, falls in a /etc/subuid or /etc/subgid range (rootless containers) or still owns a
process.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import grp
import itertools
import logging
import os
import pwd
import random
import stat
import tempfile
import threading

from genprm.errors import SandboxUnavailableError

log = logging.getLogger("genprm.sandbox")

UID_BASE = 200_000
UID_SPAN = 60_000
_LOCK_DIR_CANDIDATES = ("/run/genprm-sandbox-uids", "/var/lock/genprm-sandbox-uids")
_start = random.Random().randrange(UID_SPAN)  # noqa: S311 - spreads processes over the range
_counter = itertools.count()
_local_lock = threading.Lock()
_held_here: set[int] = set()  # flock is per open file, so we also refuse a uid this process holds


class UidLease:
    """Exclusive use of one unprivileged uid (also used as its gid) until ``release()``."""

    def __init__(self, uid: int, fd: int | None) -> None:
        self.uid = uid
        self._fd = fd

    def release(self) -> None:
        """Give the uid back; only call when none of its processes is left."""
        if self._fd is None and self.uid not in _held_here:
            return
        with _local_lock:
            _held_here.discard(self.uid)
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def __repr__(self) -> str:
        return f"UidLease({self.uid})"


def lease_uid() -> UidLease:
    """A uid no user, group, subordinate id range, live process or other worker uses."""
    lock_dir = _lock_dir()
    busy = uids_with_processes()
    taken = _subordinate_ranges()
    for _ in range(UID_SPAN):
        uid = UID_BASE + (_start + next(_counter)) % UID_SPAN
        if uid in busy or any(lo <= uid < hi for lo, hi in taken) or _named(uid):
            continue
        with _local_lock:
            if uid in _held_here:
                continue
            fd = _try_lock(lock_dir, uid) if lock_dir is not None else None
            if lock_dir is not None and fd is None:
                continue
            _held_here.add(uid)
        return UidLease(uid, fd)
    raise SandboxUnavailableError(f"no free unprivileged uid in {UID_BASE}..{UID_BASE + UID_SPAN - 1}")


def uids_with_processes() -> set[int]:
    """Real and saved uids of every process we can see (what ``kill`` permissions go by)."""
    found: set[int] = set()
    for pid in _pids():
        line = _status_field(pid, "Uid")
        if line:
            parts = line.split()
            found.update(int(p) for p in (parts[0], parts[2]) if p.isdigit())
    return found


def processes_of_uid(uid: int) -> list[int]:
    """Pids whose real or saved uid is ``uid``."""
    out = []
    for pid in _pids():
        line = _status_field(pid, "Uid")
        if line:
            parts = line.split()
            if str(uid) in (parts[0], parts[2]):
                out.append(pid)
    return out


def _pids() -> list[int]:
    try:
        return [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def _status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1]
    except OSError:
        return None
    return None


def _named(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


@functools.cache
def _subordinate_ranges() -> tuple[tuple[int, int], ...]:
    """[lo, hi) ranges handed to rootless containers in /etc/subuid and /etc/subgid."""
    ranges = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        ranges.append((int(parts[1]), int(parts[1]) + int(parts[2])))
        except OSError:
            continue
    return tuple(ranges)


@functools.cache
def _lock_dir() -> str | None:
    """A root-owned 0700 folder for the lease files, shared by all genprm processes; None if none is safe."""
    candidates = [*_LOCK_DIR_CANDIDATES, os.path.join(tempfile.gettempdir(), "genprm-sandbox-uids-0")]
    for path in candidates:
        with contextlib.suppress(OSError):
            os.makedirs(path, mode=0o700, exist_ok=True)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and st.st_mode & 0o077 == 0:
            return path
    log.warning("genprm sandbox: no safe folder for uid lease files; uids are unique within this process only")
    return None


def _try_lock(lock_dir: str, uid: int) -> int | None:
    try:
        fd = os.open(os.path.join(lock_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
