"""The scheduler starts the costliest solutions first, so that the run's tail is made of short ones."""

from __future__ import annotations

from genprm.engines.scripted import ScriptedEngine
from genprm.io import SolutionInput, validate_record
from genprm.verifier import SolutionVerifier, VerifyConfig
from genprm.verifier.scheduler import Scheduler


def _item(name: str, steps: int, width: int = 1, position: int = 0) -> SolutionInput:
    record = {"id": name, "problem": f"Problem {name}?", "steps": ["y" * width + f" {i}." for i in range(steps)]}
    return validate_record(record, position=position)


def _run(items, path_ids_of=None) -> tuple[list[str], list[str]]:
    """(the records in the order of their first engine call, the records in the order delivered)."""
    engine = ScriptedEngine(respond=lambda prompt, request: "ok\n</analyze>\n", max_batch=8)
    config = VerifyConfig(n=2, mode="analyze")
    scheduler = Scheduler(SolutionVerifier(engine, config), concurrency=2, solutions_in_flight=1)
    done: list[str] = []
    try:
        scheduler.run(items, lambda result: done.append(result.record["id"]), path_ids_of=path_ids_of)
    finally:
        scheduler.close()
    started: list[str] = []
    for prompt, _ in engine.calls:
        name = prompt.split("Problem ", 1)[1].split("?", 1)[0]
        if name not in started:
            started.append(name)
    return started, done


def test_the_solution_with_most_steps_starts_first_then_the_one_with_longer_steps():
    items = [_item("short", 1), _item("long", 4), _item("middle", 2), _item("wordy", 2, width=40)]
    started, done = _run(iter(items))  # an iterator: the scheduler takes it whole, then orders it
    assert started == ["long", "wordy", "middle", "short"]
    assert done == started  # one solution at a time here: each is delivered as it finishes


def test_of_two_equal_solutions_the_one_with_more_paths_to_run_goes_first():
    items = [_item("one-path", 2), _item("two-paths", 2, position=1)]
    wanted = {"one-path": [1], "two-paths": [0, 1]}
    started, done = _run(items, path_ids_of=lambda item: wanted[item.record["id"]])
    assert started == done == ["two-paths", "one-path"]


def test_ties_keep_the_order_given():
    items = [_item(f"same-{i}", 2, position=i) for i in range(3)]
    started, _ = _run(items)
    assert started == ["same-0", "same-1", "same-2"]
