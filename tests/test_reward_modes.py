"""The paper's reward (vLLM V0's processed distribution) on hand-built distributions, and both modes
through the verifier on the scripted engine.

Each distribution is small enough to work out by hand; the expected values in the comments are the
arithmetic of vLLM 0.7.1's sampler (temperature, then top-k and top-p masking, then softmax).
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from genprm.engines.base import ALL_TOKENS, LogprobRequest, most_likely
from genprm.engines.scripted import ScriptedEngine
from genprm.protocol.verdict import (
    NEUTRAL_REWARD,
    RELEASED_LOGPROBS,
    Nucleus,
    VerdictProbe,
    choose_paper_verdict,
    paper_logprobs_needed,
    paper_reading,
    read_paper_verdict,
    read_verdict,
    v0_nucleus,
)
from genprm.verifier import SolutionVerifier, VerifyConfig

YES, NO = 1, 2
PAPER = {"temperature": 0.6, "top_k": 20, "top_p": 0.95}


def logs(probs: dict[int, float]) -> dict[int, float]:
    return {t: math.log(p) for t, p in probs.items()}


def nucleus(probs: dict[int, float], **settings) -> Nucleus:
    return v0_nucleus(logs(probs), YES, NO, whole_vocabulary=True, **{**PAPER, **settings})


# -- the nucleus decides: outside it a verdict token counts 0 --------------------------------------


def test_no_outside_the_nucleus_makes_the_reward_exactly_one():
    # T=0.6: weights 0.97^(5/3), 0.02^(5/3), 0.01^(5/3) -> 0.9980, 0.0015, 0.0005; top-p 0.95 keeps Yes alone.
    found = nucleus({YES: 0.97, NO: 0.02, 3: 0.01})
    assert (found.p_yes, found.p_no) == (1.0, 0.0) and found.exact
    assert found.reward_at("Yes") == 1.0 and found.p_yes_given_verdict == 1.0
    # The raw reading of the same distribution is far from 1.
    assert read_verdict(math.log(0.97), math.log(0.02)).reward == pytest.approx(0.97 / 0.99)


def test_yes_outside_the_nucleus_makes_the_reward_exactly_zero():
    found = nucleus({YES: 0.02, NO: 0.97, 3: 0.01})
    assert (found.p_yes, found.p_no) == (0.0, 1.0)
    assert found.reward_at("No") == 0.0


def test_both_inside_the_nucleus_is_the_tempered_ratio():
    # T=0.6 keeps both: reward = sigmoid(ln(0.7/0.3) / 0.6) = 0.7^(5/3) / (0.7^(5/3) + 0.3^(5/3)).
    found = nucleus({YES: 0.7, NO: 0.3})
    expected = 0.7 ** (5 / 3) / (0.7 ** (5 / 3) + 0.3 ** (5 / 3))
    assert found.reward_at("Yes") == pytest.approx(expected) == found.reward_at("No")


# -- top-k ------------------------------------------------------------------------------------------


def test_top_k_masks_below_the_kth_logit_and_keeps_ties_with_it():
    probs = {3: 0.4, YES: 0.35, NO: 0.25}
    assert nucleus(probs, temperature=1.0, top_k=2, top_p=1.0).reward_at("Yes") == 1.0  # No is third
    both = nucleus(probs, temperature=1.0, top_k=3, top_p=1.0)
    assert both.reward_at("Yes") == pytest.approx(0.35 / 0.6)
    tied = nucleus({3: 0.4, YES: 0.3, NO: 0.3}, temperature=1.0, top_k=2, top_p=1.0)
    assert (tied.p_yes, tied.p_no) == (pytest.approx(0.3), pytest.approx(0.3))  # vLLM masks only logits < k-th
    assert tied.reward_at("Yes") == pytest.approx(0.5)


def test_only_the_top_k_raw_logprobs_matter():
    # A long tail outside the top-k changes nothing: top-k renormalises over the k kept tokens.
    head = {YES: 0.5, NO: 0.3, 3: 0.1}
    tail = {10 + i: 0.1 / 50 for i in range(50)}
    with_tail = v0_nucleus(logs({**head, **tail}), YES, NO, temperature=0.6, top_k=3, top_p=0.95, whole_vocabulary=True)
    top_only = v0_nucleus(logs(head), YES, NO, temperature=0.6, top_k=3, top_p=0.95)  # the top 3 alone, not whole
    assert top_only.exact
    assert (top_only.p_yes, top_only.p_no) == (pytest.approx(with_tail.p_yes), pytest.approx(with_tail.p_no))


# -- top-p ------------------------------------------------------------------------------------------


def test_top_p_boundary_and_its_ties_follow_the_ascending_stable_sort():
    # T=1, top-p 0.7: mask while the ascending cumulative probability is <= 0.3. Three tokens tie at 0.2:
    # the first of them in ascending (token-id) order goes (cumulative 0.2), the next stays (0.4 > 0.3).
    masked_no = nucleus({YES: 0.4, NO: 0.2, 7: 0.2, 8: 0.2}, temperature=1.0, top_k=0, top_p=0.7)
    assert masked_no.p_no == 0.0 and masked_no.reward_at("Yes") == 1.0
    kept_no = nucleus({YES: 0.4, 0: 0.2, NO: 0.2, 8: 0.2}, temperature=1.0, top_k=0, top_p=0.7)
    assert kept_no.p_yes == pytest.approx(0.4 / 0.8) and kept_no.reward_at("Yes") == pytest.approx(2 / 3)


def test_a_cumulative_probability_equal_to_one_minus_top_p_is_masked():
    # Exact binary fractions at temperature 1: No's ascending cumulative probability is exactly 0.25 = 1 - 0.75,
    # and vLLM masks where it is <= 1 - top_p.
    found = v0_nucleus(logs({YES: 0.5, NO: 0.25, 3: 0.25}), YES, NO, temperature=1.0, top_k=0, top_p=0.75)
    assert found.p_no == 0.0 and found.p_yes == pytest.approx(0.5 / 0.75) and found.exact


def test_only_the_most_likely_token_survives_a_tiny_top_p():
    found = nucleus({YES: 0.5, NO: 0.3, 3: 0.2}, temperature=1.0, top_k=0, top_p=0.01)
    assert (found.p_yes, found.p_no) == (1.0, 0.0)


def test_temperature_decides_who_is_in_the_nucleus():
    probs = {YES: 0.6, NO: 0.3, 3: 0.1}
    # top-p 0.85 masks while the cumulative probability is <= 0.15.
    assert nucleus(probs, temperature=1.0, top_p=0.85).reward_at("Yes") == pytest.approx(0.6 / 0.9)  # 3 goes
    assert nucleus(probs, temperature=0.5, top_p=0.85).reward_at("Yes") == pytest.approx(0.36 / 0.45)  # weights p^2
    assert nucleus(probs, temperature=0.3, top_p=0.85).reward_at("Yes") == 1.0  # No's share drops to 0.09


def test_greedy_reads_the_raw_distribution_untruncated():
    # vLLM turns temperature < 1e-5 into temperature 1 with top-k and top-p off.
    found = v0_nucleus(logs({YES: 0.6, NO: 0.1}), YES, NO, temperature=0.0, top_k=1, top_p=0.1)
    assert (found.p_yes, found.p_no) == (pytest.approx(0.6), pytest.approx(0.1)) and found.exact
    assert choose_paper_verdict(found, 0.0, random.Random(0)) == "Yes"


# -- what the released code does at the edges ------------------------------------------------------


def test_both_masked_is_the_released_codes_neutral_half():
    found = nucleus({3: 0.98, YES: 0.01, NO: 0.01})
    assert (found.p_yes, found.p_no) == (0.0, 0.0)
    reading = paper_reading(found, "No")
    assert reading.readable and reading.reward == NEUTRAL_REWARD and "both outside" in reading.note
    assert reading.reason is None
    assert found.p_yes_given_verdict == NEUTRAL_REWARD


def test_a_verdict_token_missing_from_the_returned_twenty_takes_the_smallest_returned_value():
    # A flat head: top-k 20 keeps 20 tokens of 0.04 each (Yes among them), top-p 0.99 keeps all of them,
    # No is outside the top 20. The released code asked for 20 logprobs and, missing No, took the smallest
    # returned probability (each 0.05 after renormalising), so its reward is 0.5, not the processed 1.0.
    head = {YES: 0.04, **{10 + i: 0.04 for i in range(19)}}
    tail = {NO: 0.005, **{100 + i: 0.005 for i in range(39)}}
    found = nucleus({**head, **tail}, temperature=1.0, top_k=20, top_p=0.99)
    assert found.p_no == 0.0 and found.floor == pytest.approx(0.05) and not found.no_returned
    assert found.p_yes_given_verdict == 1.0
    assert found.reward_at("Yes") == pytest.approx(0.5)
    assert RELEASED_LOGPROBS == 20


# -- exactness --------------------------------------------------------------------------------------


def test_readings_that_lack_part_of_the_distribution_say_so():
    short = v0_nucleus(logs({YES: 0.5, NO: 0.3}), YES, NO, **PAPER)  # 2 tokens, top-k 20, not the whole vocabulary
    assert not short.exact and "top-k 20" in short.reason
    no_top_k = v0_nucleus(logs({YES: 0.5, NO: 0.3}), YES, NO, temperature=0.6, top_k=0, top_p=0.95)
    assert not no_top_k.exact and "whole vocabulary" in no_top_k.reason
    # The k-th value ties the last listed one and survives top-p: more tied tokens may be hidden.
    tie = v0_nucleus({YES: math.log(0.5), NO: math.log(0.25), 3: math.log(0.25)}, YES, NO,
                     temperature=1.0, top_k=3, top_p=1.0)
    assert not tie.exact and "tie" in tie.reason
    # One token below the tie shows where it ends: exact.
    seen = v0_nucleus(logs({YES: 0.5, NO: 0.2, 3: 0.2, 4: 0.1}), YES, NO, temperature=1.0, top_k=3, top_p=1.0)
    assert seen.exact


def test_the_logprobs_needed_cover_top_k_or_the_whole_vocabulary():
    assert paper_logprobs_needed(0.6, 20, 0.95) == 20
    assert paper_logprobs_needed(0.6, 50, 0.95) == 50
    assert paper_logprobs_needed(0.6, 5, 0.95) == RELEASED_LOGPROBS  # the released fallback reads 20
    assert paper_logprobs_needed(0.0, 0, 1.0) == RELEASED_LOGPROBS
    assert paper_logprobs_needed(0.6, 0, 0.95) is None


def test_most_likely_continues_through_a_tie_and_one_past_it():
    values = {1: -1.0, 2: -2.0, 3: -2.0, 4: -2.0, 5: -3.0, 6: -4.0}
    assert set(most_likely(values, 2)) == {1, 2, 3, 4, 5}
    assert set(most_likely(values, 1)) == {1, 2}
    assert most_likely(values, ALL_TOKENS) == values and most_likely(values, 0) == {}


def test_a_missing_candidate_without_a_distribution_is_unreadable():
    probe = VerdictProbe([0], YES, NO)
    reading, verdict = read_paper_verdict({YES: None, NO: -1.0}, {}, probe, temperature=0.6, top_k=20, top_p=0.95,
                                          whole_vocabulary=False, rng=random.Random(0))
    assert not reading.readable and reading.reward is None and verdict == "No"
    flagged, _ = read_paper_verdict({YES: -0.1, NO: -3.0}, logs({YES: 0.9, NO: 0.05}), probe, temperature=0.6,
                                    top_k=20, top_p=0.95, whole_vocabulary=True, rng=random.Random(0),
                                    approximate="the server reports post-sampling values")
    assert not flagged.exact and "post-sampling" in flagged.note


def test_the_paper_verdict_is_sampled_from_the_processed_odds():
    found = nucleus({YES: 0.7, NO: 0.3})
    rng = random.Random(0)
    share = sum(choose_paper_verdict(found, 0.6, rng) == "Yes" for _ in range(4000)) / 4000
    assert share == pytest.approx(found.p_yes_given_verdict, abs=0.03)
    certain = nucleus({YES: 0.97, NO: 0.02, 3: 0.01})
    assert {choose_paper_verdict(certain, 0.6, random.Random(s)) for s in range(50)} == {"Yes"}


# -- both modes through the verifier -------------------------------------------------------------------


def _engine(distribution):
    # The scripted tokenizer is one token per character: the verdict candidates are "Y" and "N".
    return ScriptedEngine(respond=lambda p, r: "fine\n</analyze>\n", distribution=lambda prompt: distribution)


def test_the_verifier_reads_the_paper_reward_by_default_and_the_raw_one_when_asked():
    distribution = logs({ord("Y"): 0.97, ord("N"): 0.02, ord("x"): 0.01})
    engine = _engine(distribution)
    paper = SolutionVerifier(engine, VerifyConfig(mode="analyze")).verify("p", ["a"])
    path = paper.steps[0].paths[0]
    assert VerifyConfig().reward == "paper"
    assert path.reward == 1.0 and (path.p_yes, path.p_no) == (1.0, 0.0) and path.reward_exact
    asked: LogprobRequest = engine.logprob_requests[-1]
    assert asked.top == 20 and asked.candidates == (ord("Y"), ord("N"))
    raw = SolutionVerifier(engine, VerifyConfig(mode="analyze", reward="raw")).verify("p", ["a"])
    assert raw.steps[0].paths[0].reward == pytest.approx(0.97 / 0.99)
    assert engine.logprob_requests[-1].top == 0


def test_an_approximate_reading_is_marked_on_the_path():
    class CappedEngine(ScriptedEngine):
        """Reports at most two top log-probabilities, as a server with a small logprobs cap would."""

        def next_token_logprobs(self, requests):
            return [replace(out, top=most_likely(out.top, 2), whole_vocabulary=False)
                    for out in super().next_token_logprobs(requests)]

    distribution = logs({ord("Y"): 0.5, ord("N"): 0.3, ord("x"): 0.15, ord("z"): 0.05})
    config = VerifyConfig(mode="analyze", top_k=0)  # temperature 0.6 without top-k needs the whole vocabulary
    whole = SolutionVerifier(_engine(distribution), config).verify("p", ["a"]).steps[0].paths[0]
    assert whole.reward_exact and whole.reward_note is None and whole.unreadable_reason is None
    capped_engine = CappedEngine(respond=lambda p, r: "fine\n</analyze>\n", distribution=lambda prompt: distribution)
    capped = SolutionVerifier(capped_engine, config).verify("p", ["a"]).steps[0].paths[0]
    assert capped_engine.logprob_requests[-1].top == ALL_TOKENS
    assert capped.readable and not capped.reward_exact and "approximate" in capped.reward_note
    assert capped.unreadable_reason is None
