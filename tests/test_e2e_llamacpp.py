"""End to end on the real demo model through llama.cpp: no mock of the engine anywhere here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genprm import VerifyConfig, verify
from genprm.protocol import prompts as P
from genprm.protocol.chat import AssistantHeader, ChatTemplate, build_messages
from genprm.protocol.verdict import verdict_probe

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
RECORD = {
    "id": "t-1",
    "problem": "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "steps": ["Tom starts with 3 apples.", "He buys 4 more, so he has 3 + 4 = 8 apples."],
    "label": 1,
}
FAST = {"max_step_tokens": 96, "seed": 7}


def demo_engine(demo_gguf):
    """A fresh llama.cpp engine on the demo model: empty caches."""
    from genprm.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(str(demo_gguf), n_ctx=4096)


@pytest.fixture(scope="module")
def engine(demo_gguf):
    with demo_engine(demo_gguf) as llm:
        yield llm


def test_demo_template_header_is_the_chatml_assistant_turn(engine):
    chat = ChatTemplate(engine.chat_template, engine.special_tokens)
    messages = build_messages(P.SYSTEM_PROMPT, [P.user_turn("p", "s", 0)], [])
    prompt = chat.prompt_for(messages, AssistantHeader.TEMPLATE)
    assert prompt == (
        f"<|im_start|>system\n{P.SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nQuestion: p\n\ns<|im_end|>\n<|im_start|>assistant\n"
    )


def test_verdict_logprobs_agree_with_and_without_the_prefix_cache(engine, demo_gguf):
    from genprm.engines.base import LogprobRequest

    text = "<|im_start|>user\nIs 2+2=4?<|im_end|>\n<|im_start|>assistant\n" + P.OUTPUT_PREFIX
    probe = verdict_probe(engine.tokenize, text)
    request = LogprobRequest(probe.prompt, (probe.yes_token, probe.no_token))
    warm = engine.next_token_logprobs([request])[0]       # the cache holds unrelated earlier calls
    again = engine.next_token_logprobs([request])[0]      # now a full prefix hit
    with demo_engine(demo_gguf) as fresh:
        cold = fresh.next_token_logprobs([request])[0]
    for token in request.candidates:
        assert math.isclose(warm.logprobs[token], cold.logprobs[token], abs_tol=1e-3)
        assert math.isclose(again.logprobs[token], cold.logprobs[token], abs_tol=1e-3)
        assert warm.logprobs[token] < 0
    assert again.cached_prompt_tokens == len(probe.prompt) - 1


def test_verify_end_to_end_writes_complete_records_and_resumes(engine, tmp_path):
    out = tmp_path / "verdicts.jsonl"
    config = VerifyConfig(n=2, **FAST)
    [result] = verify([RECORD], model=engine, config=config, out=out)
    assert len(result.step_rewards) == 2 and len(result.steps) == 2
    for step in result.steps:
        assert len(step.paths) == 2
        for k, path in enumerate(step.paths):
            assert path.path == k
            assert path.text.startswith(P.analyze_prefix(step.index + 1))
            assert P.OUTPUT_PREFIX + "{" + path.verdict + "}$\n</output>\n" in path.text
            assert path.readable and 0.0 <= path.reward <= 1.0
            assert path.completion_tokens > 0
        assert step.reward == pytest.approx(sum(p.reward for p in step.paths) / 2)
    expected_first = next((i for i, r in enumerate(result.step_rewards) if r < 0.5), -1)
    assert result.first_error == expected_first
    # Later steps reuse the KV cache of the path's own history.
    assert sum(p.cached_prompt_tokens for p in result.steps[1].paths) > 0

    line = json.loads(out.read_text().splitlines()[0])
    assert line["id"] == "t-1" and line["label"] == 1 and line["format_version"] == 1
    assert line["step_rewards"] == result.step_rewards
    assert line["steps"][0]["paths"][0]["text"] == result.steps[0].paths[0].text

    again = verify([RECORD], model=engine, config=config, out=out)
    assert again == [] and len(out.read_text().splitlines()) == 1


def test_same_seed_same_transcripts(demo_gguf):
    """A rerun with the same seed writes the same transcripts. Each run gets its own engine, as a rerun of
    the command does: a warm prefix cache evaluates the prompts in other chunks, and the kernels for other
    batch shapes move the logits in their last bits, enough to flip a sampled token (seen on AVX2 and
    AVX-512 builds when the module's earlier tests had filled the cache)."""
    config = VerifyConfig(n=1, **FAST)
    runs = []
    for _ in range(2):
        with demo_engine(demo_gguf) as llm:
            runs.append(verify([RECORD], model=llm, config=config)[0])
    first, second = runs
    assert [p.text for s in first.steps for p in s.paths] == [p.text for s in second.steps for p in s.paths]
    assert first.step_rewards == pytest.approx(second.step_rewards, abs=1e-4)


def test_stop_at_first_error_skips_later_steps(engine):
    # raw rewards lie strictly inside (0, 1), so at threshold 1 every step is "wrong" (the paper's reward
    # can be exactly 1: a No outside the sampling nucleus)
    config = VerifyConfig(n=1, threshold=1.0, stop_at_first_error=True, reward="raw", **FAST)
    result = verify([RECORD], model=engine, config=config)[0]
    assert result.first_error == 0 and result.stopped_early
    assert result.step_status == ["scored", "skipped"] and result.step_rewards[1] is None


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "genprm.cli.main", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600,
    )


def test_cli_verify_on_the_example(tmp_path):
    out = tmp_path / "v.jsonl"
    done = _cli("verify", "examples/one.json", "--n", "1", "--max-step-tokens", "64", "--out", str(out))
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["id"] == "example-0" and len(record["step_rewards"]) == 4
    assert "first error" in done.stderr and "verifying" in done.stderr


def test_cli_bad_input_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "p", "steps": ["s"]}\n{"problem": "p", "steps": []}\n')
    done = _cli("verify", str(bad), "--n", "1", "--max-step-tokens", "32", "--out", str(tmp_path / "o.jsonl"))
    assert done.returncode == 2
    assert "record 1" in done.stderr and "field 'steps'" in done.stderr and "Traceback" not in done.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1  # the good record was kept


def test_cli_unknown_model_is_one_clear_line(tmp_path):
    done = _cli("verify", "examples/one.json", "--model", str(tmp_path / "missing.gguf"))
    assert done.returncode == 2 and "missing.gguf" in done.stderr and "Traceback" not in done.stderr
