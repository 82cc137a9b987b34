"""Best-of-N figures on hand-computed fixtures: aggregation, selection, budgets and baselines."""

from __future__ import annotations

import math

import pytest

from genprm.evaluation.bon_metrics import (
    Outcome,
    aggregate,
    any_correct,
    argmax,
    argmax_rule,
    budget_accuracy,
    chunks,
    method_table,
    pass_at_1,
    vote,
    vote_rule,
)

# --- aggregation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "expected"), [("last", 0.8), ("min", 0.5), ("mean", (0.9 + 0.5 + 0.8) / 3), ("product", 0.9 * 0.5 * 0.8)]
)
def test_aggregations_leave_unreadable_steps_out(how, expected):
    assert aggregate([0.9, None, 0.5, 0.8], how) == pytest.approx(expected)


def test_last_is_the_last_readable_step():
    assert aggregate([0.3, 0.7, None], "last") == 0.7


@pytest.mark.parametrize("how", ["last", "min", "mean", "product"])
def test_all_rewards_unreadable_or_no_steps_gives_no_score(how):
    assert aggregate([None, None], how) is None
    assert aggregate([], how) is None


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate([0.5], "max")


# --- selection -------------------------------------------------------------------------------


def test_argmax_ties_go_to_the_first_and_no_score_loses():
    assert argmax([0.2, 0.9, 0.9]) == 1
    assert argmax([None, 0.1, None]) == 1
    assert argmax([None, None]) == 0  # nothing scored: the first response


def test_weighted_vote_sums_scores_per_answer():
    # "a": 0.9 + 0.1 = 1.0, "b": 0.4 + 0.4 = 0.8
    assert vote(["a", "b", "b", "a"], [0.9, 0.4, 0.4, 0.1]) == 0
    # "b" now wins: 0.4 + 0.7 = 1.1 > 1.0; the pick is b's first response
    assert vote(["a", "b", "b", "a"], [0.9, 0.4, 0.7, 0.1]) == 1


def test_vote_ties_go_to_the_answer_seen_first():
    assert vote(["b", "a", "a", "b"], [1, 1, 1, 1]) == 0
    assert vote(["x", "y"], [0.5, 0.5]) == 0


def test_vote_skips_responses_without_answer_and_counts_missing_scores_as_zero():
    assert vote([None, "a", "b"], [5.0, 0.1, None]) == 1
    assert vote(["a", "b"], [None, None]) == 0  # all unreadable: a tie at 0, the first answer
    assert vote([None, None], [1.0, 1.0]) is None


# --- budgets ---------------------------------------------------------------------------------


def test_chunks_are_consecutive_and_a_partial_tail_is_dropped():
    assert chunks(8, 1) == [range(i, i + 1) for i in range(8)]
    assert chunks(8, 3) == [range(0, 3), range(3, 6)]  # responses 6 and 7 form no chunk
    assert chunks(8, 5) == [range(0, 5)]
    assert chunks(8, 8) == [range(0, 8)]
    assert chunks(8, 9) == []
    with pytest.raises(ValueError):
        chunks(8, 0)


# Four responses: answers, correctness and min-scores chosen so each method differs per budget.
MIXED = Outcome(
    answers=["1", "2", "2", "1"],
    correct=[True, False, False, True],
    scores={how: [0.2, 0.9, 0.5, 0.6] for how in ("last", "min", "mean", "product")},
)
SOLVED = Outcome(answers=["7"] * 4, correct=[True] * 4, scores={h: [0.5] * 4 for h in MIXED.scores})

# Hand-computed per budget 1..4 for MIXED:
#  b=1: every method sees one response -> 2 of 4 correct (Pass: same).
#  b=2: chunks {0,1} {2,3}. argmax: r1 (F), r3 (T). weighted: "2" 0.9 > "1" 0.2 (F); "1" 0.6 > "2" 0.5 (T).
#       Maj: 1-1 ties -> first answer: "1" (T), "2" (F). Pass: both chunks hold a correct response.
#  b=3: one chunk {0,1,2}, r3 dropped. argmax r1 (F); weighted "2" 1.4 > "1" 0.2 (F); Maj "2" 2-1 (F); Pass T.
#  b=4: argmax r1 (F); weighted "2" 1.4 > "1" 0.8 (F); Maj 2-2 tie -> "1" seen first (T); Pass T.
EXPECTED_MIXED = {
    "argmax": {1: 0.5, 2: 0.5, 3: 0.0, 4: 0.0},
    "weighted": {1: 0.5, 2: 0.5, 3: 0.0, 4: 0.0},
    "Maj": {1: 0.5, 2: 0.5, 3: 0.0, 4: 1.0},
    "Pass": {1: 0.5, 2: 1.0, 3: 1.0, 4: 1.0},
}
RULES = {"argmax": argmax_rule("min"), "weighted": vote_rule("min"), "Maj": vote_rule(None), "Pass": any_correct}


