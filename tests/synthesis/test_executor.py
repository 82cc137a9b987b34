"""The local executor: bounded in flight, results as they finish, follow-ups, failures as data; work gets
the resources it is run with."""

from __future__ import annotations

import threading
import time

import pytest

from genprm.errors import ConfigError
from genprm.executor import LocalExecutor


def test_units_run_concurrently_up_to_the_bound_and_finish_in_completion_order():
    running, peak, lock = 0, 0, threading.Lock()

    def work(_resources, delay: float) -> float:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(delay)
        with lock:
            running -= 1
        return delay

    outcomes = list(LocalExecutor(3).run(work, [1.0, 0.05, 0.1, 0.05, 0.05]))
    assert peak == 3
    values = [o.value for o in outcomes]  # the 0.1 and the second 0.05 end together: only the ends are sure
    assert values[0] == 0.05 and values[-1] == 1.0
    assert sorted(o.value for o in outcomes) == [0.05, 0.05, 0.05, 0.1, 1.0]
    assert all(o.ok and o.seconds > 0 for o in outcomes)


def test_follow_up_units_run_before_the_remaining_initial_ones():
    order: list[str] = []
    run = LocalExecutor(1).run(lambda _resources, unit: order.append(unit) or unit, ["a", "b"])
    for outcome in run:
        if outcome.value == "a":
            run.submit("a2")
    assert order == ["a", "a2", "b"]


def test_a_failing_unit_is_an_outcome_and_the_others_go_on():
    def work(_resources, x: int) -> int:
        if x == 2:
            raise RuntimeError("engine fell over")
        return x * 10

    outcomes = {o.unit: o for o in LocalExecutor(2).run(work, [1, 2, 3])}
    assert outcomes[2].ok is False and outcomes[2].error == "RuntimeError: engine fell over"
    assert outcomes[1].value == 10 and outcomes[3].value == 30


def test_units_are_read_lazily():
    pulled: list[int] = []

    def units():
        for i in range(100):
            pulled.append(i)
            yield i

    run = iter(LocalExecutor(2).run(lambda _resources, x: x, units()))
    next(run)
    assert len(pulled) <= 3
    run.close()


def test_the_bound_must_be_positive():
    with pytest.raises(ConfigError):
        LocalExecutor(0)


def test_work_gets_the_resources_it_is_run_with_and_state_is_built_once_per_worker():
    from genprm.executor import HeldModels

    built: list[int] = []
    resources = HeldModels()

    def work(res, unit: int) -> int:
        return res.state("counter", lambda: built.append(1) or object()) is not None and unit

    outcomes = list(LocalExecutor(3).run(work, range(6), resources))
    assert sorted(o.value for o in outcomes) == list(range(6))
    assert built == [1]
    with pytest.raises(LookupError, match="policy"):
        resources.chat("policy")
