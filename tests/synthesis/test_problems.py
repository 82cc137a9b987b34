"""Synthesis input: GSM8K and MATH shapes read, records without a gradable answer skipped with a reason."""

from __future__ import annotations

import json

import pytest
from tests.conftest import SHARED_DATA

from genprm.errors import InputError
from genprm.synthesis.problems import Problem, Skipped, last_boxed, read_problems


def test_gsm8k_math_and_plain_records(tmp_path):
    path = tmp_path / "p.jsonl"
    records = [
        {"question": "How many?", "answer": "reasoning\n#### 1,072"},
        {"problem": "Find x.", "solution": "So $x = \\boxed{\\frac{1}{2}}$."},
        {"problem": "Plain", "answer": 18},
        {"problem": "No answer"},
        {"problem": "", "answer": "3"},
        {"problem": "Unboxed", "solution": "x is 3"},
        ["not", "an", "object"],
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = list(read_problems(path))
    assert [p.gold for p in out if isinstance(p, Problem)] == ["1072", "\\frac{1}{2}", "18"]
    skipped = [s for s in out if isinstance(s, Skipped)]
    assert [(s.position, s.field) for s in skipped] == [(3, "answer"), (4, "problem"), (5, "solution"), (6, None)]
    assert "boxed" in skipped[2].reason
    assert len(list(read_problems(path, limit=2))) == 2


def test_nested_boxed_answers():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("none") is None


def test_a_missing_file_is_still_an_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_problems(tmp_path / "nope.jsonl"))


def test_content_keys_ignore_the_position():
    assert Problem("1", "p", "3", 0).key == Problem("9", "p", "3", 5).key != Problem("1", "p", "4", 0).key


@pytest.mark.skipif(not (SHARED_DATA / "gsm8k" / "train.jsonl").is_file(), reason="needs ../shared/data/gsm8k")
def test_gsm8k_train_reads_cleanly():
    out = list(read_problems(SHARED_DATA / "gsm8k" / "train.jsonl", limit=50))
    assert all(isinstance(p, Problem) for p in out) and out[0].gold == "72"
