"""What every engine must do, written once and run against each backend.

A test module imports these functions (``from .engine_suite import *``) and provides two fixtures:
``engine`` (the engine under test) and ``reference`` (an engine of the same model to agree with, or
``None`` to skip the cross-engine checks). See ``test_engine_suite.py``.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import pytest

from genprm.engines.base import ALL_TOKENS, GenerationRequest, LogprobRequest, SamplingParams
from genprm.protocol import prompts as P
from genprm.protocol.chat import AssistantHeader, ChatTemplate, build_messages
from genprm.protocol.verdict import paper_logprobs_needed, v0_nucleus, verdict_probe
from genprm.verifier import SolutionVerifier, VerifyConfig

__all__ = [
    "test_batch_outputs_come_back_in_input_order",
    "test_stop_string_is_kept_and_reported",
    "test_no_stop_hit_ends_by_eos_or_length",
    "test_max_tokens_ends_by_length",
    "test_same_seed_same_text",
    "test_token_prompt_and_text_prompt_agree",
    "test_tokenize_round_trips_special_tokens",
    "test_tokenize_agrees_with_reference",
    "test_greedy_generation_agrees_with_reference",
    "test_verdict_logprobs_are_log_probabilities",
    "test_verdict_logprobs_agree_with_reference",
    "test_solution_verifier_runs_to_readable_rewards",
    "test_paper_reads_agree_with_the_pure_function_on_the_whole_distribution",
    "test_paper_mode_verification_is_exact",
    "test_sample_returns_n_well_formed_samples",
]

PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"
STEPS = ["Tom starts with 3 apples.", "He buys 4 more, so he has 3 + 4 = 7 apples."]


def chat(user: str, system: str = "You are a helpful assistant.") -> str:
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def genprm_verdict_prompt(engine) -> str:
    """A GenPRM prompt, rendered with the engine's template, that ends at the verdict position."""
    template = ChatTemplate(engine.chat_template, engine.special_tokens)
    messages = build_messages(P.SYSTEM_PROMPT, [P.user_turn(PROBLEM, STEPS[0], 0)], [])
    prompt = template.prompt_for(messages, AssistantHeader.TEMPLATE)
    return prompt + P.analyze_prefix(1) + "The step restates the problem correctly." + P.ANALYZE_END + P.OUTPUT_PREFIX


def greedy(max_tokens: int, stop: tuple[str, ...] = (), seed: int = 0) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, top_k=0, stop=stop, seed=seed)


def test_batch_outputs_come_back_in_input_order(engine):
    prompts = [
        chat("Name three colors."),
        chat("Write a Python function that adds two numbers."),
        chat("What is the capital of France?"),
    ]
    params = greedy(10)
    batch = engine.generate([GenerationRequest(p, params) for p in prompts])
    alone = [engine.generate([GenerationRequest(p, params)])[0] for p in prompts]
    assert len({g.text for g in batch}) == 3, "the prompts should give different continuations"
    assert [g.prompt_tokens for g in batch] == [len(engine.tokenize(p)) for p in prompts]
    # Each batched continuation is closest to its own prompt's single run. Not equality: an engine that
    # runs a batch as one forward pass (vLLM) is not batch-invariant, and a near tie can break the other
    # way (Qwen2.5-0.5B on vLLM-CPU, greedy: "...function that adds two" batched, "...function to add
    # two" alone). Engines that run one request at a time give equal texts, which this accepts.
    for i, mine in enumerate(batch):
        shared = [len(os.path.commonprefix([mine.text, single.text])) for single in alone]
        assert shared[i] > max(s for j, s in enumerate(shared) if j != i), ([g.text for g in batch], [g.text for g in alone])


def test_stop_string_is_kept_and_reported(engine):
    prompt = chat("Describe the sea in two sentences.")
    free = engine.generate([GenerationRequest(prompt, greedy(24))])[0]
    assert len(free.text) >= 12, free.text
    at = len(free.text) // 2
    stop = free.text[at: at + 4]  # a stop string the greedy continuation is known to reach
    cut = free.text.index(stop) + len(stop)
    out = engine.generate([GenerationRequest(prompt, greedy(24, stop=("never-there-1", stop, "never-there-2")))])[0]
    assert out.finish_reason == "stop"
    assert out.stop_string == stop
    assert out.text == free.text[:cut] and out.text.endswith(stop)
    assert 0 < out.completion_tokens <= free.completion_tokens


def test_no_stop_hit_ends_by_eos_or_length(engine):
    out = engine.generate([GenerationRequest(chat("Is 2+2=4? Answer in one short sentence."), greedy(200, ("@@@",)))])[0]
    assert out.stop_string is None and "@@@" not in out.text
    assert out.finish_reason in ("eos", "length")
    if out.finish_reason == "eos":
        assert out.completion_tokens < 200