@pytest.mark.parametrize("method", list(EXPECTED_MIXED))
@pytest.mark.parametrize("budget", [1, 2, 3, 4])
def test_budget_accuracy_averages_the_chunks(method, budget):
    assert budget_accuracy(MIXED, budget, RULES[method]) == EXPECTED_MIXED[method][budget]


def test_a_budget_above_n_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        budget_accuracy(MIXED, 5, any_correct)


def test_budget_not_dividing_n_ignores_the_tail_even_when_it_would_win():
    # b=3 of 4: only the correct, best-scored r3 could fix the pick, but it forms no chunk.
    outcome = Outcome(["1", "2", "2", "1"], [False, False, False, True], {"min": [0.1, 0.2, 0.3, 0.99]})
    assert budget_accuracy(outcome, 3, argmax_rule("min")) == 0.0
    assert budget_accuracy(outcome, 4, argmax_rule("min")) == 1.0


def test_responses_without_answer_or_score():
    # r0 was empty: no steps (no score), no answer, wrong. r1 answers "5" correctly.
    outcome = Outcome([None, "5"], [False, True], {"min": [None, 0.3]})
    assert budget_accuracy(outcome, 2, argmax_rule("min")) == 1.0
    assert budget_accuracy(outcome, 2, vote_rule("min")) == 1.0
    assert budget_accuracy(outcome, 2, vote_rule(None)) == 1.0
    nothing = Outcome([None, None], [False, False], {"min": [None, None]})
    for rule in (argmax_rule("min"), vote_rule("min"), vote_rule(None), any_correct):
        assert budget_accuracy(nothing, 2, rule) == 0.0


def test_all_rewards_unreadable_falls_back_to_response_order():
    outcome = Outcome(["3", "4", "4"], [True, False, False], {"min": [None, None, None]})
    assert budget_accuracy(outcome, 3, argmax_rule("min")) == 1.0  # the first response
    assert budget_accuracy(outcome, 3, vote_rule("min")) == 1.0  # every answer weighs 0: the first answer
    assert budget_accuracy(outcome, 3, vote_rule(None)) == 0.0  # the plain vote still counts heads


# --- the table -------------------------------------------------------------------------------


def test_method_table_averages_problems_and_names_every_method():
    table = method_table([MIXED, SOLVED], 4)
    assert list(table) == [
        "last/argmax", "last/weighted", "min/argmax", "min/weighted", "mean/argmax", "mean/weighted",
        "product/argmax", "product/weighted", "Pass@1", "Maj@N", "Pass@N",
    ]
    for b in range(1, 5):
        assert table["min/argmax"][b] == (EXPECTED_MIXED["argmax"][b] + 1) / 2
        assert table["min/weighted"][b] == (EXPECTED_MIXED["weighted"][b] + 1) / 2
        assert table["Maj@N"][b] == (EXPECTED_MIXED["Maj"][b] + 1) / 2
        assert table["Pass@N"][b] == (EXPECTED_MIXED["Pass"][b] + 1) / 2
        assert table["Pass@1"][b] == 0.75  # budget-independent: mean correctness (0.5 + 1) / 2


def test_budget_one_is_pass_at_1_for_every_selection():
    table = method_table([MIXED, SOLVED], 4)
    assert {per[1] for per in table.values()} == {table["Pass@1"][1]}


def test_pass_at_1_and_table_edge_cases():
    assert pass_at_1([]) is None
    assert math.isclose(pass_at_1([MIXED]) or 0, 0.5)
    assert method_table([], 3)["Pass@N"] == {1: None, 2: None, 3: None}
    with pytest.raises(ValueError, match="every problem needs 3 responses"):
        method_table([MIXED], 3)
