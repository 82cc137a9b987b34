"""Hostile tests of genprm issue 11, items 9-11: one escape per test, in every launch that claims to
contain it (as root: bwrap+userns, bwrap+setuid and rlimits+uid; as a normal user: bwrap, and
rlimits only for what it claims).

Each test would fail on the sandbox before the fix in at least one launch: rlimits as root ran
the code as root (environment of the parent readable, no process limit, full capabilities), bwrap
without a uid drop kept every capability, and a setsid'd grandchild outlived close().
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sandbox_support import IS_ROOT, LAUNCHES, launch_config, pool_fixture  # noqa: F401

import genprm
from genprm.sandbox import TIMEOUT_MESSAGE, CodeSession, WorkerPool, plan, uids

ROOT_ONLY = pytest.mark.skipif(not IS_ROOT, reason="the property is about running as root")


def _sleepers(token: str) -> list[int]:
    """Host pids of ``sleep 300.<token>`` processes (the grandchildren planted by the tests)."""
    want = b"sleep\x00300." + token.encode() + b"\x00"
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if Path(f"/proc/{name}/cmdline").read_bytes() == want:
                    found.append(int(name))
            except OSError:
                pass
    return found


def _wait_until(predicate: object, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(predicate())  # type: ignore[operator]


def _token() -> str:
    return str(secrets.randbelow(10**9))


SABOTAGE = (
    "import os\n"
    "def _nope(*a, **k):\n    raise ChildProcessError\n"
    "os.waitpid = _nope\n"  # the worker's own after-run clean-up uses these: the code can break it
    "os.kill = lambda *a, **k: None\n"
)


def grandchild(token: str) -> str:
    """Code that plants a setsid'd, double-forked ``sleep 300.<token>`` and returns its parent's exit."""
    return (
        "import os\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sleep', ['sleep', '300.{token}'])\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )


# -- item 9: the parent's environment, process limit, process tree ------------------------------


VERIFIER_SCRIPT = """
import json, os, sys
from genprm.sandbox import CodeSession, SandboxConfig, plan
args = json.loads(sys.argv[1])
plan.BWRAP_VARIANTS_ROOT = tuple(args["variants"])
token = args["token"]
own_block = open('/proc/self/environ', 'rb').read()
code = '''
import glob, os
seen = {}
for name, path in (("ppid", f"/proc/{os.getppid()}/environ"), ("verifier", "/proc/%d/environ")):
    try:
        seen[name] = b"%s" in open(path, "rb").read()
    except OSError as e:
        seen[name] = type(e).__name__
leaks = []
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        if b"%s" in open(path, "rb").read():
            leaks.append(path)
    except OSError:
        pass
print(seen, leaks)
''' % (os.getpid(), token, token)
with CodeSession(SandboxConfig(**{**args["config"], "preimport": tuple(args["config"]["preimport"])})) as s:
    out = s.run(code)
    launch = s.worker_info["launch"]
