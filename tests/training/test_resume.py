"""A training run killed with kill -9 resumes from its last checkpoint with the same data order.

The killed run, resumed, must log exactly the losses of an uninterrupted run with the same settings
(the shared reference run): the same conversations in the same order through the same weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from .helpers import TRAIN_ARGS, genprm_command, requires_train, run_genprm

pytestmark = [requires_train, pytest.mark.e2e]


def _losses(run):
    return {m["step"]: m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_kill_9_then_resume_gives_the_uninterrupted_run(trained_run, train_data, smollm2_hf, tmp_path):
    out = tmp_path / "killed"
    args = ["train", "--data", train_data, "--base-model", smollm2_hf, "--out", out, *TRAIN_ARGS]
    process = subprocess.Popen(genprm_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    state = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 1200
    while not state.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state.is_file(), "no checkpoint-2 appeared"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "train_result.json").exists()

    run_genprm(*args)
    result = json.loads((out / "train_result.json").read_text())
    assert result["resumed_from_step"] in (2, 3)
    steps = [m["step"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert steps == [1, 2, 3, 4], "steps after the checkpoint were logged twice or lost"
    reference = _losses(trained_run)
    resumed = _losses(out)
    assert resumed == pytest.approx(reference, rel=1e-5, abs=1e-6)
    assert len(set(reference.values())) == 4, "distinct conversations give distinct losses"


def test_a_run_folder_refuses_other_settings_or_data(trained_run, train_data, smollm2_hf, tmp_path):
    from genprm.errors import ConfigError
    from genprm.training import TrainConfig, train

    from .helpers import one_turn_conversations, write_jsonl

    same = {"base_model": str(smollm2_hf), "out": trained_run, "lora": True, "global_batch_size": 1, "save_steps": 1,
            "skip_invalid": True}
    with pytest.raises(ConfigError, match="max_steps: 4 -> 5") as caught:
        train(TrainConfig(data=train_data, max_steps=5, **same))
    assert "new folder" in str(caught.value)
    other = write_jsonl(tmp_path / "other.jsonl", one_turn_conversations(8, seed=1))
    with pytest.raises(ConfigError, match="data_fingerprint"):
        train(TrainConfig(data=other, max_steps=4, **same))
