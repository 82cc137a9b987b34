"""The GPU estimate's bookkeeping, without vLLM: the slice, the workload, the estimate, the random model's config.

The run itself (vLLM on the tiny random model) is ``tests/engines/test_gpu_estimate_vllm.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.bench.scripts import load_bench_script

from genprm.evaluation.processbench import load_processbench
from genprm.io import validate_record

ROOT = Path(__file__).resolve().parents[2]
PROCESSBENCH = ROOT.parent / "shared" / "data" / "processbench"


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("gpu_estimate")


def _items(steps: list[int]) -> list:
    return [
        validate_record({"id": f"r{i}", "problem": "p", "steps": ["s"] * k, "label": -1}, position=i, path="inline")
        for i, k in enumerate(steps)
    ]


def _solution(path_steps: int) -> dict:
    return {"key": "k", "path_steps": path_steps, "completion_tokens": 0}


def test_spread_takes_evenly_spaced_records_and_counts_their_work(bench):
    items = _items([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    chosen = bench.spread(items, 4)
    assert [i.record["id"] for i in chosen] == ["r0", "r2", "r5", "r7"]
    assert bench.spread(items, 50) == items
    load = bench.workload(chosen, 8)
    assert (load.samples, load.steps, load.path_steps) == (4, 1 + 3 + 6 + 8, 8 * 18)


@pytest.mark.skipif(not PROCESSBENCH.is_dir(), reason="no ProcessBench data at ../shared/data/processbench")
def test_the_slice_spans_all_four_subsets_with_their_step_counts(bench):
    everything = [s.item for s in load_processbench(PROCESSBENCH)]
    chosen = bench.spread(everything, 64)
    subsets = {str(i.record["id"]).split("-")[0] for i in chosen}
    assert subsets == {"gsm8k", "math", "olympiadbench", "omnimath"}
    assert len({i.record["id"] for i in chosen}) == 64
    mean = bench.workload(everything, 1).steps / len(everything)
    assert abs(bench.workload(chosen, 1).steps / 64 - mean) < 1.5  # representative, not the first (short) records


def test_estimate_scales_the_slice_to_the_full_benchmark(bench):
    full = bench.Workload(samples=3400, steps=25697, n=8)
    rows = {
        "scheduler": {"complete": True, "wall_s": 100.0, "completion_tokens": 50_000,
                      "solutions": [_solution(60), _solution(40)]},
        "ceiling": {"complete": True, "wall_s": 10.0, "completion_tokens": 10_000},
    }
    est = bench.estimate(rows, full)
    assert est["generated_per_path_step"] == 500.0
    assert est["full_generated_tokens"] == 25697 * 8 * 500.0
    assert est["scheduler_tok_s"] == 500.0 and est["ceiling_tok_s"] == 1000.0
    assert est["share_of_ceiling"] == pytest.approx(0.5)
    assert est["full_wall_s"] == pytest.approx(25697 * 8 * 500.0 / 500.0)
    assert est["full_wall_s_at_ceiling"] == pytest.approx(est["full_wall_s"] * 0.5)
    text = bench.estimate_table(est)
    assert "57.10 h" in text and "28.55 h" in text and "50%" in text


def test_a_cut_short_run_still_estimates_and_says_so(bench):
    full = bench.Workload(samples=10, steps=40, n=2)
    rows = {"scheduler": {"complete": False, "wall_s": 20.0, "completion_tokens": 2_000, "solutions": [_solution(20)]}}
    est = bench.estimate(rows, full)
    assert est["full_wall_s"] == pytest.approx(80 * 100 / 100) and "ceiling_tok_s" not in est
    assert "from 1 finished solutions" in bench.estimate_table(est)
    assert "no estimate" in bench.estimate_table(bench.estimate({}, full))


@pytest.mark.skipif(not PROCESSBENCH.is_dir(), reason="no ProcessBench data at ../shared/data/processbench")
def test_estimate_only_prints_the_tables_of_a_saved_run(bench, tmp_path, capsys):
    out = tmp_path / "run.json"
    rows = {"scheduler": {"kind": "scheduler", "complete": True, "wall_s": 50.0, "completion_tokens": 10_000,
                          "solutions": [_solution(25)]}}
    out.write_text(json.dumps({"settings": {"n": 8}, "rows": rows}), encoding="utf-8")
    assert bench.main(["--estimate-only", "--out", str(out), "--data", str(PROCESSBENCH)]) == 0
    printed = capsys.readouterr().out
    assert "| scheduler |" in printed and "205576" in printed  # 25,697 steps x 8 paths
    assert bench.main(["--estimate-only", "--out", str(tmp_path / "none.json"), "--data", str(PROCESSBENCH)]) == 2


def test_random_model_config_is_qwen2_7b(bench, tmp_path):
    pytest.importorskip("transformers")
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    (tokenizer / "config.json").write_text(json.dumps({"bos_token_id": 151643, "eos_token_id": 151645}))
    folder = bench.write_random_model(tmp_path / "model", "qwen2-7b", tokenizer)
    assert [p.name for p in folder.iterdir()] == ["config.json"]  # no weights: vLLM's dummy loader makes them
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["model_type"] == "qwen2"
    expected = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                "intermediate_size": 18944, "vocab_size": 152064, "max_position_embeddings": 32768,
                "tie_word_embeddings": False, "eos_token_id": 151645}
    assert {k: config[k] for k in expected} == expected
    theta = config.get("rope_theta") or config["rope_parameters"]["rope_theta"]  # transformers 4 or 5
    assert theta == 1e6
