"""The throughput bench's upstream row resumes after its finished solutions (it runs for hours on a CPU).

The bench is a script, not part of the package; it is loaded from ``bench/`` and driven with the
scripted engine, so only its bookkeeping is under test here.
"""

from __future__ import annotations

import pytest
from tests.bench.scripts import load_bench_script

from genprm.engines.scripted import ScriptedEngine
from genprm.io import validate_record
from genprm.verifier import VerifyConfig

REPLY = "<analyze>\nfine\n</analyze>\n<output>\n**Judgement**: $\\boxed{Yes}$\n</output>"


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("throughput")


def _samples() -> list:
    records = [
        {"id": f"s{i}", "problem": f"What is {i} + {i}?", "steps": [f"{i} + {i} = {2 * i}.", "Done."], "label": -1}
        for i in range(3)
    ]
    return [validate_record(r, position=i, path="inline") for i, r in enumerate(records)]


def _engine() -> ScriptedEngine:
    return ScriptedEngine("scripted", respond=lambda prompt, request: REPLY)


def test_upstream_row_keeps_finished_solutions_and_adds_up(bench, tmp_path):
    samples, config = _samples(), VerifyConfig(n=1, mode="analyze", max_step_tokens=200)
    row = bench.Row("upstream", "upstream")
    settings = {"samples": [s.record["id"] for s in samples]}
    out = tmp_path / "bench.json"

    class Stop(Exception):
        pass

    def save_then_stop(data: dict) -> None:  # the first session ends after its first solution
        results.update("upstream", data)
        raise Stop

    results = bench.Results(out, settings)
    with pytest.raises(Stop):
        bench.run_verifier_row(row, _engine(), config, samples, 1, save_then_stop)
    first = bench.Results(out, settings)
    assert not first.done("upstream") and len(first.partial["upstream"]["solutions"]) == 1
    partial = first.partial["upstream"]

    engine = _engine()
    record = bench.run_verifier_row(row, engine, config, samples, 1, lambda data: None, partial)
    assert record["complete"] and record["sessions"] == 2
    assert [s["id"] for s in record["solutions"]] == ["s0", "s1", "s2"]
    assert engine.stats.requests == record["requests"] - partial["requests"] > 0  # only s1 and s2 ran now
    assert record["wall_s"] >= partial["wall_s"]
    assert record["f1"] is None and record["acc_correct"] == 1.0  # all three correct, each judged so

    fresh = bench.run_verifier_row(row, _engine(), config, samples, 1, lambda data: None)
    assert fresh["requests"] == record["requests"] and fresh["completion_tokens"] == record["completion_tokens"]


def test_scheduler_rows_never_resume(bench):
    samples, config = _samples(), VerifyConfig(n=1, mode="analyze", max_step_tokens=200)
    partial = {"kind": "upstream", "solutions": [{"key": samples[0].key, "id": "s0"}], "requests": 99}
    engine = _engine()
    record = bench.run_verifier_row(bench.Row("scheduler", "scheduler"), engine, config, samples, 4, lambda d: None,
                                    partial)
    assert record["requests"] == engine.stats.requests and len(record["solutions"]) == 3 and "sessions" not in record
