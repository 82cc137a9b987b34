"""Settings of the code sandbox, validated once so a bad value fails at construction time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Isolation = Literal["auto", "bwrap", "rlimits"]
_ISOLATIONS: tuple[str, ...] = ("auto", "bwrap", "rlimits")


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation of one code session.

    timeout_s: wall-clock seconds one ``run`` may take; enforced by the parent, which then SIGKILLs
        the worker and everything it spawned.
    memory_mb: address-space limit (RLIMIT_AS) of each sandboxed process.
    cpu_s: CPU seconds one ``run`` may burn (a soft RLIMIT_CPU re-armed before every run); a backstop
        behind ``timeout_s`` for multi-threaded code. When hit, the code gets upstream's time-out
        text and the session goes on.
    max_processes: processes/threads the worker may create (RLIMIT_NPROC; the worker always runs
        under a uid other than 0, its own one when we are root).
    max_file_mb: largest file the code may write (RLIMIT_FSIZE).
    max_output_chars: output kept per run; the rest is counted and replaced by a marker.
    isolation: "auto" or "bwrap" (bubblewrap namespaces + rlimits; raise SandboxUnavailableError with
        a one-line fix when bubblewrap is unusable, never run the code unisolated), or "rlimits" (the
        unsafe opt-in: resource limits and process-tree tracking only; as root the code runs as an
        unprivileged uid, or we refuse). See docs/sandbox.md.
    python: the interpreter that runs the model's code (default: the one running genprm). Its
        pre-imports must be installed in it. Lets root use ``rlimits`` where genprm's own Python is
        private to root.
    bwrap: the bubblewrap binary, a path or a name looked up on PATH (default: ``bwrap``).
    preimport: modules imported in the worker before it reports ready, so checks start warm.
    pool_size: idle warm workers the process-wide pool keeps for this configuration (0: no pool).
    """

    timeout_s: float = 5.0
    memory_mb: int = 2048
    cpu_s: int = 120
    max_processes: int = 64
    max_file_mb: int = 64
    max_output_chars: int = 65536
    isolation: Isolation = "auto"
    python: str | None = None
    bwrap: str | None = None
    preimport: tuple[str, ...] = ("sympy", "numpy", "scipy")
    pool_size: int = 2

    def __post_init__(self) -> None:
        """Reject values that would make the sandbox useless or unsafe, naming the parameter."""
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"timeout_s={t!r}: must be a finite number of seconds > 0")
        _check_int("memory_mb", self.memory_mb, 128)
        _check_int("cpu_s", self.cpu_s, 1)
        _check_int("max_processes", self.max_processes, 1)
        _check_int("max_file_mb", self.max_file_mb, 1)
        _check_int("max_output_chars", self.max_output_chars, 1)
        _check_int("pool_size", self.pool_size, 0)
        if self.isolation not in _ISOLATIONS:
            raise ValueError(f"isolation={self.isolation!r}: must be one of {', '.join(_ISOLATIONS)}")
        for name in ("python", "bwrap"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name}={value!r}: must be a path (or None for the default)")
        if isinstance(self.preimport, str) or not isinstance(self.preimport, tuple):
            raise ValueError(f"preimport={self.preimport!r}: must be a tuple of module names")
        for name in self.preimport:
            parts = name.split(".") if isinstance(name, str) else []
            if not parts or not all(p.isidentifier() for p in parts):
                raise ValueError(f"preimport={self.preimport!r}: {name!r} is not a module name")


def _check_int(name: str, value: object, minimum: int) -> None:
    """Integers only (not bool), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
