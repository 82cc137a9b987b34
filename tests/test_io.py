"""Input validation names the record and field; output appends, resumes and repairs."""

from __future__ import annotations

import json

import pytest

from genprm.errors import InputError
from genprm.io import ResultWriter, count_records, read_solutions


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_json_object_list_and_jsonl(tmp_path):
    one = _write(tmp_path, "a.json", json.dumps({"problem": "p", "steps": ["s"], "id": 7}))
    many = _write(tmp_path, "b.json", json.dumps([{"problem": "p", "steps": ["s"]}] * 2))
    lines = _write(tmp_path, "c.jsonl", '{"problem": "p", "steps": ["a", "b"]}\n\n{"problem": "q", "steps": ["c"]}\n')
    assert [r.record["id"] for r in read_solutions(one)] == [7]
    assert len(list(read_solutions(many))) == 2
    records = list(read_solutions(lines))
    assert [r.line for r in records] == [1, 3]
    assert count_records(lines) == 2 and count_records(many) == 2


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        ({"steps": ["s"]}, "problem", "missing"),
        ({"problem": "p"}, "steps", "missing"),
        ({"problem": "p", "steps": []}, "steps", "empty"),
        ({"problem": "p", "steps": ["ok", 3]}, "steps[1]", "string"),
        ({"problem": "p", "steps": "one"}, "steps", "list"),
        ({"problem": "", "steps": ["s"]}, "problem", "non-empty"),
    ],
)
def test_bad_records_name_record_and_field(tmp_path, record, field, reason):
    path = _write(tmp_path, "in.jsonl", json.dumps({"problem": "fine", "steps": ["x"]}) + "\n" + json.dumps(record) + "\n")
    reader = read_solutions(path)
    assert next(reader).problem == "fine"  # records before the bad one are still handed out
    with pytest.raises(InputError) as info:
        next(reader)
    assert info.value.field == field and info.value.record == 1 and info.value.line == 2
    assert reason in str(info.value) and f"field '{field}'" in str(info.value)


def test_invalid_json_names_the_line(tmp_path):
    good = json.dumps({"problem": "p", "steps": ["s"]})
    path = _write(tmp_path, "in.jsonl", "\n".join([good] * 36 + ["{not json"]) + "\n")
    with pytest.raises(InputError) as info:
        list(read_solutions(path))
    assert info.value.line == 37 and ":37" in str(info.value)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_solutions(tmp_path / "nope.jsonl"))


def test_writer_resumes_and_cuts_a_partial_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    with ResultWriter(out) as writer:
        writer.write({"key": "a", "v": 1})
        writer.write({"key": "b", "v": 2})
    with out.open("a") as f:
        f.write('{"key": "c", "v"')  # a run killed mid-write
    writer = ResultWriter(out)
    assert set(writer.done) == {"a", "b"}
    writer.write({"key": "c", "v": 3})
    writer.close()
    lines = out.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b", "c"]
