"""--stop-at-first-error drops the work that can no longer change the result, and nothing else."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from genprm.io import validate_record
from genprm.verifier import SolutionVerifier, VerifyConfig, verify
from genprm.verifier.adaptive import Tally
from genprm.verifier.driver import ThreadedRunner
from genprm.verifier.records import PathStep
from genprm.verifier.scheduler import Scheduler
from test_adaptive import tagged_engine


def _path(reward: float | None) -> PathStep:
    return PathStep(path=0, text="", verdict="", reward=reward, readable=reward is not None)


@pytest.mark.parametrize(
    ("rewards", "total", "band", "cancelled"),
    [
        ([0.1, 0.1], 4, 0.0, False),  # (0.2 + 2) / 4 = 0.55: the last two could still lift it
        ([0.1, 0.1, 0.1], 4, 0.0, True),  # (0.3 + 1) / 4 = 0.325
        ([0.1, 0.1, 0.1], 4, 0.2, False),  # 0.325 is within the band: the cascade would escalate
        ([0.0, 0.0, 0.0], 4, 0.2, True),  # 0.25 <= 0.5 - 0.2
        ([None, None, None], 4, 0.0, False),  # nothing readable: unreadable is not an error
        ([None, 0.2, 0.2], 4, 0.0, True),  # an unreadable path adds nothing: (0.4 + 1) / 3
    ],
)
def test_the_cancel_rule_assumes_every_unfinished_path_says_yes(rewards, total, band, cancelled):
    tally = Tally(total, 0.5, band, cancel=True)
    for reward in rewards:
        tally.record(_path(reward))
    assert tally.cancelled is cancelled
    off = Tally(total, 0.5, band, cancel=False)
    for reward in rewards:
        off.record(_path(reward))
    assert not off.cancelled


def _low_second_step(k, j, kind):
    return 0.9 if k == 0 else 0.1


def test_unfinished_paths_are_cancelled_once_the_step_is_surely_an_error():
    calls: list[tuple[int, int]] = []
    engine = tagged_engine(_low_second_step, on_generate=lambda k, j: calls.append((k, j)))
    config = VerifyConfig(n=4, mode="analyze", reward="raw")
    full = SolutionVerifier(engine, config).verify("p", ["a", "b", "c"])
    calls.clear()
    short = SolutionVerifier(engine, config.model_copy(update={"stop_at_first_error": True})).verify(
        "p", ["a", "b", "c"]
    )
    assert short.first_error == full.first_error == 1
    step = short.steps[1]
    # One path after another: after three 0.1s, (0.3 + 1) / 4 < 0.5, so path 3 never starts.
    assert [p.cancelled for p in step.paths] == [False, False, False, True]
    assert step.cancelled_paths == 1 and step.paths[3].engine_calls == 0
    assert step.reward == pytest.approx(0.1)  # the finished paths' mean
    assert short.step_status == ["scored", "scored", "skipped"]
    assert (short.compute.path_steps, short.compute.cancelled_paths) == (7, 1)
    assert all(k < 2 for k, _ in calls) and (1, 3) not in calls


def test_a_path_in_flight_finishes_its_engine_call_then_stops(monkeypatch):
    """Threaded paths: path 3's first call at step 1 is in flight while the other three make the step an error."""
    slow_started, step_cancelled = threading.Event(), threading.Event()

    class WatchedTally(Tally):
        def record(self, step: PathStep) -> None:
            super().record(step)
            if self.cancelled:
                step_cancelled.set()

    monkeypatch.setattr("genprm.verifier.solution.Tally", WatchedTally)

    def on_verdict(prompt):
        if prompt.count("<|im_start|>user") == 2:
            assert slow_started.wait(10)

    def on_generate(k, j):
        if (k, j) == (1, 3):
            slow_started.set()
            assert step_cancelled.wait(10)

    engine = tagged_engine(_low_second_step, on_verdict=on_verdict, on_generate=on_generate, max_batch=8)
    config = VerifyConfig(n=4, mode="analyze", stop_at_first_error=True)
    with ThreadPoolExecutor(4) as pool:
        result = SolutionVerifier(engine, config, runner=ThreadedRunner(pool)).verify("p", ["a", "b", "c"])
    slow = result.steps[1].paths[3]
    assert slow.cancelled and slow.engine_calls == 1 and slow.completion_tokens > 0 and slow.reward is None
    assert "checks step 1\n</analyze>\n" in slow.text  # what it had when stopped
    assert result.first_error == 1 and result.compute.path_steps == 8  # the cancelled one ran one call


