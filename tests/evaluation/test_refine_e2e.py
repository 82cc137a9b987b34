"""Critique-refine end to end on the real demo model through llama.cpp (policy and verifier alike), and
the CLI on the scripted engine (wiring, errors, resume) so it runs in a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genprm.cli.main import app
from genprm.evaluation import grade_cache
from genprm.evaluation.chat import ChatModel
from genprm.evaluation.refine import REFINE_PREFIX, Refiner, RefineSettings
from genprm.evaluation.refine_data import load_problems
from genprm.evaluation.refine_results import evaluate_refine
from genprm.evaluation.scoring import StoreScorer
from genprm.store import RunStore
from genprm.verifier import VerifyConfig

GSM8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "test.jsonl"


@pytest.mark.e2e
def test_one_gsm8k_problem_one_round_on_the_demo_model_then_resume(tmp_path, demo_gguf):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("math_verify")
    if not GSM8K.is_file():
        pytest.skip(f"shared data absent: {GSM8K}")
    from genprm.engines.llamacpp import LlamaCppEngine

    problems = load_problems(GSM8K, limit=1)
    # threshold 1.0: every readable step is "below" it, so the refine path always runs on this tiny model.
    config = VerifyConfig(n=1, mode="analyze", threshold=1.0, max_step_tokens=24, seed=3)
    settings = RefineSettings(rounds=1, max_tokens=40, seed=3)
    # One thread: on a shared 2-core machine llama.cpp's spinning threads otherwise fight the other jobs.
    with LlamaCppEngine(str(demo_gguf), n_ctx=2048, n_threads=1) as llm, RunStore(tmp_path / "run") as store:

        def refiner() -> Refiner:  # the same model is policy and verifier: loaded once
            return Refiner(store, ChatModel(llm), StoreScorer(store, llm, config), settings)

        phases: list[tuple[str, int, int]] = []
        results = evaluate_refine(problems, refiner(), lambda *event: phases.append(event))
        sample = results.samples[0]
        assert [r["source"] for r in sample["rounds"]] == ["policy", "refined"]
        assert sample["gold"] == "18" and sample["rounds"][0]["first_error"] >= 0
        turn = store.item("refine", problems[0].key, refiner().key, "1")["turn"]
        assert turn.startswith(REFINE_PREFIX + sample["rounds"][0]["step"])
        assert set(results.accuracy) == {0, 1} and results.refined == {1: 1}
        assert phases[-1] == ("round 1", 1, 1)

        requests = llm.stats.requests
        again = evaluate_refine(problems, refiner())
        assert llm.stats.requests == requests  # resumed: nothing recomputed
        assert again.to_json() == results.to_json()
    saved = json.loads((tmp_path / "run" / "refine.json").read_text())
    assert saved["rounds"] == 1 and saved["problems"] == 1 and set(saved["accuracy"]) == {"0", "1"}


# -- the CLI on the scripted engine ---------------------------------------------------------------


def _problems_file(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    rows = [{"question": "What is 2 + 2?", "answer": "#### 4"}, {"problem": "What is 1 + 1?", "answer": "2"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_cli_runs_resumes_and_writes_the_figures(tmp_path, monkeypatch):
    data, run = _problems_file(tmp_path), tmp_path / "run"
    args = ["refine", "--data", str(data), "--run", str(run), "--engine", "scripted", "--rounds", "2", "--mode",
            "analyze"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    saved = json.loads((run / "refine.json").read_text())
    assert saved["benchmark"] == "refine" and saved["problems"] == 2 and saved["rounds"] == 2
    assert saved["accuracy"] == {"0": 0.0, "1": 0.0, "2": 0.0}  # the scripted policy answers nothing
    assert saved["refined"] == {"1": 0, "2": 0}
    assert "accuracy" in first.output and "refine.json" in first.output
    monkeypatch.setattr(grade_cache, "grade_all", lambda _: pytest.fail("regraded an answer the store holds"))
    again = CliRunner().invoke(app, [*args, "--limit", "1"])
    assert again.exit_code == 0, again.output
    assert json.loads((run / "refine.json").read_text())["problems"] == 1


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ([], "problems.jsonl:3, record 2, field 'answer': missing", None),
        (["--history", "most"], None, "history='most': choose one of full, last"),
        (["--rounds", "-1"], None, "rounds=-1: must be 0 or more"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, extra, line, message):
    data = _problems_file(tmp_path)
    with data.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"problem": "no answer"}) + "\n")
    result = CliRunner().invoke(app, ["refine", "--data", str(data), "--run", str(tmp_path / "run"), "--engine",
                                      "scripted", *extra])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert (line or message) in flat
    assert "Traceback" not in result.output


def test_the_policy_shares_the_verifier_engine_only_when_it_is_the_same_model():
    from genprm.cli.cluster import verifier_models
    from genprm.engines.scripted import ScriptedEngine
    from genprm.executor import RoleSpec

    same = {"verifier": RoleSpec("scripted", "m"), "policy": RoleSpec("scripted", "m", (), "{{ messages }}")}
    with verifier_models(None, same, 1) as (engines, executor):
        assert engines["policy"] is engines["verifier"] and executor is None
    other = {"verifier": RoleSpec("scripted", "m"), "policy": RoleSpec("scripted", "policy")}
    with verifier_models(None, other, 1) as (engines, _):
        assert engines["policy"] is not engines["verifier"] and isinstance(engines["policy"], ScriptedEngine)