def test_max_tokens_ends_by_length(engine):
    params = SamplingParams(max_tokens=7, temperature=0.7, seed=5)
    out = engine.generate([GenerationRequest(chat("Write a long story about a dragon and a knight."), params)])[0]
    assert out.finish_reason == "length" and out.stop_string is None
    assert out.completion_tokens == 7


def test_same_seed_same_text(engine):
    prompt = chat("Tell me a fact about the moon.")
    for params in (greedy(16, seed=11), SamplingParams(max_tokens=16, temperature=0.8, seed=11)):
        first, second = (engine.generate([GenerationRequest(prompt, params)])[0] for _ in range(2))
        assert first.text == second.text and first.finish_reason == second.finish_reason


def test_token_prompt_and_text_prompt_agree(engine):
    prompt = chat("Name a prime number.")
    by_text = engine.generate([GenerationRequest(prompt, greedy(8))])[0]
    by_tokens = engine.generate([GenerationRequest(engine.tokenize(prompt), greedy(8))])[0]
    assert by_tokens.text == by_text.text and by_tokens.prompt_tokens == by_text.prompt_tokens


def test_tokenize_round_trips_special_tokens(engine):
    text = chat("Compute 3 + 4 = 7, then x² ≤ 10 — done.")
    ids = engine.tokenize(text)
    assert engine.detokenize(ids) == text
    [start] = [t for t in engine.tokenize("<|im_start|>") if t in ids]  # parsed as one special token
    assert ids.count(start) == 3


def test_tokenize_agrees_with_reference(engine, reference):
    if reference is None:
        pytest.skip("no reference engine for this backend")
    for text in (chat("Compute 3 + 4 = 7, then x² ≤ 10 — done."), genprm_verdict_prompt(reference), "", " leading"):
        assert engine.tokenize(text) == reference.tokenize(text)


def test_greedy_generation_agrees_with_reference(engine, reference):
    if reference is None:
        pytest.skip("no reference engine for this backend")
    requests = [
        GenerationRequest(chat("Is 2+2=4? Answer in one short sentence."), greedy(64, (".",))),
        GenerationRequest(chat("List three fruits."), greedy(20, ("\n\n", "3."))),
    ]
    for mine, theirs in zip(engine.generate(requests), reference.generate(requests)):
        assert (mine.text, mine.finish_reason, mine.stop_string) == (theirs.text, theirs.finish_reason, theirs.stop_string)
        assert mine.completion_tokens == theirs.completion_tokens


def _verdict_request(engine) -> LogprobRequest:
    probe = verdict_probe(engine.tokenize, genprm_verdict_prompt(engine))
    return LogprobRequest(probe.prompt, (probe.yes_token, probe.no_token))


def test_verdict_logprobs_are_log_probabilities(engine):
    request = _verdict_request(engine)
    other = LogprobRequest(engine.tokenize(chat("Is 7 prime?")), request.candidates)
    both = engine.next_token_logprobs([request, other])
    alone = [engine.next_token_logprobs([r])[0] for r in (request, other)]
    for batched, single in zip(both, alone):
        assert set(batched.logprobs) == set(request.candidates)
        values = [batched.logprobs[c] for c in request.candidates]
        assert all(v is not None and v <= 0 for v in values), values
        assert sum(math.exp(v) for v in values) <= 1 + 1e-6
        for c in request.candidates:
            assert batched.logprobs[c] == pytest.approx(single.logprobs[c], abs=1e-4)
    assert both[0].prompt_tokens == len(request.prompt)


def test_verdict_logprobs_agree_with_reference(engine, reference):
    if reference is None:
        pytest.skip("no reference engine for this backend")
    request = _verdict_request(reference)
    mine = engine.next_token_logprobs([request])[0]
    theirs = reference.next_token_logprobs([request])[0]
    for token in request.candidates:
        assert mine.logprobs[token] == pytest.approx(theirs.logprobs[token], abs=1e-2)


def test_solution_verifier_runs_to_readable_rewards(engine):
    result = SolutionVerifier(engine, VerifyConfig(n=2, max_step_tokens=64)).verify(PROBLEM, STEPS)
    assert len(result.steps) == 2
    for step in result.steps:
        assert len(step.paths) == 2
        for path in step.paths:
            assert path.readable, path.unreadable_reason
            assert 0.0 <= path.reward <= 1.0
            assert path.completion_tokens > 0
        assert 0.0 <= step.reward <= 1.0


