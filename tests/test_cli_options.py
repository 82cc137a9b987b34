"""Options every verifying command shares reach its settings: --reward, --sandbox, --retry-failed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from genprm.cli.main import app
from genprm.store import RunStore

COMMANDS = [["verify", "{data}"], ["eval", "processbench", "--data", "{folder}", "--subsets", "gsm8k"], ["eval", "bon", "--data", "{bon}"],
            ["refine", "--data", "{bon}"]]


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "pb"
    folder.mkdir()
    (folder / "gsm8k.json").write_text(json.dumps([{"id": "a", "problem": "p", "steps": ["x = 1"], "label": -1},
                                                   {"id": "b", "problem": "q", "steps": ["y = 2"], "label": 0}]))
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"problem": "p", "steps": ["x = 1"]}) + "\n")
    bon = tmp_path / "bon.jsonl"
    bon.write_text(json.dumps({"problem": "p", "answer": "1", "responses": ["So \\boxed{1}."]}) + "\n")
    return {"data": str(data), "folder": str(folder), "bon": str(bon)}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize(("option", "value"), [("--reward", "bogus"), ("--sandbox", "nowhere")])
def test_a_bad_value_is_refused_naming_the_option(files, tmp_path, command, option, value):
    args = [a.format(**files) for a in command] + ["--run", str(tmp_path / "run")] * (command[0] != "verify")
    result = CliRunner().invoke(app, [*args, option, value, "--model", "no-such-model.gguf"])
    assert result.exit_code == 2, result.output
    assert option in result.output and value in result.output


@pytest.mark.parametrize("command", COMMANDS[:3], ids=lambda c: " ".join(c[:2]))
def test_llamacpp_parallel_is_an_option_of_the_verifying_commands(files, tmp_path, command):
    args = [a.format(**files) for a in command] + ["--run", str(tmp_path / "run")] * (command[0] != "verify")
    result = CliRunner().invoke(app, [*args, "--parallel", "0", "--model", "no-such-model.gguf"])
    assert result.exit_code == 2, result.output
    assert "--parallel" in result.output and "No such option" not in result.output


def test_the_options_reach_the_stored_settings(files, tmp_path):
    run = tmp_path / "run"
    args = ["eval", "processbench", "--data", files["folder"], "--subsets", "gsm8k", "--run", str(run), "--engine", "scripted",
            "--model", "x", "--mode", "direct", "--reward", "raw", "--sandbox", "rlimits"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with RunStore(run) as store:
        [(model, config)] = store.settings().values()
    assert config["reward"] == "raw" and "sandbox" not in config  # where code runs does not shape a result


@pytest.mark.parametrize("stage", ["run", "solutions", "rollouts", "critique"])
def test_llamacpp_parallel_is_an_option_of_the_synthesis_stages_that_generate(tmp_path, stage):
    result = CliRunner().invoke(app, ["synth", stage, "--run", str(tmp_path / "run"), "--parallel", "0"])
    assert result.exit_code == 2, result.output
    assert "--parallel" in result.output and "No such option" not in result.output


def test_synthesis_parallel_reaches_the_llamacpp_engine_options():
    from genprm.cli.synth import role_spec

    spec = role_spec("policy", "m.gguf", "llamacpp", None, None, None, None, None, 1, 4)
    assert ("parallel", 4) in spec.options and ("n_threads", 1) in spec.options
    assert "parallel" not in dict(role_spec("policy", "m.gguf", "llamacpp", None, None, None, None, None, 1).options)