RECORDS = [{"id": f"r{i}", "problem": f"problem {i}", "steps": [f"step {s}" for s in range(4)]} for i in range(6)]


def _random_rewards(seed: int):
    """Per (record, step, path, mode) a reward, often near the threshold, sometimes unreadable."""
    rng = random.Random(seed)
    table: dict[tuple[int, int, int | None, str], float | None] = {}
    choices = [0.02, 0.2, 0.4, 0.45, 0.55, 0.6, 0.8, 0.98, None]

    def reward(record: int, k: int, j: int | None, kind: str) -> float | None:
        key = (record, k, j, kind)
        if key not in table:
            table[key] = rng.choice(choices)
        return table[key]

    return reward


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "options",
    [
        {"mode": "analyze"},
        {"cascade": "analyze,code-no-exec", "cascade_band": 0.15},
        {"mode": "analyze", "adaptive_n": True, "min_paths": 1},
    ],
)
def test_first_error_is_what_the_run_without_stopping_reports(seed, options):
    """Random rewards: stopping (with cancellation) changes compute, never first_error or earlier steps."""
    reward = _random_rewards(seed)
    config = VerifyConfig(n=4, threshold=0.5, seed=seed, **options)
    stopping = config.model_copy(update={"stop_at_first_error": True})
    for i, raw in enumerate(RECORDS):
        item = validate_record(raw, position=i)

        def engine(i=i, key=item.key):
            return tagged_engine(lambda k, j, kind: reward(i, k, j, kind), seed=seed, keys=[key])

        full = SolutionVerifier(engine(), config).verify(item.problem, item.steps, key=item.key)
        short = SolutionVerifier(engine(), stopping).verify(item.problem, item.steps, key=item.key)
        assert short.first_error == full.first_error
        last = len(short.steps) - 1
        assert short.step_rewards[:last] == full.step_rewards[:last]
        if short.steps[-1].cancelled_paths:
            assert short.step_rewards[last] < config.threshold <= 1
        assert short.compute.path_steps <= full.compute.path_steps


SCHEDULED_REWARDS = [[0.9] * 4, [0.6, 0.3, 0.7, 0.55], [0.1, 0.1, 0.9, 0.1], [0.9] * 4]


def test_the_scheduler_stops_solutions_and_cancels_with_the_same_first_error():
    config = VerifyConfig(n=4, mode="analyze", seed=3)
    items = [validate_record(r, position=i) for i, r in enumerate(RECORDS)]
    started: list[int] = []

    def engine():
        return tagged_engine(
            lambda k, j, kind: SCHEDULED_REWARDS[k][j], seed=3, keys=[item.key for item in items], max_batch=8,
            on_generate=lambda k, j: started.append(k),
        )

    expected = verify(RECORDS, model=engine(), config=config)
    assert {r.first_error for r in expected} == {2}
    started.clear()
    scheduler = Scheduler(SolutionVerifier(engine(), config.model_copy(update={"stop_at_first_error": True})),
                          concurrency=8)
    got = []
    try:
        scheduler.run(items, got.append)
    finally:
        scheduler.close()
    assert sorted(r.record["id"] for r in got) == [r["id"] for r in RECORDS]
    assert {r.first_error for r in got} == {2}
    assert all(r.step_status[3] == "skipped" for r in got)
    assert set(started) == {0, 1, 2}  # no path of step 3 was started
    assert sum(r.compute.path_steps for r in got) <= len(RECORDS) * 12
