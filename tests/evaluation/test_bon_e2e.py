"""``genprm eval bon`` end to end on the demo model: one problem, two one-step responses, N=1.

The second run of the same command must find every path and grade in the store: the verifier and
the grader are replaced by functions that fail the test if called.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from genprm.cli.main import app
from genprm.evaluation import grade_cache
from genprm.verifier.solution import SolutionVerifier

pytestmark = pytest.mark.e2e

PROBLEM = {
    "id": "add", "problem": "What is 2+3?", "answer": "5",
    "responses": ["2+3=5, so the answer is \\boxed{5}.", "2+3=6, so the answer is \\boxed{6}."],
}


def test_eval_bon_runs_then_reuses_everything(tmp_path, demo_gguf, monkeypatch):
    pytest.importorskip("math_verify")
    data = tmp_path / "bon.jsonl"
    data.write_text(json.dumps(PROBLEM) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    args = ["eval", "bon", "--data", str(data), "--run", str(run_dir), "--n", "1", "--max-step-tokens", "16",
            "--n-ctx", "2048", "--threads", "1"]  # one thread: on a busy 2-core machine two threads spin and crawl

    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    figures = json.loads((run_dir / "bon.json").read_text(encoding="utf-8"))
    assert (figures["problems"], figures["responses"], figures["n"]) == (1, 2, 1)
    assert figures["model"].startswith("SmolLM2-135M")
    responses = figures["samples"][0]["responses"]
    assert [(r["answer"], r["correct"], r["steps"]) for r in responses] == [("5", True, 1), ("6", False, 1)]
    for r in responses:  # the demo model judges badly, but every score is a probability or unreadable
        assert all(s is None or 0.0 <= s <= 1.0 for s in r["scores"].values())
    assert figures["methods"]["Pass@1"] == {"1": 0.5, "2": 0.5}
    assert figures["methods"]["Pass@N"] == {"1": 0.5, "2": 1.0}
    assert "Best-of-N" in first.output and "min/argmax" in first.output

    def never(*args, **kwargs):
        raise AssertionError("recomputed something the store holds")

    monkeypatch.setattr(SolutionVerifier, "verify", never)
    monkeypatch.setattr(grade_cache, "grade_all", never)
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert json.loads((run_dir / "bon.json").read_text(encoding="utf-8")) == figures


def test_bad_input_is_one_line_naming_the_place(tmp_path):
    data = tmp_path / "bon.jsonl"
    data.write_text(json.dumps({**PROBLEM, "responses": ["ok", 5]}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "bon", "--data", str(data), "--run", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"{data}:1, record 0, field 'responses[1]': must be a string, got int" in " ".join(result.output.split())
