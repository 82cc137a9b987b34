"""ProcessBench metrics pinned on hand-computed fixtures, edge cases included."""

from __future__ import annotations

import pytest

from genprm.evaluation.metrics import (
    average_f1,
    harmonic_mean,
    predicted_first_error,
    processbench_score,
    step_rewards_at,
)
from genprm.evaluation.processbench import ProcessBenchSample, compute_results
from genprm.io import validate_record


def test_f1_is_the_harmonic_mean_of_the_two_accuracies():
    # erroneous: labels 1, 3, 2 predicted 1, 2, -1 -> 1/3 right; correct: label -1 predicted -1 -> 1/1
    score = processbench_score([1, -1, 2, -1], [1, -1, 3, 2])
    assert (score.n_error, score.n_correct) == (3, 1)
    assert score.error_acc == pytest.approx(1 / 3)
    assert score.correct_acc == 1.0
    assert score.f1 == pytest.approx(0.5)


def test_an_empty_subset_has_no_figures_and_does_not_count_in_the_average():
    empty = processbench_score([], [])
    assert (empty.n, empty.error_acc, empty.correct_acc, empty.f1) == (0, None, None, None)
    full = processbench_score([0, -1], [0, -1])
    assert full.f1 == 1.0
    assert average_f1([empty, full]) == 1.0
    assert average_f1([empty]) is None


def test_a_subset_with_only_erroneous_samples_has_no_f1():
    only_errors = processbench_score([0, 1], [0, 2])
    assert only_errors.error_acc == 0.5
    assert only_errors.correct_acc is None and only_errors.f1 is None


def test_all_steps_predicted_correct_scores_zero_on_errors():
    matrix = [[0.9], [0.8], [0.7]]
    assert predicted_first_error(matrix, 1, 0.5) == -1
    score = processbench_score([-1, -1], [1, -1])
    assert (score.error_acc, score.correct_acc, score.f1) == (0.0, 1.0, 0.0)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_an_error_in_the_last_step_is_found():
    matrix = [[0.9], [0.8], [0.2]]
    assert predicted_first_error(matrix, 1, 0.5) == 2
    assert processbench_score([2], [2]).error_acc == 1.0


def test_unreadable_verdicts_are_never_the_first_error():
    matrix = [[None, None], [None, 0.2], [0.1, 0.1]]
    assert step_rewards_at(matrix, 1) == [None, None, 0.1]
    assert step_rewards_at(matrix, 2) == [None, 0.2, pytest.approx(0.1)]
    assert predicted_first_error(matrix, 1, 0.5) == 2
    assert predicted_first_error(matrix, 2, 0.5) == 1


def test_maj_k_averages_the_first_k_paths():
    matrix = [[0.9, 0.1, 0.2]]
    assert [predicted_first_error(matrix, k, 0.5) for k in (1, 2, 3)] == [-1, -1, 0]  # 0.9, 0.5, 0.4


def test_a_prediction_that_could_not_be_read_is_wrong_either_way():
    score = processbench_score([None, None], [1, -1])
    assert (score.error_acc, score.correct_acc) == (0.0, 0.0)


def _sample(subset: str, label: int, steps: int, i: int) -> ProcessBenchSample:
    record = {"id": f"{subset}-{i}", "problem": "p", "steps": [f"s{j}" for j in range(steps)], "label": label}
    return ProcessBenchSample(subset, label, validate_record(record, position=i))


def test_compute_results_gives_every_method_the_sweep_and_the_average():
    samples = [_sample("gsm8k", 1, 3, 0), _sample("gsm8k", -1, 2, 1), _sample("math", 0, 2, 2)]
    matrices = {
        samples[0].item.key: [[0.9, 0.8], [0.3, 0.6], [0.9, 0.9]],  # Pass@1: 1 (right); Maj@2: 0.45 -> 1 (right)
        samples[1].item.key: [[0.7, 0.1], [0.9, 0.9]],  # Pass@1: -1 (right); Maj@2: 0.4 -> 0 (wrong)
        samples[2].item.key: [[0.2, 0.2], [0.9, 0.9]],  # both: 0 (right)
    }
    results = compute_results(samples, matrices, model="m", n=2, threshold=0.5, settings="k")
    assert list(results.rows) == ["Pass@1", "Maj@2"]
    assert results.rows["Pass@1"]["gsm8k"].f1 == 1.0
    assert results.rows["Maj@2"]["gsm8k"].f1 == 0.0
    assert results.rows["Maj@2"]["math"].f1 is None  # no correct sample in that subset
    assert results.average("Pass@1") == 1.0
    sweep = dict(results.sweep)
    assert sweep[0.05] == 0.0  # nothing is below 0.05: every erroneous sample missed
    assert len(results.sweep) == 19
    assert results.samples[1]["predictions"] == {"Pass@1": -1, "Maj@2": 0}
    with_critic = compute_results(
        samples, matrices, model="m", n=2, threshold=0.5, settings="k",
        critic={samples[0].item.key: 1, samples[1].item.key: None, samples[2].item.key: 0},
    )
    assert with_critic.rows["Critic"]["gsm8k"].error_acc == 1.0
    assert with_critic.rows["Critic"]["gsm8k"].correct_acc == 0.0
