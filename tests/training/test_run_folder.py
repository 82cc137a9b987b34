"""Run folders: the newest complete checkpoint, metric lines past it dropped, other settings refused."""

from __future__ import annotations

import json

import pytest

from genprm.errors import ConfigError
from genprm.training.config import LORA_LEARNING_RATE, PAPER_LEARNING_RATE, TrainConfig
from genprm.training.run_folder import check_same_run, keep_metrics_up_to, latest_checkpoint


def _checkpoint(root, step, state=True, torn=False):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"x")
    if state:
        (folder / "trainer_state.json").write_text('{"global_step": ' if torn else json.dumps({"global_step": step}))
    return folder


def test_the_newest_complete_checkpoint_is_taken(tmp_path):
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(root) is None
    _checkpoint(root, 1)
    second = _checkpoint(root, 2)
    _checkpoint(root, 3, state=False)
    _checkpoint(root, 10, torn=True)
    assert latest_checkpoint(root) == second
    assert (root / "checkpoint-3").is_dir(), "only the main process moves checkpoints"
    assert latest_checkpoint(root, move_incomplete=True) == second
    names = sorted(p.name for p in root.iterdir())
    assert names[:2] == ["checkpoint-1", "checkpoint-10.incomplete-" + names[1].split("-")[-1]]
    assert any(n.startswith("checkpoint-3.incomplete-") for n in names)
    assert latest_checkpoint(root) == second


def test_metric_lines_after_the_resumed_step_are_dropped(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    assert keep_metrics_up_to(metrics, 3) == []
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)) + '{"step": 6')
    kept = keep_metrics_up_to(metrics, 3)
    assert [m["step"] for m in kept] == [1, 2, 3]
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


def test_other_settings_are_refused(tmp_path):
    check_same_run(None, {"a": 1}, tmp_path)
    check_same_run({"a": 1}, {"a": 1}, tmp_path)
    with pytest.raises(ConfigError, match="a: 1 -> 2"):
        check_same_run({"a": 1}, {"a": 2}, tmp_path)


def test_config_defaults_follow_the_paper(tmp_path):
    config = TrainConfig(data=tmp_path / "d.jsonl", base_model="m", out=tmp_path / "o")
    assert (config.global_batch_size, config.lr_scheduler, config.epochs) == (64, "cosine", 3.0)
    assert config.learning_rate_for(lora=False) == PAPER_LEARNING_RATE == 2e-6
    assert config.learning_rate_for(lora=True) == LORA_LEARNING_RATE
    assert config.uses_lora(has_gpu=False) and not config.uses_lora(has_gpu=True)
    assert TrainConfig(data=config.data, base_model="m", out=config.out, lora=False).uses_lora(has_gpu=False) is False
    assert config.gradient_accumulation(world_size=1) == 64
    assert config.gradient_accumulation(world_size=4) == 16
    wide = TrainConfig(data=config.data, base_model="m", out=config.out, per_device_batch_size=3)
    assert wide.gradient_accumulation(world_size=1) == 22


def test_config_rejects_typos_and_bad_values(tmp_path):
    with pytest.raises(ValueError):
        TrainConfig(data=tmp_path, base_model="m", out=tmp_path, learning_rte=1e-5)
    with pytest.raises(ValueError):
        TrainConfig(data=tmp_path, base_model="m", out=tmp_path, global_batch_size=0)


def test_resuming_may_change_only_neutral_settings(tmp_path):
    a = TrainConfig(data=tmp_path / "d", base_model="m", out=tmp_path / "o")
    b = TrainConfig(data=tmp_path / "elsewhere", base_model="m", out=tmp_path / "p", report_to=("tensorboard",))
    assert a.resume_key() == b.resume_key()
    assert a.resume_key() != TrainConfig(data=a.data, base_model="m", out=a.out, seed=1).resume_key()
