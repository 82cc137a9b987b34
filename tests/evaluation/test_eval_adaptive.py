"""Evaluation with adaptive options or early stopping, and figures read from the store alone.

With adaptive options a sample's paths depend on each other: they are computed, stored and reused
together (N in the store key), only the run's own Maj@N is reported, and the threshold sweep keeps
only thresholds the saved rewards decide exactly. ``--stored-only`` reports on what a run holds so
far. Driven by the scripted engine: a step containing WRONG is judged No by every path.
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from genprm.cli.main import app
from genprm.engines.scripted import ScriptedEngine
from genprm.evaluation.chat import ChatModel
from genprm.evaluation.processbench import compute_results, evaluate_processbench, load_processbench
from genprm.evaluation.scoring import StoreScorer
from genprm.store import RunStore
from genprm.verifier import VerifyConfig

REPLY = "<analyze>\nchecked\n</analyze>\n<output>\n**Judgement**: $\\boxed{Yes}$\n</output>"


def _verdict(prompt: str) -> tuple[float, float]:
    step = prompt.rsplit("<|im_start|>user", 1)[-1]
    return (math.log(0.1), math.log(0.9)) if "WRONG" in step else (math.log(0.9), math.log(0.1))


def _engine() -> ScriptedEngine:
    return ScriptedEngine("scripted", respond=lambda prompt, request: REPLY, verdict=_verdict)


def _data(folder):
    folder.mkdir()
    records = [
        {"id": "e", "problem": "p0", "steps": ["a = 1", "WRONG b = 3", "c", "d"], "label": 1},
        {"id": "c", "problem": "p1", "steps": ["x = 2", "y = 4"], "label": -1},
    ]
    (folder / "gsm8k.json").write_text(json.dumps(records))
    return load_processbench(folder, ["gsm8k"])


def _config(**fields) -> VerifyConfig:
    return VerifyConfig(mode="analyze", max_step_tokens=200, **fields)


def test_early_stopping_stores_the_sample_whole_and_reports_only_its_own_maj(tmp_path):
    samples = _data(tmp_path / "data")
    with RunStore(tmp_path / "run") as store:
        scorer = StoreScorer(store, _engine(), _config(n=2, stop_at_first_error=True))
        results = evaluate_processbench(samples, scorer).results
        erroneous = samples[0].item
        assert [len(steps) for steps in store.paths(erroneous.key, scorer.settings).values()] == [2, 2]
        assert list(results.rows) == ["Maj@2"]
        assert results.rows["Maj@2"]["gsm8k"].f1 == 1.0
        assert [t for t, _ in results.sweep] == [t / 20 for t in range(10, 20)]  # at or above the run's 0.5
        assert results.paths_dependent
        stored = [step for s in samples for steps in store.paths(s.item.key, scorer.settings).values() for step in steps]
        assert results.compute == {
            "path_steps": 8, "path_steps_fixed": 8, "path_steps_every_step": 12,
            "generated_tokens": sum(step["completion_tokens"] for step in stored), "cancelled_paths": 0,
        }

        again = _engine()
        evaluate_processbench(samples, StoreScorer(store, again, _config(n=2, stop_at_first_error=True)))
        assert again.calls == []  # everything reused

        more = StoreScorer(store, _engine(), _config(n=3, stop_at_first_error=True))
        assert more.settings != scorer.settings  # N is part of the key: the first two paths are not reusable
        assert more.missing(erroneous) == [0, 1, 2]
        fixed = StoreScorer(store, _engine(), _config(n=2))
        assert fixed.settings != scorer.settings and fixed.compute([erroneous]) is None


def test_adaptive_sampling_stores_the_paths_it_drew(tmp_path):
    samples = _data(tmp_path / "data")
    config = _config(n=4, adaptive_n=True, min_paths=2)
    with RunStore(tmp_path / "run") as store:
        scorer = StoreScorer(store, _engine(), config)
        results = evaluate_processbench(samples, scorer).results
        paths = store.paths(samples[1].item.key, scorer.settings)
        assert sorted(paths) == [0, 1]  # two agreeing paths are decisive: 2 of 4 drawn
        assert scorer.missing(samples[1].item) == []
        assert list(results.rows) == ["Maj@4"] and results.sweep == []
        assert results.compute["path_steps"] == 12 and results.compute["path_steps_every_step"] == 24


def test_fixed_n_keeps_every_method_and_the_whole_sweep():
    assert compute_results([], {}, model="m", n=3, threshold=0.5, settings="s", config=_config(n=3)).rows == {
        "Pass@1": {}, "Maj@2": {}, "Maj@3": {}
    }
    swept = compute_results([], {}, model="m", n=3, threshold=0.5, settings="s", config=_config(n=3)).sweep
    assert [t for t, _ in swept] == [round(i * 0.05, 4) for i in range(1, 20)]


def test_cli_takes_the_adaptive_options_and_refuses_mode_with_cascade(tmp_path):
    _data(tmp_path / "data")
    base = ["eval", "processbench", "--data", str(tmp_path / "data"), "--subsets", "gsm8k", "--engine", "scripted",
            "--run", str(tmp_path / "run")]
    clash = CliRunner().invoke(app, [*base, "--mode", "analyze", "--cascade", "direct,analyze"])
    assert clash.exit_code == 2 and "replaces --mode analyze" in clash.output
    result = CliRunner().invoke(app, [*base, "--n", "2", "--cascade", "direct,analyze", "--adaptive-n",
                                      "--min-paths", "1"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "processbench.json").read_text())
    assert saved["paths_dependent"] and list(saved["rows"]) == ["Maj@2"] and saved["compute"]["path_steps"] >= 6
    assert "compute:" in result.output


@pytest.mark.parametrize("command", [["eval", "bon"], ["refine"]])
def test_every_evaluation_command_has_the_options(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    for option in ("--stop-at-first-error", "--cascade", "--adaptive-n", "--min-paths", "--concurrency", "--engine"):
        assert option in result.output


def test_stored_only_figures_rest_on_the_samples_the_store_holds(tmp_path):
    from genprm.evaluation.critic import CriticSettings
    from genprm.evaluation.processbench import stored_figures

    samples = _data(tmp_path / "data")
    config = _config(n=2)
    with RunStore(tmp_path / "run") as store:
        StoreScorer(store, _engine(), config).score([samples[0].item])  # a run stopped after its first sample
        figures = stored_figures(store, samples, config, "scripted", critic=CriticSettings())
        assert (figures.stored, figures.total, figures.critic_missing) == (1, 2, 1)
        assert list(figures.results.rows) == ["Pass@1", "Maj@2"]  # no critic row: not judged yet
        assert figures.results.rows["Maj@2"]["gsm8k"].n_error == 1 and figures.results.rows["Maj@2"]["gsm8k"].n_correct == 0
        assert stored_figures(store, samples, _config(n=3), "scripted").stored == 0  # path 2 not stored

    base = ["eval", "processbench", "--data", str(tmp_path / "data"), "--subsets", "gsm8k", "--engine", "scripted",
            "--model", "scripted", "--mode", "analyze", "--max-step-tokens", "200", "--stored-only"]
    shown = CliRunner().invoke(app, [*base, "--run", str(tmp_path / "run"), "--n", "2"])
    assert shown.exit_code == 0, shown.output
    assert "1 of 2 samples have every path (from the store alone; nothing computed)" in " ".join(shown.output.split())
    other = CliRunner().invoke(app, [*base, "--run", str(tmp_path / "run"), "--n", "2", "--temperature", "0.9"])
    assert other.exit_code == 2 and "no results with these settings" in other.output
    empty = CliRunner().invoke(app, [*base, "--run", str(tmp_path / "nothing")])
    assert empty.exit_code == 2 and "holds no store yet" in empty.output and not (tmp_path / "nothing").exists()


def test_shards_split_the_samples_and_the_last_one_writes_the_figures(tmp_path):
    from genprm.evaluation.critic import Critic, CriticSettings
    from genprm.evaluation.processbench import Shard

    samples = _data(tmp_path / "data")
    assert [s.id for s in Shard(1, 2).pick(samples)] == ["e"] and [s.id for s in Shard(2, 2).pick(samples)] == ["c"]
    config = _config(n=2)
    with RunStore(tmp_path / "run") as store:
        first = _engine()
        critic = Critic(store, ChatModel(first), CriticSettings(max_tokens=50))
        one = evaluate_processbench(samples, StoreScorer(store, first, config), critic=critic, shard=Shard(1, 2))
        assert (one.stored, one.total, one.complete) == (1, 2, False)
        assert not (tmp_path / "run" / "processbench.json").exists()
        second = _engine()
        critic = Critic(store, ChatModel(second), CriticSettings(max_tokens=50))
        two = evaluate_processbench(samples, StoreScorer(store, second, config), critic=critic, shard=Shard(2, 2))
        assert two.complete and "Critic" in two.results.rows
        assert {p for p, _ in second.calls} and all("p0" not in p for p, _ in second.calls)  # only shard 2's sample
    saved = json.loads((tmp_path / "run" / "processbench.json").read_text())
    assert saved["rows"]["Maj@2"]["gsm8k"]["n_error"] == 1 and saved["rows"]["Maj@2"]["gsm8k"]["n_correct"] == 1


@pytest.mark.parametrize("text", ["3/2", "0/2", "a/b", "2"])
def test_bad_shards_are_clear_errors(text):
    from genprm.errors import ConfigError
    from genprm.evaluation.processbench import Shard

    with pytest.raises(ConfigError, match="--shard"):
        Shard.parse(text)
