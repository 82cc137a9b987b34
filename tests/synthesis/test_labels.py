"""RPE labels and the paper's ablations on hand-computed MC tables; dynamic K at its edges."""

from __future__ import annotations

import pytest

from genprm.errors import ConfigError
from genprm.synthesis.labels import DynamicK, LabelSettings, label_steps, labels_up_to_first_error, propagate_zeros


def test_rpe_ratio_against_the_previous_step_with_mc_s1_for_the_first():
    # MC(s_1)=0.5; P = 0.6/0.5=1.2, 0.3/0.6=0.5, 0.3/0.3=1.0, 1/0.3≈3.3
    result = label_steps([0.6, 0.3, 0.3, 1.0], 0.5)
    assert result.progress == pytest.approx([1.2, 0.5, 1.0, 1 / 0.3])
    assert result.labels == [1, 0, 1, 1]
    assert result.first_error == 1


def test_epsilon_is_inclusive_and_configurable():
    assert label_steps([0.4, 1.0], 0.5).labels == [1, 1]  # 0.4/0.5 = 0.8 >= 0.8
    assert label_steps([0.39, 1.0], 0.5).labels == [0, 1]
    assert label_steps([0.3, 1.0], 0.5, LabelSettings(threshold=0.5)).labels == [1, 1]  # 0.6 >= 0.5


def test_a_zero_is_the_first_error_and_every_later_step_becomes_zero():
    result = label_steps([0.5, 0.0, 0.7, 1.0], 0.5)
    assert result.mc == [0.5, 0.0, 0.0, 0.0]
    assert result.labels == [1, 0, 0, 0]
    assert result.progress[2:] == [0.0, 0.0]  # P_t = 0 whenever MC(s_t) = 0
    assert result.first_error == 1
    assert propagate_zeros([0.2, 0.0, 0.9]) == [0.2, 0.0, 0.0]


def test_the_last_step_is_scored_by_its_own_answer():
    right = label_steps([0.5, 1.0], 0.5)
    wrong = label_steps([0.5, 0.0], 0.5)
    assert right.labels == [1, 1] and right.first_error == -1
    assert wrong.labels == [1, 0] and wrong.first_error == 1


def test_mc_s1_of_one_makes_any_drop_below_epsilon_an_error():
    result = label_steps([0.9, 0.7, 1.0], 1.0)
    # 0.9/1 = 0.9 good; 0.7/0.9 ≈ 0.78 < 0.8 bad; 1/0.7 good
    assert result.labels == [1, 0, 1]
    assert label_steps([0.75, 1.0], 1.0).labels == [0, 1]


def test_mc_s1_of_zero_gives_no_progress():
    assert label_steps([0.5, 1.0], 0.0).labels == [0, 1]


def test_hard_labels_count_any_success():
    settings = LabelSettings(method="hard")
    assert label_steps([0.05, 0.01, 1.0], 0.9, settings).labels == [1, 1, 1]
    assert label_steps([0.05, 0.0, 1.0], 0.9, settings).labels == [1, 0, 0]


def test_difference_labels_allow_a_bounded_drop():
    settings = LabelSettings(method="difference", threshold=0.3)
    result = label_steps([0.5, 0.25, 0.2, 0.0], 0.6, settings)
    # differences: -0.1 good, -0.25 good, -0.05 good, final 0 is an error
    assert result.progress == pytest.approx([-0.1, -0.25, -0.05, -0.2])
    assert result.labels == [1, 1, 1, 0]
    assert label_steps([0.5, 0.1, 1.0], 0.6, settings).labels == [1, 0, 1]  # -0.4 < -0.3


def test_labels_up_to_the_first_error():
    assert labels_up_to_first_error([1, 1, 0, 1, 0]) == [1, 1, 0]
    assert labels_up_to_first_error([1, 1, 1]) == [1, 1, 1]


def test_bad_label_settings_name_the_option():
    with pytest.raises(ConfigError, match="label_method"):
        LabelSettings(method="vibes")  # type: ignore[arg-type]


def test_dynamic_k_at_its_edges():
    k = DynamicK()
    assert [k.k_for(x) for x in (0.0, 0.0999, 0.1, 0.5, 0.8999, 0.9, 1.0)] == [128, 128, 64, 64, 64, 32, 32]
    small = DynamicK(edges=(0.25, 0.75), ks=(32, 16, 8))
    assert [small.k_for(x) for x in (0.2, 0.25, 0.74, 0.75)] == [32, 16, 16, 8]


def test_dynamic_k_rejects_bad_edges():
    with pytest.raises(ConfigError, match="k_edges"):
        DynamicK(edges=(0.9, 0.1))
    with pytest.raises(ConfigError):
        DynamicK(ks=(8, 0, 4))
