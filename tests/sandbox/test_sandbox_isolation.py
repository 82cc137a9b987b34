"""The bubblewrap command line and the reachability checks behind the launch decisions."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from genprm.sandbox import isolation


@pytest.mark.parametrize(("userns", "keep_setuid"), [(True, False), (False, True), (False, False)])
def test_bwrap_always_drops_every_capability(userns: bool, keep_setuid: bool) -> None:
    # genprm issue 11, item 10: bwrap as root without --cap-drop ALL gave the code full capabilities
    argv = isolation.bwrap_argv("bwrap", "/tmp/s", (), ["python3"], userns=userns, keep_setuid=keep_setuid)
    command_at = argv.index("--")
    assert argv[argv.index("--cap-drop") + 1] == "ALL" and argv.index("--cap-drop") < command_at
    added = [argv[i + 1] for i, a in enumerate(argv[:command_at]) if a == "--cap-add"]
    assert added == (["CAP_SETUID", "CAP_SETGID"] if keep_setuid else [])
    assert ("--unshare-user" in argv and "--disable-userns" in argv) == userns
    assert argv[command_at + 1 :] == ["python3"]


def test_paths_under_hidden_folders_are_bound_back_read_only() -> None:
    argv = isolation.bwrap_argv("bwrap", "/tmp/s", ["/root/.pyenv/versions/3.11", "/usr/lib/python3"], ["x"],
                                userns=True, keep_setuid=False)
    joined = " ".join(argv)
    assert "--tmpfs /root" in joined and "--perms 0755 --dir /root/.pyenv" in joined
    assert "--ro-bind /root/.pyenv/versions/3.11 /root/.pyenv/versions/3.11" in joined
    assert "--ro-bind /usr/lib/python3" not in joined  # visible through the read-only root already
    assert "--bind /tmp/s /tmp/scratch" in joined and "--clearenv" in joined


def test_blocked_at_names_the_folder_and_its_mode() -> None:
    base = Path(tempfile.mkdtemp())
    try:
        os.chmod(base, 0o755)
        private = base / "private"
        (private / "lib").mkdir(parents=True)
        os.chmod(private, 0o700)
        os.chmod(private / "lib", 0o755)
        assert isolation.blocked_at(str(private / "lib")) == f"{private} is mode 0700"
        assert isolation.blocked_at(str(private / "lib"), recreated=[str(private)]) is None  # rebuilt 0755 in bwrap
        assert isolation.blocked_at("/usr/bin") is None
    finally:
        shutil.rmtree(base)


def test_worker_source_reaches_the_worker_through_stdin() -> None:
    argv = isolation.worker_command("/usr/bin/python3", "{}")
    assert argv[:4] == ["/usr/bin/python3", "-I", "-B", "-c"]
    assert argv[-2] == str(len(isolation.worker_source())) and argv[-1] == "{}"
    assert isolation.WORKER_SCRIPT not in argv  # the worker never needs to read genprm's folder
