"""``bench/gpu_estimate.py`` end to end on vLLM's CPU build, with the tiny preset: the command a GPU runs.

The script runs as its own process, as a user runs it: a Qwen2 config written in code, random weights
from vLLM's dummy loader, genprm's scheduler over real ProcessBench prompts, the ceiling row, and the
estimate in the JSON and on stdout. CI's vLLM part runs it (``pytest tests/engines -k vllm``).

Needs vLLM, the Qwen2 tokenizer folder (``$GENPRM_VLLM_MODEL``, else ``~/.cache/genprm/hf/...``) and
``../shared/data/processbench``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import VLLM_MODEL_ENV

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_estimate.py"
PROCESSBENCH = ROOT.parent / "shared" / "data" / "processbench"
DEFAULT_TOKENIZER = Path.home() / ".cache" / "genprm" / "hf" / "qwen2.5-coder-0.5b-instruct"
STEP_TOKENS = 24
pytestmark = pytest.mark.e2e


def _tokenizer() -> Path:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not importable here (on a CPU: bash scripts/setup-vllm, then run in its venv)")
    folder = Path(os.environ.get(VLLM_MODEL_ENV) or DEFAULT_TOKENIZER)
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(f"no Qwen2 tokenizer at {folder} (set {VLLM_MODEL_ENV}; bash scripts/setup-vllm makes one)")
    if not PROCESSBENCH.is_dir():
        pytest.skip(f"no ProcessBench data at {PROCESSBENCH}")
    return folder


def test_gpu_estimate_runs_on_vllm_with_the_tiny_random_model(tmp_path):
    tokenizer = _tokenizer()
    out = tmp_path / "estimate.json"
    command = [
        sys.executable, str(SCRIPT), "--preset", "tiny", "--tokenizer", str(tokenizer), "--data", str(PROCESSBENCH),
        "--samples", "2", "--n", "2", "--step-tokens", str(STEP_TOKENS), "--concurrency", "4",
        "--max-model-len", "8192", "--out", str(out),
    ]
    path = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]  # this checkout's genprm
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]

    config = json.loads((tmp_path / "gpu-estimate-tiny" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (256, 2, 152064)
    assert not list((tmp_path / "gpu-estimate-tiny").glob("*.safetensors"))  # random weights, none on disk

    data = json.loads(out.read_text())
    sched, ceiling, est = data["rows"]["scheduler"], data["rows"]["ceiling"], data["estimate"]
    assert sched["complete"] and ceiling["complete"]
    assert data["settings"]["samples"] == ["gsm8k-0", "olympiadbench-300"]  # spread over all 3,400 records
    steps = sum(s["path_steps"] for s in sched["solutions"])
    assert steps == 2 * (4 + 5)  # ProcessBench's step counts of those two records, N = 2
    # random weights never write a stop string: each path-step's analysis runs to the cap (an
    # end-of-sequence token, rare, may end one early); the verdict read adds one token per path-step
    written = sum(s["completion_tokens"] for s in sched["solutions"])
    assert 0.9 * steps * STEP_TOKENS <= written <= steps * STEP_TOKENS
    assert sched["completion_tokens"] == written + steps
    assert ceiling["completion_tokens"] == 4 * STEP_TOKENS  # one batch of --concurrency prompts, ignore_eos

    assert est["full_samples"] == 3400 and est["full_path_steps"] == 2 * est["full_steps"]
    assert est["full_wall_s"] == pytest.approx(est["full_generated_tokens"] / est["scheduler_tok_s"])
    assert 0 < est["share_of_ceiling"] and est["full_wall_s_at_ceiling"] > 0
    assert "estimated wall time, one device" in done.stdout and "| ceiling |" in done.stdout
