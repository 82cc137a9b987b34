"""The verdict position is found per tokenizer; Qwen2's split is the one GenPRM's checkpoints use."""

from __future__ import annotations

import math
import random

import pytest

from conftest import named_model_path
from genprm.protocol import prompts as P
from genprm.protocol.verdict import choose_verdict, read_verdict, verdict_probe


def test_probe_finds_first_differing_token_with_a_merging_tokenizer():
    # A toy tokenizer that merges "{Yes" and "{No" into single tokens.
    vocab = {"{Yes": 1, "{No": 2}

    def tokenize(text):
        out = []
        i = 0
        while i < len(text):
            for piece, tid in vocab.items():
                if text.startswith(piece, i):
                    out.append(tid)
                    i += len(piece)
                    break
            else:
                out.append(1000 + ord(text[i]))
                i += 1
        return out

    probe = verdict_probe(tokenize, "ab$\\boxed")
    assert (probe.yes_token, probe.no_token) == (1, 2)
    assert probe.prompt == tokenize("ab$\\boxed")


def test_read_verdict_is_p_yes_over_p_yes_plus_p_no():
    reading = read_verdict(math.log(0.3), math.log(0.1))
    assert reading.readable and reading.reward == pytest.approx(0.75)
    sharper = read_verdict(math.log(0.3), math.log(0.1), temperature=0.5)
    assert sharper.reward == pytest.approx(0.9)


def test_unreadable_verdicts_are_marked_never_half():
    missing = read_verdict(None, math.log(0.5))
    assert not missing.readable and missing.reward is None and "missing" in missing.reason
    no_mass = read_verdict(math.log(1e-9), math.log(1e-9), min_mass=1e-6)
    assert not no_mass.readable and no_mass.reward is None
    assert choose_verdict(missing, 0.6, random.Random(0)) == "No"


def test_greedy_verdict_is_the_argmax_and_sampling_follows_the_odds():
    reading = read_verdict(math.log(0.3), math.log(0.1))
    assert choose_verdict(reading, 0.0, random.Random(0)) == "Yes"
    rng = random.Random(0)
    share = sum(choose_verdict(reading, 1.0, rng) == "Yes" for _ in range(4000)) / 4000
    assert share == pytest.approx(0.75, abs=0.03)


def test_qwen2_tokenizer_splits_the_verdict_as_expected():
    llama_cpp = pytest.importorskip("llama_cpp")
    path = named_model_path("qwen2.5-coder-0.5b-instruct")
    if path is None:
        pytest.skip("Qwen2 GGUF not present (../shared/tools/fetch-model qwen2.5-coder-0.5b-instruct)")
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)

    def tokenize(text):
        return llm.tokenize(text.encode(), add_bos=False, special=True)

    def piece(token):
        return llm.detokenize([token]).decode()

    assert [piece(t) for t in tokenize("$\\boxed{Yes}$")] == ["$\\", "boxed", "{", "Yes", "}$"]
    # In the protocol's context the space before "$" joins the first token.
    pieces = [piece(t) for t in tokenize("**Judgement**: $\\boxed{Yes}$")]
    assert pieces[-5:] == [" $\\", "boxed", "{", "Yes", "}$"]
    probe = verdict_probe(tokenize, "<|im_start|>assistant\n" + P.OUTPUT_PREFIX)
    assert (piece(probe.yes_token), piece(probe.no_token)) == ("Yes", "No")
    assert piece(probe.prompt[-1]) == "{"
