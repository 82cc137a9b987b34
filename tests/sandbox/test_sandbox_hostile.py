"""One hostile property per test: contained, returned as a string, and the sandbox still works.

After each attack the NEXT run in the same session and a run in a fresh session must both work,
and the test process (the verifier) must still be alive.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest
from sandbox_support import (  # noqa: F401
    FAST_BWRAP,
    FAST_RLIMITS,
    HAVE_RLIMITS,
    IS_ROOT,
    launch_config,
    pool_fixture,
    requires_bwrap,
)

from genprm.sandbox import TIMEOUT_MESSAGE, CodeSession, SandboxConfig, WorkerPool

pytestmark = requires_bwrap


def attack(pool: WorkerPool, code: str, config: SandboxConfig = FAST_BWRAP) -> tuple[str, CodeSession]:
    """Run ``code`` in a fresh session, then prove both that session and a new one still work."""
    start = time.monotonic()
    session = CodeSession(config, pool=pool)
    try:
        out = session.run(code)
        assert isinstance(out, str)
        assert time.monotonic() - start < config.timeout_s + 8.0
        assert session.run("print(6 * 7)") == "42"
    finally:
        session.close()
    with CodeSession(config, pool=pool) as fresh:
        assert fresh.run("print(6 * 7)") == "42"
    os.kill(os.getpid(), 0)  # we are alive
    return out, session


def test_fork_bomb_is_contained(pool: WorkerPool) -> None:
    out, session = attack(pool, "import os\nwhile True:\n    os.fork()")
    if IS_ROOT:  # dropped to an unprivileged uid, so RLIMIT_NPROC stops the bomb quickly
        assert out == "Code execute Error: BlockingIOError: [Errno 11] Resource temporarily unavailable"
    else:
        assert out.startswith("Code execute") and session.restarts <= 1


def test_fork_bomb_children_are_gone_afterwards(pool: WorkerPool) -> None:
    with CodeSession(FAST_BWRAP, pool=pool) as s:
        s.run("import os\nwhile True:\n    os.fork()")
        out = s.run("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
        assert out == "[1, 2]"  # bwrap's init and the worker, nothing else in the namespace


def test_huge_allocation_is_a_memory_error(pool: WorkerPool) -> None:
    out, _ = attack(pool, "x = bytearray(50 * 1024**3)")
    assert out == "Code execute Error: MemoryError: "


def test_growing_list_is_contained(pool: WorkerPool) -> None:
    out, _ = attack(pool, "x = []\nwhile True:\n    x.append(bytearray(10**7))")
    assert out in ("Code execute Error: MemoryError: ", TIMEOUT_MESSAGE)


def test_infinite_loop_times_out(pool: WorkerPool) -> None:
    out, session = attack(pool, "while True:\n    pass")
    assert out == TIMEOUT_MESSAGE
    assert session.restarts == 1


def test_c_level_hang_is_killed(pool: WorkerPool) -> None:
    out, session = attack(pool, "import ctypes\nctypes.CDLL(None).sleep(100)")
    assert out == TIMEOUT_MESSAGE
    assert session.restarts == 1


def test_hard_exit_and_segfault_are_data(pool: WorkerPool) -> None:
    out, session = attack(pool, "import os\nos._exit(3)")
    assert out == "Code execute Error: SandboxWorkerDied: worker process died (exit status 3)"
    assert session.restarts == 1
    out, _ = attack(pool, "import ctypes\nctypes.string_at(0)")
    assert out.startswith("Code execute Error: SandboxWorkerDied: ") and "SIGSEGV" in out


def test_sys_exit_is_data(pool: WorkerPool) -> None:
    out, session = attack(pool, "import sys\nsys.exit(3)")
    assert out == "Code execute Error: SystemExit: 3"
    assert session.restarts == 0


def test_killing_the_parent_does_not_reach_the_verifier(pool: WorkerPool) -> None:
    out, _ = attack(pool, "import os\nos.kill(os.getppid(), 9)")
    assert out.startswith("Code execute")


def test_killing_pid_1_and_everything_does_not_reach_the_verifier(pool: WorkerPool) -> None:
    attack(pool, "import os\nos.kill(1, 9)")
    attack(pool, "import os, signal\nos.kill(-1, signal.SIGKILL)")
    out, _ = attack(pool, f"import os\nos.kill({os.getpid()}, 9)")  # our real pid is not even visible
    assert out.startswith("Code execute Error: ")


def test_writes_to_home_folder_do_not_reach_the_disk(pool: WorkerPool) -> None:
    real_targets = [Path(os.path.expanduser("~/pwned")), Path("/root/pwned"), Path("/tmp/pwned")]
    for target in real_targets:
        assert not target.exists(), f"leftover {target}"
    attack(pool, "import os\nopen(os.path.expanduser('~/pwned'), 'w').write('x')")
    attack(pool, "open('/root/pwned', 'w').write('x')")
    attack(pool, "open('/tmp/pwned', 'w').write('x')")
    for target in real_targets:
        assert not target.exists(), f"the sandbox wrote {target}"


def test_home_folder_contents_are_hidden(pool: WorkerPool) -> None:
    out, _ = attack(pool, "import os\nprint(os.listdir(os.path.expanduser('~')), os.listdir('/root'))")
    assert out.startswith("[] [")
    assert out in ("[] []", "[] ['.pyenv']")  # only the bound-back interpreter prefix may show


def test_root_filesystem_is_read_only(pool: WorkerPool) -> None:
    out, _ = attack(pool, "open('/etc/genprm-pwned', 'w')")
    assert out.startswith("Code execute Error: ") and ("Read-only" in out or "Permission" in out)
    assert not Path("/etc/genprm-pwned").exists()


@pytest.mark.parametrize("address", ["127.0.0.1", "8.8.8.8", "::1"])
def test_network_is_unreachable(pool: WorkerPool, address: str) -> None:
    code = f"import socket\nsocket.create_connection(({address!r}, 53), timeout=1)\nprint('connected')"
    out, _ = attack(pool, code)
    assert out.startswith("Code execute Error: ")
    assert "connected" not in out


@pytest.mark.parametrize("config", [FAST_BWRAP, FAST_RLIMITS], ids=["bwrap", "rlimits"])
def test_environment_secret_is_not_visible(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch, config: SandboxConfig
) -> None:
    if config.isolation == "rlimits" and not HAVE_RLIMITS:
        pytest.skip("as root, rlimits mode needs a Python that an unprivileged uid can read")
    monkeypatch.setenv("GENPRM_TEST_SECRET", "hunter2")
    out, _ = attack(pool, "import os\nprint(os.environ.get('GENPRM_TEST_SECRET'), dict(os.environ))", config)
    assert "hunter2" not in out
    assert out.startswith("None {")


def test_remounting_the_sandbox_root_read_write_fails(pool: WorkerPool) -> None:
    # mount -o remount,rw / in the sandbox's own mount namespace (harmless to the host whatever happens);
    # test_sandbox_escapes.py checks the same through a private namespace in every launch
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "rc = libc.mount(None, b'/', None, 32 | 4096, None)\n"  # MS_REMOUNT | MS_BIND, no MS_RDONLY
        "print(rc, os.strerror(ctypes.get_errno()))\nopen('/etc/genprm-pwned', 'w')"
    )
    out, _ = attack(pool, code)
    assert out.startswith("Code execute Error: ") and "Read-only" in out
    assert not Path("/etc/genprm-pwned").exists()


def test_nested_user_namespaces_are_disabled(pool: WorkerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = launch_config("bwrap+userns" if IS_ROOT else "bwrap", monkeypatch)
    code = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.unshare(0x10000000), ctypes.get_errno())"
    with CodeSession(cfg, pool=pool) as s:
        out = s.run(code)
    if not IS_ROOT and out == "-1 22":
        pytest.skip("this bwrap could not disable user namespaces")
    assert out.startswith("-1 "), out  # ENOSPC: --disable-userns set the namespace limit to 0


def test_printing_100_mb_is_truncated_and_cheap(pool: WorkerPool) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out, _ = attack(pool, "print('x' * 100_000_000)")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    limit = FAST_BWRAP.max_output_chars
    assert out == "x" * limit + f"\n... [output truncated: {100_000_000 - limit} more characters]"
    assert grown_kib < 64 * 1024


def test_large_files_hit_the_size_limit(pool: WorkerPool) -> None:
    cfg = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, isolation="bwrap", max_file_mb=1)
    out, _ = attack(pool, "open('big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))", cfg)
    assert out == "Code execute Error: OSError: [Errno 27] File too large"


@pytest.mark.skipif(not IS_ROOT, reason="the uid drop only happens when the verifier runs as root")
def test_worker_runs_as_unprivileged_uid(pool: WorkerPool) -> None:
    with CodeSession(FAST_BWRAP, pool=pool) as s:
        uid = int(s.run("import os\nprint(os.getuid())"))
        assert uid >= 100_000
        denied = "Code execute Error: PermissionError: [Errno 1] Operation not permitted"
        assert s.run("import os\nos.setuid(0)") == denied


def test_scratch_folder_is_cwd_and_deleted_on_close(pool: WorkerPool) -> None:
    s = CodeSession(FAST_BWRAP, pool=pool)
    assert s.run("import os\nopen('note.txt', 'w').write('hi')\nprint(os.getcwd())") == "/tmp/scratch"
    assert s._worker is not None
    scratch = Path(s._worker.scratch)
    assert (scratch / "note.txt").read_text() == "hi"
    s.close()
    assert not scratch.exists()


def test_protocol_fd_garbage_cannot_confuse_the_parent(pool: WorkerPool) -> None:
    code = (
        "import os\nfor fd in range(3, 20):\n"
        "    try:\n        os.write(fd, b'\\xff' * 64)\n    except OSError:\n        pass"
    )
    out, _ = attack(pool, code)
    assert isinstance(out, str)
