"""Best-of-N input: both formats, --limit/--responses, step splitting, errors that name the place, grading."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from genprm.errors import ConfigError, InputError
from genprm.evaluation import bon, grade_cache
from genprm.evaluation.bon import load_bon
from genprm.evaluation.grade_cache import GradeCache
from genprm.protocol.parse import split_paragraphs as split_steps
from genprm.store import RunStore

MATH_COT = Path(__file__).resolve().parents[3] / "shared" / "data" / "bon" / "math_cot_100.jsonl"


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def generic(i: int = 0, **over) -> dict:
    record = {"id": f"p{i}", "problem": f"What is {i}+1?", "answer": str(i + 1),
              "responses": [f"Add.\n\nSo \\boxed{{{i + 1}}}.", "", f"\\boxed{{{i}}}"]}
    record.update(over)
    return record


def test_split_steps_on_blank_lines():
    assert split_steps("a\nb\n\n  \n\nc\n \t\nd\n") == ["a\nb", "c", "d"]
    assert split_steps("") == [] and split_steps("\n\n  \n") == []


def test_generic_format_limit_and_responses(tmp_path):
    path = write_jsonl(tmp_path / "bon.jsonl", [generic(i) for i in range(3)])
    problems = load_bon(path, limit=2, responses=2)
    assert [p.id for p in problems] == ["p0", "p1"]
    assert [len(p.responses) for p in problems] == [2, 2]
    assert problems[1].gold == "2" and problems[1].line == 2 and problems[1].shipped is None


def test_each_response_is_a_solution_carrying_problem_id_and_index(tmp_path):
    (problem,) = load_bon(write_jsonl(tmp_path / "bon.jsonl", [generic()]))
    item = problem.item(0)
    assert item is not None and item.steps == ["Add.", "So \\boxed{1}."]
    assert item.record == {"id": "p0/0", "problem_id": "p0", "response": 0}
    assert problem.item(1) is None  # an empty response has no step to verify
    assert item.key != problem.item(2).key


def test_math_cot_format(tmp_path):
    record = {"idx": 7, "question": "Q?", "gt": "3", "answer": "ignored", "level": "Level 1",
              "response": ["\\boxed{3}", "\\boxed{4}"], "score": [True, False], "pred": ["3", "4"]}
    (problem,) = load_bon(write_jsonl(tmp_path / "m.jsonl", [record]), responses=1)
    assert (problem.id, problem.problem, problem.gold) == ("7", "Q?", "3")
    assert problem.responses == ["\\boxed{3}"] and problem.shipped == [True]


def test_json_list_and_numeric_gold(tmp_path):
    path = tmp_path / "bon.json"
    path.write_text(json.dumps([generic(answer=12)]), encoding="utf-8")
    (problem,) = load_bon(path)
    assert problem.gold == "12" and problem.id == "p0"


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        ([1, 2], None, "expected an object"),
        ({"problem": "x", "answer": "1"}, "responses", "missing (or 'response'"),
        (generic(problem=""), "problem", "non-empty string"),
        (generic(answer=None), "answer", "missing"),
        (generic(answer=True), "answer", "non-empty string or a number"),
        (generic(responses="just one"), "responses", "non-empty list"),
        (generic(responses=[]), "responses", "non-empty list"),
        (generic(responses=["ok", 3, "ok"]), "responses[1]", "must be a string, got int"),
        (generic(id=[1]), "id", "string or an integer"),
        (generic(score=[True]), "score", "list of 3 booleans"),
        (generic(score=[1, 0, 1]), "score", "list of 3 booleans"),
        (generic(1, responses=["a", "b"]), "responses", "has 2 responses, fewer than the 3"),
        (generic(id="p0"), "id", "duplicate problem id 'p0'"),
        ({"question": "Q", "response": ["a", "b", "c"]}, "gt", "missing"),
    ],
)
def test_bad_records_name_file_line_record_and_field(tmp_path, record, field, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(generic()) + "\n\n" + json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_bon(path)
    error = caught.value
    assert (error.path, error.line, error.record, error.field) == (str(path), 3, 1, field)
    assert reason in str(error)
    assert str(error).startswith(f"{path}:3, record 1")


def test_file_level_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_bon(tmp_path / "absent.jsonl")
    (tmp_path / "broken.jsonl").write_text(json.dumps(generic()) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"broken.jsonl:2, record 1: invalid JSON"):
        load_bon(tmp_path / "broken.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        load_bon(tmp_path / "empty.jsonl")
    with pytest.raises(ConfigError, match="--responses"):
        load_bon(write_jsonl(tmp_path / "ok.jsonl", [generic()]), responses=0)


def test_limit_stops_reading_before_a_later_bad_record(tmp_path):
    path = tmp_path / "bon.jsonl"
    path.write_text(json.dumps(generic()) + "\nnot json\n", encoding="utf-8")
    assert len(load_bon(path, limit=1)) == 1


# --- grading ---------------------------------------------------------------------------------


def test_grades_are_cached_in_the_store(tmp_path, monkeypatch):
    pytest.importorskip("math_verify")
    pairs = [("2", "so \\boxed{2}"), ("2", "so \\boxed{3}"), ("2", "no answer at all")]
    with RunStore(tmp_path / "run") as store:
        first = GradeCache(store).grade(pairs)
        assert [(g.correct, g.answer) for g in first] == [(True, "2"), (False, "3"), (False, None)]
        monkeypatch.setattr(grade_cache, "grade_all", lambda _: pytest.fail("regraded a cached pair"))
        seen = []
        again = GradeCache(store).grade(pairs, lambda done, total: seen.append((done, total)))
        assert again == first and seen == [(3, 3)]


@pytest.mark.skipif(not MATH_COT.is_file(), reason=f"{MATH_COT} is not there")
def test_math_verify_agrees_with_the_shipped_labels_on_real_rows(tmp_path):
    pytest.importorskip("math_verify")
    problems = load_bon(MATH_COT, limit=6)
    with RunStore(tmp_path / "run") as store:
        grades = bon.grade_problems(problems, GradeCache(store))
    agreement = bon.agreement(problems, grades)
    assert agreement.total == 6 * 8
    assert agreement.matches == agreement.total
    assert any(not g.correct for per in grades for g in per)  # the slice holds wrong answers too


@pytest.mark.skipif(not MATH_COT.is_file(), reason=f"{MATH_COT} is not there")
def test_grading_off_the_main_thread_is_safe(tmp_path):
    """math-verify's timeouts use signals: from a thread the grades come from a worker process."""
    pytest.importorskip("math_verify")
    from concurrent.futures import ThreadPoolExecutor

    (problem,) = load_bon(MATH_COT, limit=1, responses=2)
    start = time.perf_counter()
    with RunStore(tmp_path / "run") as store, ThreadPoolExecutor(1) as pool:
        grades = pool.submit(bon.grade_problems, [problem], GradeCache(store)).result()
    assert [g.correct for g in grades[0]] == problem.shipped
    assert time.perf_counter() - start < 60


def test_limit_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="--limit"):
        load_bon(write_jsonl(tmp_path / "ok.jsonl", [generic()]), limit=0)
