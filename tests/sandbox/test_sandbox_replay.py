"""Replay (genprm issue 11, item 5): a killed worker's namespace is rebuilt from the clean history."""

from __future__ import annotations

import pytest
from sandbox_support import FAST, pool_fixture  # noqa: F401

from genprm.sandbox import TIMEOUT_MESSAGE, CodeSession, SandboxConfig, WorkerPool


def test_a_timeout_keeps_the_namespace(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("x = 41") == ""
        assert s.run("import time\ntime.sleep(30)") == TIMEOUT_MESSAGE
        assert s.run("print(x + 1)") == "42"
        assert s.restarts == 1 and s.replayed == 1 and s.replay_failures == 0


def test_a_crash_keeps_the_namespace_and_replay_output_is_never_shown(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        assert s.run("print('first')\ny = [1, 2]") == "first"
        assert s.run("y.append(3)") == ""
        assert s.run("import os\nos._exit(9)").startswith("Code execute Error: SandboxWorkerDied")
        assert s.run("print(y)") == "[1, 2, 3]"
        assert s.history == ("print('first')\ny = [1, 2]", "y.append(3)", "print(y)")


def test_failed_blocks_are_not_replayed(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool) as s:
        s.run("n = 1")
        assert s.run("n += 1\nraise ValueError('no')") == "Code execute Error: ValueError: no"
        assert s.run("print(n)") == "2"  # upstream semantics: the statement before the error took effect
        s.run("while True: pass")
        assert s.run("print(n)") == "1"  # the failed block is not part of the rebuilt namespace
        assert s.replay_failures == 0 and s.history == ("n = 1", "print(n)", "print(n)")


def test_seeded_replay_builds_another_paths_namespace(pool: WorkerPool) -> None:
    with CodeSession(FAST, pool=pool, replay=["a = 5", "1 / 0", "b = a * 2"]) as s:
        assert s.run("print(a, b)") == "5 10"
        assert s.replay_failures == 1  # 1 / 0 failed silently
        assert s.history == ("a = 5", "b = a * 2", "print(a, b)")


def test_a_replayed_block_that_times_out_is_dropped(pool: WorkerPool) -> None:
    cfg = SandboxConfig(timeout_s=1.0, preimport=(), pool_size=0)
    with CodeSession(cfg, pool=pool, replay=["a = 1", "while True: pass", "b = 2"]) as s:
        assert s.run("print(a, b)") == "1 2"
        assert s.replay_failures == 1 and s.restarts == 1
        assert s.history == ("a = 1", "b = 2", "print(a, b)")


def test_replay_must_be_code_strings() -> None:
    with pytest.raises(TypeError):
        CodeSession(FAST, replay="x = 1")
    with pytest.raises(TypeError):
        CodeSession(FAST, replay=[b"x = 1"])  # type: ignore[list-item]