# -- the paper's reward: vLLM V0's processed distribution, rebuilt from each engine's raw top logprobs --

PAPER_SETTINGS = [  # (temperature, top_k, top_p): the paper's, a narrow nucleus, a wide one, untruncated, greedy
    (0.6, 20, 0.95), (1.0, 5, 0.5), (0.3, 40, 0.99), (1.0, 0, 1.0), (0.0, 20, 0.95),
]


def _whole_distribution(engine, reference, prompt: list[int]):
    """The raw next-token log-probabilities of every token, from the engine or else its reference."""
    # The same engine's values agree to float32 rounding (its log-softmax sums to 1 within ~2e-5).
    for source, tolerance in ((engine, 1e-4), (reference, 1e-2)):
        if source is None:
            continue
        full = source.next_token_logprobs([LogprobRequest(prompt, (), top=ALL_TOKENS)])[0]
        if full.whole_vocabulary:
            assert sum(math.exp(v) for v in full.top.values()) == pytest.approx(1.0, abs=1e-3)
            return full.top, tolerance
    pytest.skip("neither this engine nor a reference reports the whole vocabulary")


def test_paper_reads_agree_with_the_pure_function_on_the_whole_distribution(engine, reference):
    probe = verdict_probe(engine.tokenize, genprm_verdict_prompt(engine))
    full, tolerance = _whole_distribution(engine, reference, probe.prompt)
    ranked = sorted(full, key=lambda t: -full[t])
    pairs = [(probe.yes_token, probe.no_token), (ranked[0], ranked[1]), (ranked[1], ranked[4])]
    nontrivial = 0
    for temperature, top_k, top_p in PAPER_SETTINGS:
        needed = paper_logprobs_needed(temperature, top_k, top_p)
        settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        for a, b in pairs:
            asked = engine.next_token_logprobs([LogprobRequest(probe.prompt, (a, b), top=needed or ALL_TOKENS)])[0]
            assert asked.approximate is None
            mine = v0_nucleus({**asked.logprobs, **asked.top}, a, b, whole_vocabulary=asked.whole_vocabulary, **settings)
            truth = v0_nucleus(full, a, b, whole_vocabulary=True, **settings)
            if top_k > 0 and temperature > 0:  # the top-k raw log-probabilities decide it: always exact
                assert mine.exact, (settings, mine.reason)
            if mine.exact:
                assert mine.p_yes == pytest.approx(truth.p_yes, abs=tolerance), settings
                assert mine.p_no == pytest.approx(truth.p_no, abs=tolerance), settings
                assert mine.floor == pytest.approx(truth.floor, abs=tolerance), settings
                nontrivial += 0 < truth.p_yes < 1
    assert nontrivial >= 3, "the readings compared should include probabilities strictly inside (0, 1)"


def test_paper_mode_verification_is_exact(engine):
    config = VerifyConfig(n=1, max_step_tokens=48)
    assert config.reward == "paper"
    result = SolutionVerifier(engine, config).verify(PROBLEM, STEPS[:1])
    path = result.steps[0].paths[0]
    assert path.readable and path.reward_exact, path.unreadable_reason
    assert 0.0 <= path.reward <= 1.0 and 0.0 <= path.p_yes <= 1.0 and 0.0 <= path.p_no <= 1.0


# -- n samples of one prompt (Monte-Carlo rollouts) ---------------------------------------------------------


def test_sample_returns_n_well_formed_samples(engine):
    # A prompt no other test uses, long enough to span a few KV blocks, so its computation is visible.
    facts = " ".join(f"Fact {i}: a sample of {engine.name} number {i} is fresh." for i in range(40))
    prompt = chat(facts + " Now invent a name for a new fruit and describe its taste.")
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=1.0, top_k=0, seed=21, n=3)
    requests = [GenerationRequest(prompt, params), GenerationRequest(chat("Name a colour."), replace(params, n=2))]
    first = engine.sample(requests)
    assert [len(group) for group in first] == [3, 2]
    n_prompt = len(engine.tokenize(prompt))
    for group in first:
        for sample in group:
            assert isinstance(sample.text, str) and sample.finish_reason in ("stop", "length", "eos")
            assert 0 < sample.completion_tokens <= 12 and sample.stop_string is None
    assert all(s.prompt_tokens == n_prompt for s in first[0])
    assert len({s.text for s in first[0]}) > 1, "samples at temperature 1 should differ"
    if engine.shares_sample_prompt:
        computed = sum(s.prompt_tokens - s.cached_prompt_tokens for s in first[0])
        assert computed <= n_prompt + 3 * 128, "the prompt should be computed once for its samples (KV blocks aside)"