print(json.dumps({"planted": token.encode() in own_block, "out": out, "launch": launch}))
"""


def _verifier_args(config: object, token: str) -> str:
    fields = dataclasses.asdict(config)  # type: ignore[call-overload]
    fields["preimport"] = list(fields["preimport"])
    return json.dumps({"config": fields, "variants": list(plan.BWRAP_VARIANTS_ROOT), "token": token})


@pytest.mark.parametrize("launch", LAUNCHES)
def test_secret_in_the_verifiers_environment_is_unreadable(launch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real secret in the initial environment block of the verifier process (what /proc/<pid>/environ
    # shows): os.environ changes made after start-up would not be there, and would prove nothing.
    cfg = launch_config(launch, monkeypatch)
    token = _token()
    env = {**os.environ, "GENPRM_TEST_SECRET": f"hunter2-{token}"}
    res = subprocess.run([sys.executable, "-c", VERIFIER_SCRIPT, _verifier_args(cfg, token)], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["planted"] is True and report["launch"] == launch
    assert report["out"].endswith(" []"), report["out"]  # no /proc/*/environ holds the secret
    assert "True" not in report["out"], report["out"]  # neither the parent's nor the verifier's


@pytest.mark.parametrize("launch", LAUNCHES)
def test_cannot_fork_past_max_processes(launch: str, monkeypatch: pytest.MonkeyPatch, pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch, max_processes=8, timeout_s=20.0)
    code = (
        "import os, time\nn = 0\n"
        "try:\n"
        "    for _ in range(40):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "    print(n, 'no limit')\n"
        "except BlockingIOError as e:\n"
        "    print(n, e)\n"
    )
    with CodeSession(cfg, pool=pool) as s:
        out = s.run(code)
        count, _, why = out.partition(" ")
        assert int(count) <= 8 and why == "[Errno 11] Resource temporarily unavailable", out
        assert s.run("print(6 * 7)") == "42"  # the forked children were cleared after the run
        assert s.restarts == 0


@pytest.mark.parametrize("launch", LAUNCHES)
def test_setsid_grandchild_dies_when_the_run_ends(launch: str, monkeypatch: pytest.MonkeyPatch,
                                                  pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch)
    token = _token()
    count = (
        "import time\ntime.sleep(0.2)\nfound = 0\n"
        "for p in os.listdir('/proc'):\n"
        "    try:\n"
        f"        found += p.isdigit() and b'300.{token}' in open('/proc/' + p + '/cmdline', 'rb').read()\n"
        "    except OSError:\n        pass\n"
        "print(found)"
    )
    with CodeSession(cfg, pool=pool) as s:
        assert s.run(grandchild(token) + count) == "1"  # it was running inside the sandbox
        assert _wait_until(lambda: not _sleepers(token), 3.0)


@pytest.mark.parametrize("launch", LAUNCHES)
def test_setsid_grandchild_does_not_survive_close(launch: str, monkeypatch: pytest.MonkeyPatch,
                                                  pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch)
    token = _token()
    s = CodeSession(cfg, pool=pool)
    try:
        assert s.run(grandchild(token) + SABOTAGE) == ""
        assert _wait_until(lambda: _sleepers(token), 3.0), "the grandchild should outlive the sabotaged run"
    finally:
        s.close()
    assert _sleepers(token) == []


@pytest.mark.parametrize("launch", LAUNCHES)
def test_setsid_grandchild_does_not_survive_a_timeout(launch: str, monkeypatch: pytest.MonkeyPatch,
                                                      pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch)
    token = _token()
    with CodeSession(cfg, pool=pool) as s:
        assert s.run(grandchild(token) + SABOTAGE) == ""
        assert _wait_until(lambda: _sleepers(token), 3.0)
        assert s.run("while True:\n    pass") == TIMEOUT_MESSAGE
        assert _sleepers(token) == []
        assert s.run("print(6 * 7)") == "42" and s.restarts == 1


HOLDER_SCRIPT = """
import json, sys, time
from genprm.sandbox import CodeSession, SandboxConfig, plan
args = json.loads(sys.argv[1])
plan.BWRAP_VARIANTS_ROOT = tuple(args["variants"])
s = CodeSession(SandboxConfig(**{**args["config"], "preimport": tuple(args["config"]["preimport"])}))
print(s.run(args["code"]) or "planted", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("launch", LAUNCHES)
def test_process_tree_dies_with_the_verifier(launch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = launch_config(launch, monkeypatch)
    token = _token()
    args = json.loads(_verifier_args(cfg, token))
    args["code"] = grandchild(token) + SABOTAGE
    holder = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, json.dumps(args)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stderr is not None
        first = holder.stdout.readline().strip()
        if first != "planted":
            holder.kill()
            pytest.fail(f"holder said {first!r}: {holder.stderr.read()[-2000:]}")
        assert _wait_until(lambda: _sleepers(token), 3.0)
        holder.send_signal(signal.SIGKILL)  # no atexit, no close(): only the kernel and our design remain
        holder.wait(timeout=10)
        assert _wait_until(lambda: not _sleepers(token), 5.0), "the grandchild outlived the verifier"
    finally:
        if holder.poll() is None:
            holder.kill()
        for pid in _sleepers(token):
            os.kill(pid, signal.SIGKILL)


# -- item 10: capabilities and mounts -----------------------------------------------------------


@pytest.mark.parametrize("launch", LAUNCHES)
def test_code_has_no_capabilities(launch: str, monkeypatch: pytest.MonkeyPatch, pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch)
    code = "import json\nprint(json.dumps({l.split(':')[0]: int(l.split()[1], 16) for l in open('/proc/self/status') if l[:3] == 'Cap'}))"
    with CodeSession(cfg, pool=pool) as s:
        caps = json.loads(s.run(code))
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == caps["CapAmb"] == 0, caps


REMOUNT = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    # a private mount namespace first, so that a sandbox that fails this test still cannot touch the host
    "if libc.unshare(0x00020000) != 0:\n"
    "    print('unshare:', os.strerror(ctypes.get_errno()))\n"
    "else:\n"
    "    libc.mount(None, b'/', None, (1 << 14) | (1 << 18), None)\n"  # MS_REC | MS_PRIVATE
    "    rc = libc.mount(None, b'/', None, 32, None)\n"  # MS_REMOUNT, without MS_RDONLY: mount -o remount,rw /
    "    print('remount:', 'ok' if rc == 0 else os.strerror(ctypes.get_errno()))\n"
)


@pytest.mark.parametrize("launch", LAUNCHES)
def test_remount_root_read_write_fails(launch: str, monkeypatch: pytest.MonkeyPatch, pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch)
    with CodeSession(cfg, pool=pool) as s:
        out = s.run(REMOUNT)
    assert out in ("unshare: Operation not permitted", "remount: Operation not permitted"), out


# -- item 11's other escapes --------------------------------------------------------------------


@pytest.mark.parametrize("launch", LAUNCHES)
def test_cannot_write_outside_the_scratch_folder(launch: str, monkeypatch: pytest.MonkeyPatch, pool: WorkerPool,
                                                 tmp_path: Path) -> None:
    cfg = launch_config(launch, monkeypatch)
    if launch == "rlimits":
        pytest.skip("rlimits as a normal user runs as you: your files are writable (documented)")
    package = Path(genprm.__file__).resolve().parent  # root-owned, world-traversable: only permissions stop it
    targets = [package / f"pwned-{_token()}", Path("/etc") / f"genprm-pwned-{_token()}", tmp_path / "pwned"]
    code = (
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n        open(path, 'w').write('x')\n        print('wrote', path)\n"
        "    except OSError as e:\n        print(type(e).__name__)\n"
    )
    try:
        with CodeSession(cfg, pool=pool) as s:
            out = s.run(code)
            assert s.run("open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())") == "ok"
        assert "wrote" not in out, out
        assert not any(t.exists() for t in targets)
    finally:
        for t in targets:
            t.unlink(missing_ok=True)


@pytest.mark.parametrize("launch", LAUNCHES)
def test_code_does_not_run_as_root(launch: str, monkeypatch: pytest.MonkeyPatch, pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch)
    code = "import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())"
    with CodeSession(cfg, pool=pool) as a, CodeSession(cfg, pool=pool) as b:
        ids_a, ids_b = a.run(code), b.run(code)
    uid_a, euid, gid, egid, groups = ids_a.split(" ", 4)
    assert "0" not in (uid_a, euid, gid, egid), ids_a
    if IS_ROOT:
        assert groups == "[]" and uid_a == gid
        assert uids.UID_BASE <= int(uid_a) < uids.UID_BASE + uids.UID_SPAN
        assert ids_a != ids_b  # every worker has a uid of its own


@pytest.mark.parametrize("launch", LAUNCHES)
def test_cannot_signal_the_verifier(launch: str, monkeypatch: pytest.MonkeyPatch, pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch)
    if launch == "rlimits":
        pytest.skip("rlimits as a normal user runs as you: your processes can be signalled (documented)")
    code = (
        f"import os, signal\nfor target in ({os.getpid()}, -1):\n"
        "    try:\n        os.kill(target, signal.SIGKILL)\n        print('sent')\n"
        "    except OSError as e:\n        print(type(e).__name__)\n"
    )
    with CodeSession(cfg, pool=pool) as s:
        first, _, _ = s.run(code).partition("\n")
        assert first in ("PermissionError", "ProcessLookupError")
        assert s.run("print(6 * 7)") == "42"  # kill(-1) reached nothing but the sandbox's own processes
    os.kill(os.getpid(), 0)


@ROOT_ONLY
def test_uid_leases_are_exclusive_and_released() -> None:
    first, second = uids.lease_uid(), uids.lease_uid()
    try:
        assert first.uid != second.uid
        assert first.uid not in uids.uids_with_processes()
    finally:
        first.release()
        second.release()


def test_threads_of_one_verifier_never_share_a_uid(pool: WorkerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not IS_ROOT:
        pytest.skip("only root hands out uids")
    cfg = launch_config(LAUNCHES[-1], monkeypatch)
    seen: list[str] = []

    def one() -> None:
        with CodeSession(cfg, pool=pool) as s:
            seen.append(s.run("import os\nprint(os.getuid())"))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(seen) == 4 and len(set(seen)) == 4
