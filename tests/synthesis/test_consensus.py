"""The consensus rule: the teacher's index and the labels' first error must agree."""

from __future__ import annotations

import pytest

from genprm.errors import ConfigError
from genprm.synthesis.consensus import FilterSettings, decide, voted_index


def test_agreeing_first_errors_are_kept():
    kept = decide(first_error=1, n_steps=4, indices=[2], vote="majority")
    assert kept.kept and kept.reason == "kept" and kept.label_index == 2 and kept.agreeing == [0]
    assert decide(-1, 4, [-1], "majority").kept  # both: no error


def test_disagreements_name_which_side_found_the_error_first():
    assert decide(2, 4, [2], "majority").reason == "teacher-earlier"  # teacher: step 2, labels: step 3
    assert decide(-1, 4, [3], "majority").reason == "teacher-earlier"
    assert decide(1, 4, [3], "majority").reason == "teacher-later"
    assert decide(1, 4, [-1], "majority").reason == "teacher-later"


def test_no_agreed_index_and_out_of_range():
    assert decide(1, 4, [None], "majority").reason == "no-teacher-index"
    assert decide(1, 4, [], "majority").reason == "no-critique"
    assert decide(1, 3, [7], "majority").reason == "index-out-of-range"


def test_votes_over_several_critiques():
    assert voted_index([2, 2, 3], "majority") == 2
    assert voted_index([2, 3, None], "majority") is None
    assert voted_index([2, 2, None, None], "majority") is None  # 2 of 4 is no majority
    assert voted_index([2, 2, 2], "all") == 2
    assert voted_index([2, 2, None], "all") is None
    any_vote = decide(1, 4, [3, None, 2], "any")
    assert any_vote.kept and any_vote.agreeing == [2]
    assert decide(1, 4, [3, 3, 2], "majority").reason == "teacher-later"
    assert decide(1, 4, [2, 3, 2], "majority").agreeing == [0, 2]


def test_filter_settings_are_checked():
    with pytest.raises(ConfigError):
        FilterSettings(critiques=0)
    with pytest.raises(ConfigError):
        FilterSettings(vote="loudest")  # type: ignore[arg-type]
