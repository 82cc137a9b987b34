"""The scheduler changes when work happens, never what a path sees: same transcripts as the loop."""

from __future__ import annotations

import math

import pytest

from genprm.engines.scripted import ScriptedEngine
from genprm.verifier import VerifyConfig, verify

RECORDS = [
    {"id": f"r{i}", "problem": f"What is {i} + {i}?", "steps": [f"{i} + {i} = {2 * i}.", f"The answer is {2 * i}."]}
    for i in range(6)
]


def _transcripts(results):
    return {r.record["id"]: [[p.text for p in s.paths] for s in r.steps] for r in results}


def _engine(max_batch=8):
    """Replies depend on the prompt and the request's seed, so any mix-up between paths shows."""

    def respond(prompt, request):
        seed = request.params.seed % 1000
        if prompt.endswith("step by step: "):
            return f"seed {seed} looks at {len(prompt)} chars\n</analyze>\n"
        if prompt.endswith("```python\n"):
            return f"print({seed} + {len(prompt) % 97})\n```\n"
        return f"fine {seed}\n</verify>\n<output>"

    def verdict(prompt):
        p = (len(prompt) % 89 + 5) / 100
        return math.log(p), math.log(1 - p)

    return ScriptedEngine(respond=respond, verdict=verdict, max_batch=max_batch)


@pytest.mark.parametrize("paths", ["independent", "shared"])
def test_scheduler_gives_the_same_transcripts_as_the_sequential_loop(paths):
    config = VerifyConfig(n=3, paths=paths, seed=11)
    sequential, scheduled = _engine(), _engine()
    expected = verify(RECORDS, model=sequential, config=config)
    got = verify(RECORDS, model=scheduled, config=config, concurrency=12)
    assert _transcripts(got) == _transcripts(expected)
    assert {r.record["id"]: r.step_rewards for r in got} == {r.record["id"]: r.step_rewards for r in expected}
    assert sorted(len(s.paths[0].code_runs) for r in got for s in r.steps) == sorted(
        len(s.paths[0].code_runs) for r in expected for s in r.steps
    )


def test_scheduler_streams_every_record_once_to_the_output(tmp_path):
    engine = _engine()
    out = tmp_path / "out.jsonl"
    results = verify(RECORDS, model=engine, config=VerifyConfig(n=2, mode="analyze"), out=out, concurrency=8)
    assert sorted(r.record["id"] for r in results) == [r["id"] for r in RECORDS]
    assert len(out.read_text().splitlines()) == len(RECORDS)
    assert verify(RECORDS, model=engine, config=VerifyConfig(n=2, mode="analyze"), out=out, concurrency=8) == []


def test_a_subset_of_paths_reproduces_those_paths_of_the_full_run():
    """What lets a store extend N=2 to N=4: paths 2 and 3 alone equal paths 2 and 3 of a full run."""
    from genprm.io import validate_record
    from genprm.verifier import SolutionVerifier
    from genprm.verifier.scheduler import Scheduler

    config = VerifyConfig(n=4, seed=5)
    item = validate_record(RECORDS[1], position=0)
    full = SolutionVerifier(_engine(), config).verify(item.problem, item.steps, key=item.key)
    part = SolutionVerifier(_engine(), config).verify(item.problem, item.steps, key=item.key, path_ids=[2, 3])
    assert [[p.path for p in s.paths] for s in part.steps] == [[2, 3], [2, 3]]
    assert [[p.text for p in s.paths[2:]] for s in full.steps] == [[p.text for p in s.paths] for s in part.steps]

    scheduler = Scheduler(SolutionVerifier(_engine(), config), concurrency=4)
    got = []
    try:
        scheduler.run([item], got.append, path_ids_of=lambda _: [3])
    finally:
        scheduler.close()
    assert [s.paths[0].text for s in got[0].steps] == [s.paths[3].text for s in full.steps]
