"""ProcessBench data loading, the balanced limit, and the critic baseline's prompt and parsing."""

from __future__ import annotations

import json

import pytest

from genprm.errors import InputError
from genprm.evaluation.critic import critique_prompt, parse_critic_answer
from genprm.evaluation.processbench import load_processbench


def _write(folder, subset, records):
    folder.mkdir(exist_ok=True)
    (folder / f"{subset}.json").write_text(json.dumps(records))


def _record(i, label, steps=3):
    return {"id": f"g-{i}", "problem": f"p{i}", "steps": [f"s{j}" for j in range(steps)], "label": label}


def test_limit_takes_half_erroneous_and_half_correct_in_file_order(tmp_path):
    _write(tmp_path, "gsm8k", [_record(0, 1), _record(1, 0), _record(2, 2), _record(3, -1), _record(4, -1)])
    samples = load_processbench(tmp_path, ["gsm8k"], limit=3)
    assert [s.id for s in samples] == ["g-0", "g-1", "g-3"]
    assert [s.label for s in samples] == [1, 0, -1]
    assert len(load_processbench(tmp_path, ["gsm8k"])) == 5


def test_bad_records_name_the_file_the_record_and_the_field(tmp_path):
    _write(tmp_path, "math", [_record(0, 1), _record(1, 7)])
    with pytest.raises(InputError) as error:
        load_processbench(tmp_path, ["math"])
    message = str(error.value)
    assert "math.json" in message and "record 1" in message and "label" in message
    _write(tmp_path, "math", [{"id": "x", "problem": "p", "label": 0}])
    with pytest.raises(InputError, match="steps"):
        load_processbench(tmp_path, ["math"])


def test_unknown_subsets_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="unknown subset"):
        load_processbench(tmp_path, ["gsm9k"])
    with pytest.raises(InputError, match="no such file"):
        load_processbench(tmp_path, ["omnimath"])


def test_the_critic_prompt_tags_paragraphs_from_zero():
    prompt = critique_prompt("What is 1+1?", ["One plus one.", "It is 2."])
    assert "[Math Problem]\n\nWhat is 1+1?\n\n[Solution]\n\n<paragraph_0>\nOne plus one.\n</paragraph_0>\n\n" in prompt
    assert prompt.endswith("Please put your final answer (i.e., the index) in \\boxed{}.")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The earliest error is in paragraph 2. \\boxed{2}", 2),
        ("No error found: \\boxed{-1}", -1),
        ("first \\boxed{1} then on reflection \\boxed{ 3 }", 3),
        ("\\boxed{paragraph_4}", 4),
        ("no box here: 2", None),
        ("\\boxed{none}", None),
    ],
)
def test_the_critic_answer_is_the_index_in_the_last_box(text, expected):
    assert parse_critic_answer(text) == expected
