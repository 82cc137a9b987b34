"""The CPU limit is per run (genprm issue 11, item 5): a long session never dies of accumulated CPU,
and a run that burns its budget gets upstream's time-out text, in every launch."""

from __future__ import annotations

import pytest
from sandbox_support import LAUNCHES, launch_config, pool_fixture  # noqa: F401

from genprm.sandbox import TIMEOUT_MESSAGE, CodeSession, WorkerPool


def burn(seconds: float) -> str:
    return f"import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}:\n    pass\nprint('done')"


@pytest.mark.parametrize("launch", LAUNCHES)
def test_many_runs_may_use_more_cpu_than_one_may(launch: str, monkeypatch: pytest.MonkeyPatch,
                                                 pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch, cpu_s=1, timeout_s=30.0)
    with CodeSession(cfg, pool=pool) as s:
        for _ in range(3):  # 1.8 CPU seconds in all, more than cpu_s: the old lifetime limit killed the worker
            assert s.run(burn(0.6)) == "done"
        assert s.restarts == 0


@pytest.mark.parametrize("launch", LAUNCHES)
def test_a_run_over_its_cpu_budget_gets_the_trained_timeout_text(launch: str, monkeypatch: pytest.MonkeyPatch,
                                                                  pool: WorkerPool) -> None:
    cfg = launch_config(launch, monkeypatch, cpu_s=1, timeout_s=30.0)
    with CodeSession(cfg, pool=pool) as s:
        s.run("kept = 'still here'")
        assert s.run(burn(2.5)) == TIMEOUT_MESSAGE  # the budget is cpu_s rounded up to a whole second
        assert s.run("print(kept)") == "still here" and s.restarts == 0


def test_a_worker_killed_by_the_cpu_signal_reads_as_a_timeout(pool: WorkerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = launch_config(LAUNCHES[-1], monkeypatch, cpu_s=1, timeout_s=30.0)
    with CodeSession(cfg, pool=pool) as s:
        code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_DFL)\n" + burn(2.5)
        assert s.run(code) == TIMEOUT_MESSAGE
        assert s.restarts == 0 and s.run("print(1)") == "1" and s.restarts == 1
