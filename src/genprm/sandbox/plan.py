"""Which isolation a worker gets, decided once per setting: safe by default, or a clear refusal.

``auto`` and ``bwrap`` need bubblewrap. As root, bwrap itself runs as the worker's own
unprivileged uid inside a new user namespace (``bwrap+userns``) when the kernel allows that and
that uid can read the interpreter; otherwise bwrap runs as root with ``--cap-drop ALL`` plus
CAP_SETUID/CAP_SETGID, and the worker's first act is to drop to its uid, which clears them
(``bwrap+setuid``). As a normal user, bwrap runs as that user in a new user namespace
(``bwrap``). In every case the model's code runs with no capabilities, as a uid other than 0.
Without a usable bubblewrap, ``auto``/``bwrap`` refuse with one line that says how to fix it.

``rlimits`` is the explicit, unsafe opt-in: resource limits and process-tree tracking only. As
root each worker runs as its own unprivileged uid (``rlimits+uid``), or we refuse when that uid
could not run the interpreter; as a normal user the code runs with that user's rights.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from genprm.errors import SandboxRefusedError, SandboxUnavailableError
from genprm.sandbox import isolation, uids
from genprm.sandbox.config import SandboxConfig
from genprm.sandbox.isolation import HIDDEN_DIRS, Interpreter

DOCS = "docs/sandbox.md"
BWRAP_VARIANTS_ROOT: tuple[str, ...] = ("userns", "setuid")
"""Order in which root tries its bwrap launches (tests narrow it to check each one)."""

RLIMITS_WARNING = (
    "genprm sandbox: --sandbox rlimits as a normal user: model code runs as you, with resource limits only; "
    "it can read your files, signal your processes and read their environment (unsafe, see " + DOCS + ")."
)


@dataclass(frozen=True)
class Plan:
    """How every worker of one setting starts.

    isolation: "bwrap" or "rlimits". bwrap: the bubblewrap binary (bwrap mode). userns: bwrap
    makes a user namespace (``--unshare-user --disable-userns``). bwrap_as_worker: root starts
    bwrap under the worker's own uid. self_drop: bwrap runs as root and the worker drops to its
    uid. own_uid: each worker has its own leased uid (we are root).
    """

    isolation: str
    interpreter: Interpreter
    bwrap: str | None = None
    userns: bool = False
    bwrap_as_worker: bool = False
    self_drop: bool = False
    own_uid: bool = False

    @property
    def label(self) -> str:
        """Short name shown in worker info and benchmarks (bwrap+userns, bwrap+setuid, bwrap, rlimits+uid, rlimits)."""
        if self.isolation == "rlimits":
            return "rlimits+uid" if self.own_uid else "rlimits"
        if self.bwrap_as_worker:
            return "bwrap+userns"
        return "bwrap+setuid" if self.self_drop else "bwrap"


def check(config: SandboxConfig) -> str:
    """The launch ``config`` would use (``bwrap+userns``, ...), or :class:`SandboxRefusedError` with the
    one-line fix: callers that will run model code check this first, so a refusal stops a run at once
    instead of failing every sample.
    """
    return resolve(config.isolation, config.python, config.bwrap, config.preimport).label


def resolve(requested: str, python: str | None, bwrap: str | None, preimport: tuple[str, ...]) -> Plan:
    """The plan for a setting, or SandboxUnavailableError with a one-line reason and fix.

    Decided once per setting and process (a refusal too: probing again would only repeat it).
    """
    outcome = _resolve(requested, python, bwrap, preimport, BWRAP_VARIANTS_ROOT)
    if isinstance(outcome, str):
        raise SandboxRefusedError(outcome)
    return outcome


@functools.cache
def _resolve(requested: str, python: str | None, bwrap: str | None, preimport: tuple[str, ...],
             variants: tuple[str, ...]) -> Plan | str:
    try:
        interp = isolation.interpreter(python, preimport)
        if requested == "rlimits":
            return _rlimits_plan(interp)
    except SandboxUnavailableError as e:
        return str(e)
    plan, reason, installed = _bwrap_plan(interp, bwrap, variants)
    return plan if plan is not None else refusal(reason, installed)


def refusal(reason: str, installed: bool) -> str:
    """The one line shown when model code would run without isolation."""
    fixes = ["install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)"] if not installed else []
    if installed:
        fixes.append("allow user namespaces or mounts for it (containers: see " + DOCS + ")")
    if os.geteuid() == 0 and installed:
        fixes.append("run genprm as a normal user")
    fixes.append("or pass --sandbox rlimits to accept resource limits only (unsafe, see " + DOCS + ")")
    return f"genprm sandbox: refusing to run model code without isolation: {reason}. To fix: " + "; ".join(fixes)


def _one_line(text: str, limit: int = 240) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# -- rlimits ------------------------------------------------------------------------------------


def _rlimits_plan(interp: Interpreter) -> Plan:
    if os.geteuid() != 0:
        isolation.warn_once("rlimits-user", RLIMITS_WARNING)
        return Plan("rlimits", interp)
    if not sys.platform.startswith("linux"):
        raise SandboxRefusedError("genprm sandbox: --sandbox rlimits as root needs Linux (to run model code "
                                      "as an unprivileged uid); run genprm as a normal user")
    why = isolation.unreachable([*interp.paths, interp.python])
    if why is not None:
        raise SandboxRefusedError(
            f"genprm sandbox: refusing --sandbox rlimits as root: model code would run as an unprivileged uid, "
            f"which cannot read the Python at {interp.python} ({why}). To fix: install bubblewrap "
            f"(apt-get install bubblewrap); or make that folder traversable (chmod o+x); or point the sandbox at a "
            f"world-readable Python (SandboxConfig.python); or run genprm as a normal user"
        )
    return Plan("rlimits", interp, own_uid=True)


# -- bubblewrap ---------------------------------------------------------------------------------


def _bwrap_plan(interp: Interpreter, bwrap: str | None,
                variants: tuple[str, ...]) -> tuple[Plan | None, str, bool]:
    """(plan, "", True) or (None, why not, whether a bwrap binary exists)."""
    if not sys.platform.startswith("linux"):
        return None, "bubblewrap needs Linux", False
    path = shutil.which(bwrap or "bwrap")
    if path is None:
        where = f"at {bwrap}" if bwrap else "on PATH"
        return None, f"bubblewrap is not installed (no bwrap {where})", False
    candidates: list[Plan] = []
    notes: list[str] = []
    if os.geteuid() == 0:
        for variant in variants:
            if variant == "userns":
                why = isolation.unreachable(interp.paths) or isolation.executable_by_others(path)
                if why is not None:
                    notes.append(f"userns: an unprivileged uid cannot read it ({why})")
                    continue
                candidates.append(Plan("bwrap", interp, path, userns=True, bwrap_as_worker=True, own_uid=True))
            elif variant == "setuid":
                why = isolation.unreachable(interp.paths, HIDDEN_DIRS)
                if why is not None:
                    notes.append(f"setuid: an unprivileged uid cannot read the Python ({why})")
                    continue
                candidates.append(Plan("bwrap", interp, path, self_drop=True, own_uid=True))
    else:
        candidates = [Plan("bwrap", interp, path, userns=True), Plan("bwrap", interp, path)]
    for plan in candidates:
        failure = probe(plan)
        if failure is None:
            return plan, "", True
        notes.append(f"{plan.label}: {failure}")
    return None, f"bubblewrap at {path} cannot start a sandbox here ({_one_line('; '.join(notes))})", True


def probe(plan: Plan) -> str | None:
    """Run ``python -c pass`` the way workers of ``plan`` start; None when it worked, else why not."""
    assert plan.bwrap is not None
    lease = uids.lease_uid() if plan.own_uid else None
    scratch = tempfile.mkdtemp(prefix="genprm-sbx-probe-")
    try:
        uid = lease.uid if lease is not None else None
        if uid is not None:
            os.chown(scratch, uid, uid)
            os.chmod(scratch, 0o700 if plan.bwrap_as_worker else 0o711)
        argv = isolation.bwrap_argv(plan.bwrap, scratch, plan.interpreter.paths,
                                    [plan.interpreter.python, "-I", "-c", "pass"],
                                    userns=plan.userns, keep_setuid=plan.self_drop)
        as_worker = uid if plan.bwrap_as_worker else None
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                             env=isolation.sandbox_env(scratch), cwd="/", check=False, user=as_worker,
                             group=as_worker, extra_groups=[] if as_worker is not None else None)
    except (OSError, subprocess.SubprocessError) as e:
        return _one_line(f"probe failed: {e}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if lease is not None:
            lease.release()
    if res.returncode != 0:
        return _one_line(f"exit {res.returncode}: {res.stderr.decode(errors='replace')}")
    return None


def bwrap_status(preimport: tuple[str, ...] = (), *, python: str | None = None,
                 bwrap: str | None = None) -> tuple[str | None, str]:
    """(path to bwrap, "") when a probe sandbox runs the interpreter, else (None, why not)."""
    try:
        plan = resolve("bwrap", python, bwrap, preimport)
    except SandboxUnavailableError as e:
        return None, str(e)
    return plan.bwrap, ""
