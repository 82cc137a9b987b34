"""`genprm train` -> `genprm export` -> `genprm verify` on a tiny real model (SmolLM2-135M, LoRA, 4 steps)."""

from __future__ import annotations

import json

import pytest

from genprm.protocol import prompts as P
from genprm.training.templates import shipped_template

from .helpers import requires_train, run_genprm

pytestmark = [requires_train, pytest.mark.e2e]


def test_the_run_folder_holds_the_run(trained_run):
    result = json.loads((trained_run / "train_result.json").read_text())
    assert result["steps"] == 4 and result["lora"] is True
    assert result["conversations"] == 8 and result["skipped"] == 1
    assert result["template"] == "genprm:smollm2"
    data = json.loads((trained_run / "data.json").read_text())
    assert data["skipped_examples"][0]["record"] == 3
    metrics = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(m["loss"] > 0 and m["tokens_per_s"] > 0 for m in metrics)
    assert metrics[-1]["tokens"] > metrics[0]["tokens"] > 0
    original = shipped_template("smollm2", training=False)
    assert (trained_run / "inference_template.jinja").read_text() == original
    assert (trained_run / "final" / "chat_template.jinja").read_text() == original
    assert (trained_run / "final" / "adapter_config.json").is_file()


def test_a_finished_run_is_not_trained_again(trained_run, train_data, smollm2_hf):
    from genprm.training import TrainConfig, train

    before = (trained_run / "metrics.jsonl").read_text()
    config = TrainConfig(data=train_data, base_model=str(smollm2_hf), out=trained_run, lora=True, max_steps=4,
                         global_batch_size=1, save_steps=1, skip_invalid=True)
    result = train(config)
    assert result.steps == 4 and result.out == str(trained_run)
    assert (trained_run / "metrics.jsonl").read_text() == before


@pytest.fixture(scope="module")
def exported(trained_run):
    gguf = trained_run / "model.gguf"
    run_genprm("export", trained_run, "--gguf", gguf)
    return gguf


def test_export_merges_the_adapter_and_carries_the_template(exported, trained_run, smollm2_hf):
    from safetensors.torch import load_file

    from genprm.training.export import gguf_chat_template

    original = shipped_template("smollm2", training=False)
    hf = trained_run / "hf"
    assert (hf / "chat_template.jinja").read_text() == original
    assert not (hf / "adapter_config.json").exists()
    assert gguf_chat_template(exported) == original
    merged, base = load_file(str(hf / "model.safetensors")), load_file(str(smollm2_hf / "model.safetensors"))
    name = next(k for k in base if k.endswith("self_attn.q_proj.weight"))
    assert merged[name].shape == base[name].shape
    assert (merged[name].float() - base[name].float()).abs().max() > 0, "LoRA not merged"
    report = json.loads((trained_run / "export.json").read_text())
    assert report["merged_lora"] is True and report["gguf_bytes"] == exported.stat().st_size


def test_quantizing_the_export(exported, tmp_path):
    from genprm.training.export import gguf_chat_template, quantize

    target = tmp_path / "model.q4_k_m.gguf"
    quantize(exported, target, "Q4_K_M")
    assert 0 < target.stat().st_size < exported.stat().st_size
    assert gguf_chat_template(target) == gguf_chat_template(exported)


def test_genprm_verify_runs_on_the_exported_gguf(exported, tmp_path):
    solutions = tmp_path / "one.jsonl"
    solutions.write_text(json.dumps({"problem": "What is 2 + 3?", "steps": ["2 + 3 = 5, so the answer is 5."]}) + "\n")
    out = tmp_path / "verdicts.jsonl"
    run_genprm("verify", solutions, "--model", exported, "--n", "1", "--max-step-tokens", "48", "--threads", "2",
               "--out", out, "--quiet")
    record = json.loads(out.read_text().splitlines()[0])
    assert len(record["step_rewards"]) == 1
    path = record["steps"][0]["paths"][0]
    assert path["text"].startswith(P.analyze_prefix(1))
    assert path["text"].endswith(P.verdict_close(path["verdict"]))
    assert record["step_status"][0] in ("scored", "unreadable")
    from genprm.training.adherence import count_adherence

    counts = count_adherence([path])
    assert counts.path_steps == 1 and counts.readable == int(path["readable"])
    assert counts.reached_verdict == int(path["degraded"] is None)


def test_full_fine_tuning_exports_a_plain_folder(smollm2_hf, train_data, tmp_path):
    """The paper's default on a GPU (here one step on the CPU): no adapter, the model saved as trained."""
    from safetensors.torch import load_file

    from genprm.training import TrainConfig, train
    from genprm.training.export import export

    run = tmp_path / "full"
    result = train(TrainConfig(data=train_data, base_model=str(smollm2_hf), out=run, lora=False, max_steps=1,
                               global_batch_size=1, save_steps=100, skip_invalid=True, learning_rate=1e-4,
                               warmup_ratio=0.0))  # a warmup step would start at learning rate 0
    assert result.lora is False and result.steps == 1
    assert not (run / "final" / "adapter_config.json").exists()
    exported = export(run)
    assert exported.merged_lora is False and exported.gguf is None
    merged, base = load_file(f"{exported.hf_dir}/model.safetensors"), load_file(str(smollm2_hf / "model.safetensors"))
    name = next(k for k in base if k.endswith("mlp.down_proj.weight"))
    assert merged[name].dtype == base[name].dtype, "saved in the base model's dtype"
    assert (merged[name].float() - base[name].float()).abs().max() > 0
    assert (tmp_path / "full" / "hf" / "chat_template.jinja").read_text() == shipped_template("smollm2", training=False)
