"""``evaluate_bon`` on a scripted engine: step rewards -> solution scores -> figures, and store reuse.

The verifier runs in ``direct`` mode, so each step costs one verdict read: a step containing "bad"
scores 0.1, one containing "??" is unreadable, every other step scores 0.9.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from genprm.engines.scripted import ScriptedEngine
from genprm.evaluation.bon import RESULT_FILE, evaluate_bon, load_bon
from genprm.evaluation.scoring import StoreScorer
from genprm.protocol.prompts import Mode
from genprm.store import RunStore
from genprm.verifier import VerifyConfig

pytest.importorskip("math_verify")

PROBLEMS = [
    {"id": "p0", "problem": "What is 1+1?", "answer": "2", "score": [False, True, False],
     "responses": ["Start.\n\nbad step\n\nSo \\boxed{3}.", "Fine.\n\nSo \\boxed{2}.", ""]},
    {"id": "p1", "problem": "What is 2+3?", "answer": "5", "score": [True, True, True],  # r2's label is wrong
     "responses": ["??\n\nSo \\boxed{5}.", "So \\boxed{5}.", "bad\n\nSo \\boxed{6}."]},
]


def last_user_turn(prompt: str) -> str:
    return prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


class Verdicts:
    """The scripted verdicts, counting the steps judged."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompt: str) -> tuple[float | None, float | None]:
        self.calls += 1
        step = last_user_turn(prompt)
        if "??" in step:
            return None, None
        p = 0.1 if "bad" in step else 0.9
        return math.log(p), math.log(1 - p)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "bon.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS), encoding="utf-8")
    return path


def run(data: Path, run_dir: Path, **load) -> tuple[dict, int]:
    """Evaluate into ``run_dir``; returns bon.json and how many steps the engine judged."""
    verdicts = Verdicts()
    engine = ScriptedEngine(respond=lambda prompt, request: "", verdict=verdicts)
    config = VerifyConfig(n=1, mode=Mode.DIRECT, reward="raw")
    with RunStore(run_dir) as store:
        evaluate_bon(load_bon(data, **load), StoreScorer(store, engine, config))
    return json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8")), verdicts.calls


def test_figures_follow_from_the_scripted_rewards(data, tmp_path):
    figures, judged = run(data, tmp_path / "run")
    assert judged == 3 + 2 + 0 + 2 + 1 + 2  # steps per response; the empty response is never verified
    assert {k: figures[k] for k in ("benchmark", "model", "n", "responses", "problems")} == {
        "benchmark": "bon", "model": "scripted", "n": 1, "responses": 3, "problems": 2,
    }
    p0, p1 = figures["samples"]
    assert [r["answer"] for r in p0["responses"]] == ["3", "2", None]
    assert [r["correct"] for r in p0["responses"]] == [False, True, False]
    assert [r["steps"] for r in p0["responses"]] == [3, 2, 0]
    assert p0["responses"][2]["key"] is None and p0["responses"][2]["scores"]["min"] is None
    scores = p0["responses"][0]["scores"]
    assert scores["last"] == pytest.approx(0.9) and scores["min"] == pytest.approx(0.1)
    assert scores["mean"] == pytest.approx(1.9 / 3) and scores["product"] == pytest.approx(0.081)
    assert p1["responses"][0]["scores"]["min"] == pytest.approx(0.9)  # the unreadable step is left out
    methods = figures["methods"]
    assert set(methods) == {f"{a}/{s}" for a in ("last", "min", "mean", "product") for s in ("argmax", "weighted")} | {
        "Pass@1", "Maj@N", "Pass@N"}
    # b=3: min/argmax picks p0's r1 (0.9 > 0.1) and p1's r0 (0.9 ties r1, first wins): both right.
    assert methods["min/argmax"]["3"] == 1.0
    # last/argmax: p0's r0 and r1 tie at 0.9, the first (wrong) wins; p1 right.
    assert methods["last/argmax"]["3"] == 0.5
    assert methods["Pass@1"] == {"1": pytest.approx(0.5), "2": pytest.approx(0.5), "3": pytest.approx(0.5)}
    assert methods["Maj@N"]["3"] == 0.5  # p0: "3" and "2" tie, "3" first; p1: "5" twice
    assert methods["Pass@N"] == {"1": 0.5, "2": 1.0, "3": 1.0}
    # our grades match the labels except p1's r2 (labelled right, answers 6)
    assert figures["agreement"] == {"matches": 5, "total": 6, "rate": pytest.approx(5 / 6)}


def test_rerun_reuses_the_store_and_extension_computes_only_the_new(data, tmp_path):
    run_dir = tmp_path / "run"
    first, judged = run(data, run_dir, limit=1, responses=2)
    assert judged == 5 and first["problems"] == 1 and first["responses"] == 2
    again, judged = run(data, run_dir, limit=1, responses=2)
    assert judged == 0 and again == first
    more, judged = run(data, run_dir, limit=2, responses=2)
    assert judged == 2 + 1  # only p1's first two responses
    assert more["samples"][0] == first["samples"][0]
    _, judged = run(data, run_dir)
    assert judged == 0 + 2  # p0's r2 is empty; p1's r2 has two steps
    with RunStore(run_dir) as store:
        assert sum(1 for _ in store.items("grade")) == 6


def test_the_terminal_table_shows_every_method_and_budget(data, tmp_path):
    from rich.console import Console

    from genprm.cli.tables import print_bon
    from genprm.evaluation.bon import Agreement, BonResults

    results = BonResults("m", 1, 2, "s", {"min/argmax": {1: 0.5, 2: 1.0}, "Pass@1": {1: 0.5, 2: 0.5}}, Agreement(3, 4))
    console = Console(record=True, width=120)
    print_bon(console, results)
    text = console.export_text()
    assert "min/argmax" in text and "100.0" in text and "3/4 responses (75.0%)" in text


def test_early_stopping_is_refused_because_it_would_score_part_of_a_response(data, tmp_path):
    """With --stop-at-first-error a response's steps after its first error are never scored, so last/min/
    mean/product would rest on part of it: the API and the CLI refuse, before any model is loaded."""
    from typer.testing import CliRunner

    from genprm.cli.main import app
    from genprm.errors import ConfigError

    verdicts = Verdicts()
    engine = ScriptedEngine(respond=lambda prompt, request: "", verdict=verdicts)
    config = VerifyConfig(n=1, mode=Mode.DIRECT, stop_at_first_error=True)
    with RunStore(tmp_path / "run") as store, pytest.raises(ConfigError, match="stop-at-first-error"):
        evaluate_bon(load_bon(data), StoreScorer(store, engine, config))
    assert verdicts.calls == 0
    assert not (tmp_path / "run" / RESULT_FILE).exists()

    result = CliRunner().invoke(app, ["eval", "bon", "--data", str(data), "--run", str(tmp_path / "cli"),
                                      "--stop-at-first-error", "--model", "no-such-model.gguf"])
    assert result.exit_code == 2
    assert "stop-at-first-error" in result.output and "no-such-model" not in result.output
