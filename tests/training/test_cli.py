"""The CLI stops bad input with one line naming the record and field, before any model is loaded."""

from __future__ import annotations

from typer.testing import CliRunner

from genprm.cli.main import app

from .helpers import one_turn_conversations, requires_train, write_jsonl


@requires_train
def test_a_bad_record_stops_train_before_the_model_loads(tmp_path):
    good = one_turn_conversations(3)
    bad = [dict(m) for m in good[1]]
    bad[2]["content"] = bad[2]["content"].replace("<output>", "<result>")
    data = write_jsonl(tmp_path / "d.jsonl", [good[0], bad, good[2]])
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--base-model", str(tmp_path / "no-model"),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "record 1, field 'conversations[2].content'" in result.output
    assert "--skip-invalid" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists(), "nothing is written for a run that cannot start"


@requires_train
def test_with_skip_invalid_it_gets_past_the_data(tmp_path):
    good = one_turn_conversations(2)
    data = write_jsonl(tmp_path / "d.jsonl", [good[0], [{"role": "user", "content": "hi"}], good[1]])
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--base-model", str(tmp_path / "no-model"),
                                      "--out", str(tmp_path / "run"), "--skip-invalid"])
    assert result.exit_code != 0
    assert "conversations[" not in result.output, "the invalid record no longer stops the run"
    summary = (tmp_path / "run" / "data.json").read_text()
    assert '"conversations": 2' in summary and '"skipped": 1' in summary


def test_bad_settings_name_the_option(tmp_path):
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "d.jsonl"), "--base-model", "m",
                                      "--out", str(tmp_path / "run"), "--global-batch-size", "0"])
    assert result.exit_code == 2 and "--global-batch-size 0" in result.output


def test_export_of_a_folder_that_is_no_run(tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2 and "is not a genprm training run" in result.output
