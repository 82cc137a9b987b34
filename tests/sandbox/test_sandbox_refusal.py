"""Safe by default (genprm issue 11, item 9): without usable isolation, model code does not run.

``auto``/``bwrap`` without a working bubblewrap raise SandboxUnavailableError with one line that
says how to fix it; ``rlimits`` as root runs the code as an unprivileged uid or refuses. Each
refusal test also proves the code never ran (a marker file it would write stays absent).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from sandbox_support import HAVE_RLIMITS, IS_ROOT, RLIMITS_PYTHON, pool_fixture  # noqa: F401

from genprm.errors import SandboxUnavailableError
from genprm.sandbox import CodeSession, SandboxConfig, WorkerPool, bwrap_status


def _marker_code(tmp_path: Path) -> tuple[str, Path]:
    tmp_path.chmod(0o777)  # even an unprivileged uid could write it: only a refusal keeps it absent
    marker = tmp_path / "ran.txt"
    return f"open({str(marker)!r}, 'w').write('model code ran')", marker


def _refusal(config: SandboxConfig, pool: WorkerPool, tmp_path: Path) -> str:
    code, marker = _marker_code(tmp_path)
    with pytest.raises(SandboxUnavailableError) as info:
        CodeSession(config, pool=pool).run(code)
    assert not marker.exists(), "the model's code ran although the sandbox refused"
    message = str(info.value)
    assert "\n" not in message and len(message) < 600
    return message


@pytest.mark.parametrize("isolation", ["auto", "bwrap"])
def test_missing_bubblewrap_refuses_with_the_fix(isolation: str, pool: WorkerPool, tmp_path: Path) -> None:
    cfg = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, isolation=isolation,  # type: ignore[arg-type]
                        bwrap=str(tmp_path / "no-such-bwrap"))
    message = _refusal(cfg, pool, tmp_path)
    assert message.startswith("genprm sandbox: refusing to run model code without isolation: bubblewrap is not installed")
    assert "apt-get install bubblewrap" in message
    assert "--sandbox rlimits" in message and "unsafe" in message


def test_unusable_bubblewrap_refuses_and_says_why(pool: WorkerPool, tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    cfg = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, bwrap=str(fake))
    message = _refusal(cfg, pool, tmp_path)
    assert f"bubblewrap at {fake} cannot start a sandbox here" in message
    assert "No permissions to creating new namespace" in message
    assert "--sandbox rlimits" in message
    assert ("run genprm as a normal user" in message) == IS_ROOT
    assert bwrap_status((), bwrap=str(fake))[0] is None


@pytest.mark.skipif(not IS_ROOT or not HAVE_RLIMITS, reason="as root, with a Python an unprivileged uid can read")
def test_rlimits_as_root_refuses_when_the_uid_cannot_reach_python(pool: WorkerPool, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    python = private / "python3"
    python.symlink_to(RLIMITS_PYTHON or sys.executable)  # a Python the uid could run, behind a private folder
    cfg = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, isolation="rlimits", python=str(python))
    message = _refusal(cfg, pool, tmp_path)
    assert message.startswith("genprm sandbox: refusing --sandbox rlimits as root")
    assert f"cannot read the Python at {python} (" in message and " is mode 0700)" in message
    assert "install bubblewrap" in message and "SandboxConfig.python" in message


@pytest.mark.skipif(IS_ROOT, reason="as root, rlimits runs the code as its own uid (tested in the escape tests)")
def test_rlimits_as_a_normal_user_runs_and_warns(pool: WorkerPool, caplog: pytest.LogCaptureFixture) -> None:
    cfg = SandboxConfig(timeout_s=2.0, preimport=(), pool_size=0, isolation="rlimits")
    with caplog.at_level("WARNING", logger="genprm.sandbox"), CodeSession(cfg, pool=pool) as s:
        assert s.run("import os\nprint(os.getuid())") == str(os.getuid())
    assert any("runs as you" in r.getMessage() for r in caplog.records)


def test_bad_python_and_bwrap_values_name_the_field() -> None:
    for field in ("python", "bwrap"):
        with pytest.raises(ValueError, match=field):
            SandboxConfig(**{field: "  "})  # type: ignore[arg-type]
