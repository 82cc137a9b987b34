"""Conversations are checked against the protocol: bad ones are named by record and field, or skipped."""

from __future__ import annotations

import json

import pytest

from genprm.errors import InputError
from genprm.protocol import prompts as P
from genprm.protocol.validate import assistant_turn_problem, validate_conversation, verdict_of
from genprm.training.data import read_training_data
from genprm.training.synthetic import synthetic_conversations

from .helpers import write_jsonl

GOOD = synthetic_conversations(4, seed=3)


def _with_turn(conversation, index, content):
    changed = [dict(m) for m in conversation]
    changed[index]["content"] = content
    return changed


def test_synthetic_conversations_follow_the_protocol():
    for i, conversation in enumerate(GOOD):
        assert validate_conversation(conversation, record=i) == conversation
    verdicts = [verdict_of(c[-1]["content"]) for c in GOOD]
    assert set(verdicts) == {"Yes", "No"}


def test_the_turn_without_its_trailing_newline_is_accepted():
    turn = GOOD[0][2]["content"]
    assert turn.endswith(P.verdict_close("Yes"))
    assert assistant_turn_problem(turn.rstrip("\n"), 1) is None


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda c: c[:1] + c[2:], "conversations[1].role", "expected 'user'"),
        (lambda c: [{**c[0], "content": "You are a helpful assistant."}, *c[1:]], "conversations[0].content",
         "system prompt"),
        (lambda c: c[:-1], "conversations[5].role", "must end with an assistant turn"),
        (lambda c: [*c[:3], {"role": "tool", "content": "x"}, *c[4:]], "conversations[3].role", "must be one of"),
        (lambda c: [*c[:1], {"role": "user", "content": "  "}, *c[2:]], "conversations[1].content", "non-empty"),
        (lambda c: _with_turn(c, 2, c[2]["content"].replace("Paragraph 1", "Paragraph 2")), "conversations[2].content",
         "Let's analyze the Paragraph 1"),
        (lambda c: _with_turn(c, 4, c[4]["content"].replace("</analyze>", "")), "conversations[4].content",
         "exactly once"),
        (lambda c: _with_turn(c, 2, c[2]["content"].replace("[Code Output]", "[Output]")), "conversations[2].content",
         "code output"),
        (lambda c: _with_turn(c, 2, c[2]["content"].replace("{Yes}", "{Maybe}")), "conversations[2].content",
         "must end with the judgement"),
        (lambda c: _with_turn(c, 2, c[2]["content"] + P.OUTPUT_PREFIX + "{No}$\n</output>\n"),
         "conversations[2].content", "exactly one judgement"),
        (lambda c: _with_turn(c, 2, c[2]["content"].replace(P.VERIFY_PREFIX, "")), "conversations[2].content",
         "followed by"),
    ],
)
def test_a_broken_conversation_names_its_record_and_field(edit, field, words):
    conversation = next(c for c in GOOD if len(c) == 7)
    with pytest.raises(InputError) as caught:
        validate_conversation(edit(conversation), record=5)
    assert caught.value.record == 5
    assert caught.value.field == field
    assert words in caught.value.reason


def test_not_a_list():
    with pytest.raises(InputError, match="must be a list"):
        validate_conversation("hello", record=0)


def test_the_reader_stops_at_the_first_bad_record_and_counts_the_others(tmp_path):
    bad = _with_turn(GOOD[1], 2, "no verifier format here")
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD[0], bad, GOOD[2], bad])
    with pytest.raises(InputError) as caught:
        read_training_data(path)
    message = str(caught.value)
    assert caught.value.record == 1 and caught.value.field == "conversations[2].content"
    assert "1 more invalid record" in message and "--skip-invalid" in message
    assert str(path) in message


def test_skip_invalid_drops_and_counts(tmp_path):
    bad = _with_turn(GOOD[1], 2, "no verifier format here")
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD[0], bad, GOOD[2], bad], column="messages")
    data = read_training_data(path, skip_invalid=True)
    assert data.conversations == [GOOD[0], GOOD[2]]
    assert [s.record for s in data.skipped] == [1, 3]
    assert data.summary()["skipped"] == 2
    assert "messages[2].content" in data.skipped[0].reason


def test_a_file_with_no_valid_conversation_stops(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD[0][:2]])
    with pytest.raises(InputError, match="no valid conversation"):
        read_training_data(path, skip_invalid=True)


def test_json_files_and_records_without_a_conversation(tmp_path):
    listed = tmp_path / "d.json"
    listed.write_text(json.dumps([{"conversations": c} for c in GOOD]), encoding="utf-8")
    assert read_training_data(listed).conversations == GOOD
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_training_data(path)
    assert caught.value.field == "conversations" and caught.value.line == 1


def test_parquet_with_a_conversations_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"conversations": GOOD, "source": ["x"] * len(GOOD)}), path)
    data = read_training_data(path)
    assert data.conversations == GOOD
    pq.write_table(pa.table({"text": ["a"]}), path)
    with pytest.raises(InputError, match="has no 'conversations' or 'messages' column"):
        read_training_data(path)


def test_the_fingerprint_follows_the_data_and_its_order(tmp_path):
    a = read_training_data(write_jsonl(tmp_path / "a.jsonl", GOOD))
    b = read_training_data(write_jsonl(tmp_path / "b.jsonl", list(reversed(GOOD))))
    assert a.fingerprint == read_training_data(tmp_path / "a.jsonl").fingerprint
    assert a.fingerprint != b.fingerprint
