"""Helpers of the training tests: what the train extra needs, short conversations, running genprm."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import R1_SPECIAL
from genprm.training.synthetic import synthetic_conversations

REPO = Path(__file__).resolve().parents[2]
GGUF_TO_HF = REPO.parent / "shared" / "tools" / "gguf-to-hf"
TRAIN_DEPS = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "gguf")
MISSING = [m for m in TRAIN_DEPS if importlib.util.find_spec(m) is None]
requires_train = pytest.mark.skipif(
    bool(MISSING), reason=f"needs the train extra ({', '.join(MISSING)} missing): pip install 'genprm[train]'"
)
R1_TURN_TOKENS = ["<｜User｜>", "<｜Assistant｜>"]

# A short run shared by the end-to-end and the resume tests: the same arguments give the same losses.
TRAIN_ARGS = ["--lora", "--max-steps", "4", "--global-batch-size", "1", "--save-steps", "1", "--skip-invalid"]


def one_turn_conversations(count: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """Short conversations (system, one user turn, one verifier turn) to keep CPU steps fast."""
    return [c[:3] for c in synthetic_conversations(count, seed=seed)]


def write_jsonl(path: Path, conversations: list, *, column: str = "conversations") -> Path:
    path.write_text("".join(json.dumps({column: c}) + "\n" for c in conversations), encoding="utf-8")
    return path


def genprm_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "genprm.cli.main", *map(str, args)]


def run_genprm(*args: str | Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(genprm_command(*args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, f"genprm {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}"
    return done


def load_gguf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def r1_tokenizer(base):
    """A tokenizer that renders and tokenizes like DeepSeek-R1-Distill-Qwen's: its special tokens on a real
    vocabulary, its chat template (the fixture)."""
    import copy

    tokenizer = copy.deepcopy(base)
    tokenizer.add_special_tokens({**R1_SPECIAL, "additional_special_tokens": R1_TURN_TOKENS})
    tokenizer.chat_template = (REPO / "tests" / "fixtures" / "r1_distill_qwen_chat_template.jinja").read_text(
        encoding="utf-8")
    return tokenizer
