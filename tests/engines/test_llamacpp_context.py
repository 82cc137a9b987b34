"""The llama.cpp engine's context: the model's own, within a memory bound, or what --n-ctx asks."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from genprm.engines.llamacpp import DEFAULT_CTX, context_length  # noqa: E402

QWEN_1_5B = {  # as Qwen2.5-Coder-1.5B's GGUF declares it
    "general.architecture": "qwen2", "qwen2.context_length": "32768", "qwen2.block_count": "28",
    "qwen2.attention.head_count": "12", "qwen2.attention.head_count_kv": "2", "qwen2.embedding_length": "1536",
}


def test_the_default_is_the_trained_context_when_its_kv_cache_fits():
    assert context_length(QWEN_1_5B, None) == 32768  # 28 KiB per token: 0.9 GiB for the whole context


def test_a_memory_bound_caps_the_default():
    per_token = 2 * 28 * 2 * 128 * 2
    assert context_length(QWEN_1_5B, None, kv_cache_mb=256) == 256 * 2**20 // per_token


def test_an_explicit_context_is_kept_up_to_the_trained_one():
    assert context_length(QWEN_1_5B, 4096) == 4096
    assert context_length(QWEN_1_5B, 65536) == 32768
    assert context_length({"general.architecture": "x"}, None) == DEFAULT_CTX


def test_the_demo_model_gets_its_whole_context(demo_gguf):
    from genprm.engines.llamacpp import LlamaCppEngine

    with LlamaCppEngine(str(demo_gguf)) as engine:
        assert engine.llm.n_ctx() == 8192  # SmolLM2's trained context; was min(16384, 8192) before too
