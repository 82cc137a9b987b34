"""The shared verifier front: same transcripts as the sequential loop, duplicates, cancellation, bounds."""

from __future__ import annotations

import time

import pytest

from genprm.io import validate_record
from genprm.serving.service import QueueFull, Stopped, VerificationService
from genprm.store import RunStore
from genprm.verifier import VerifyConfig, verify

from .support import GatedEngine

RECORDS = [
    {"problem": f"What is {i} + {i}?", "steps": [f"{i} + {i} = {2 * i}.", f"The answer is {2 * i}."]}
    for i in range(6)
]


def _items():
    return [validate_record(r, position=i) for i, r in enumerate(RECORDS)]


def _service(tmp_path, engine, **options):
    config = options.pop("config", VerifyConfig(n=3, seed=11))
    return VerificationService(engine, config, RunStore(tmp_path / "run"), **options)


def _wait(ticket, timeout=60):
    return ticket.future.result(timeout)


def test_concurrent_solutions_give_the_sequential_loops_transcripts(tmp_path):
    config = VerifyConfig(n=3, seed=11)
    expected = verify(RECORDS, model=GatedEngine(), config=config)
    service = _service(tmp_path, GatedEngine(), config=config, concurrency=12)
    try:
        tickets = [service.submit(item, time.monotonic() + 60) for item in _items()]
        got = [_wait(t) for t in tickets]
    finally:
        service.close()
    for result, scored in zip(expected, got):
        texts = [[p.text for p in step.paths] for step in result.steps]
        stored = [[turn["text"] for turn in scored.paths[j]] for j in range(3)]
        assert [list(col) for col in zip(*stored)] == texts
        assert scored.step_rewards == result.step_rewards
        assert scored.first_error == result.first_error
        assert not scored.cached


def test_a_stored_solution_is_answered_without_the_engine(tmp_path):
    engine = GatedEngine()
    service = _service(tmp_path, engine)
    item = _items()[0]
    try:
        first = _wait(service.submit(item, time.monotonic() + 60))
        calls = engine.generations
        again = _wait(service.submit(item, time.monotonic() + 60))
    finally:
        service.close()
    assert calls > 0 and engine.generations == calls
    assert again.cached and not first.cached
    assert again.step_rewards == first.step_rewards and again.paths == first.paths
    assert service.stats.cached == 1 and service.stats.verified == 1


def test_a_duplicate_in_flight_joins_the_running_solution(tmp_path):
    engine = GatedEngine()
    engine.gate.clear()
    service = _service(tmp_path, engine)
    item = _items()[0]
    try:
        one = service.submit(item, time.monotonic() + 60)
        assert engine.entered.wait(10)
        two = service.submit(item, time.monotonic() + 60)
        engine.gate.set()
        a, b = _wait(one), _wait(two)
    finally:
        service.close()
    assert a.step_rewards == b.step_rewards
    assert service.stats.joined == 1 and service.stats.verified == 1
    # each path's two steps, each with up to three engine calls: one solution's worth, not two
    single = _service(tmp_path / "solo", GatedEngine())
    try:
        _wait(single.submit(item, time.monotonic() + 60))
    finally:
        single.close()
    assert engine.generations == single.verifier.engine.generations


def test_a_released_running_solution_stops_before_its_next_engine_call(tmp_path):
    engine = GatedEngine()
    engine.gate.clear()
    service = _service(tmp_path, engine, config=VerifyConfig(n=1))
    item = _items()[0]
    try:
        ticket = service.submit(item, time.monotonic() + 60)
        assert engine.entered.wait(10)
        ticket.release()  # the only requester went away
        engine.gate.set()
        assert isinstance(ticket.future.result(10), Stopped)
        deadline = time.monotonic() + 10
        while service.running and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        service.close()
    assert engine.generations == 1  # the call in flight finished; no later step started
    assert service.stats.cancelled == 1
    assert service.store.path_indices(item.key, service.settings) == set()  # a partial solution is no result


def test_a_released_queued_solution_never_starts_and_frees_its_place(tmp_path):
    engine = GatedEngine()
    engine.gate.clear()
    service = _service(tmp_path, engine, config=VerifyConfig(n=1), concurrency=1, max_queue=1)
    first, *others = _items()[:5]  # RECORDS[5] is the one the full queue refuses
    try:
        running = service.submit(first, time.monotonic() + 60)
        assert engine.entered.wait(10)
        waiting = None
        for item in others:  # fill every solution worker, then the queue's one place
            ticket = service.submit(item, time.monotonic() + 60)
            while service.queued and service.running < service.solutions_in_flight:
                time.sleep(0.01)  # a free worker takes it
            if service.queued:
                waiting = ticket
                break
        assert waiting is not None
        with pytest.raises(QueueFull) as full:
            service.submit(validate_record(RECORDS[5], position=5), time.monotonic() + 60)
        assert full.value.retry_after >= 1
        waiting.release()
        assert isinstance(waiting.future.result(5), Stopped)
        assert service.queued == 0
        engine.gate.set()
        assert not isinstance(running.future.result(30), Stopped)
    finally:
        service.close()


def test_early_stopping_reads_back_as_the_verifier_reports_it(tmp_path):
    config = VerifyConfig(n=2, seed=3, mode="analyze", stop_at_first_error=True, threshold=0.6)
    records = [{"problem": f"Q{i}", "steps": [f"step {k} of {i}" for k in range(4)]} for i in range(4)]
    expected = verify(records, model=GatedEngine(), config=config)
    service = _service(tmp_path, GatedEngine(), config=config, concurrency=4)
    try:
        got = [_wait(service.submit(validate_record(r, position=i), time.monotonic() + 60))
               for i, r in enumerate(records)]
    finally:
        service.close()
    assert any(r.stopped_early for r in expected)  # the case is exercised
    for result, scored in zip(expected, got):
        assert scored.step_rewards == result.step_rewards
        assert scored.step_status == result.step_status
        assert scored.first_error == result.first_error
