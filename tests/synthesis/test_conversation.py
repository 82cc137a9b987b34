"""Teacher sections become verifier turns byte for byte; anything that cannot be split cleanly is refused
with a reason; conversations are written to Parquet and JSONL with a ``messages`` alias.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest

from genprm.protocol.turns import CodeRound, TurnParts, turn_problem
from genprm.synthesis.conversation import REASONS, ConversationError, ExportSettings, build_conversation
from genprm.synthesis.export_files import read_conversations, write_conversations

PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"
STEPS = ["Step 1: Tom starts with 3 apples.", "Step 2: He buys 4 more, so 3 + 4 = 8.\n", "Step 3: The answer is 8."]
SYSTEM = "You are a math teacher. Your task is to review and critique the paragraphs in solution step by step."
OUT = "[Code Output]\n\n```\n{}\n```\n"
CONCLUSION = (
    "</verify>\n### Final Conclusion\n\nAccording to the requirement, I need to return the **index of the paragraph "
    "where the earliest error occurs**. Otherwise, return the **index of -1 (which typically denotes \"not found\")**."
    "\n\nANSWER: \\boxed"
)


def teacher_section(k: int, analysis: str, verify: str, *, heading: bool = True) -> str:
    return (f"### Paragraph {k}\n" if heading else "") + f"<analyze>\n{analysis}\n</analyze>\n<verify>\n{verify}"


P1 = teacher_section(1, "Tom starts with 3 apples, as the problem says.",
                     "```python\napples = 3\nprint(apples)\n```\n" + OUT.format(3) + "\nThe count is 3.\n", heading=True)
P2 = teacher_section(2, "  Let's analyze the Paragraph 2 step by step: 3 + 4 is 7, not 8.  ",
                     "Check the sum.\n```python\nprint(apples + 4)\n```\n" + OUT.format(7)
                     + "It prints 7, so the paragraph is wrong.\n")
P3 = teacher_section(3, "It repeats the wrong sum.", "```python\nprint(8 == 7)\n```\n" + OUT.format(False) + "Wrong.\n")


def critique_text(*sections: str) -> str:
    """As critique_solution leaves it: prefill, sections joined by </verify>, the Final Conclusion."""
    body = "</verify>\n".join(sections)
    return "<think>\n" + body + CONCLUSION


CRITIQUE = critique_text(P1, P2, P3)

TURN1 = (
    "<analyze>\nLet's analyze the Paragraph 1 step by step: Tom starts with 3 apples, as the problem says.\n"
    "</analyze>\n<verify>\nLet's use python code to find any potential error:\n```python\napples = 3\nprint(apples)\n"
    "```\n[Code Output]\n\n```\n3\n```\nThe count is 3.\n</verify>\n<output>\n**Judgement**: $\\boxed{Yes}$\n"
    "</output>\n"
)
TURN2 = (
    "<analyze>\nLet's analyze the Paragraph 2 step by step: 3 + 4 is 7, not 8.\n</analyze>\n<verify>\n"
    "Let's use python code to find any potential error:\n```python\nprint(apples + 4)\n```\n[Code Output]\n\n```\n7\n"
    "```\nIt prints 7, so the paragraph is wrong.\n</verify>\n<output>\n**Judgement**: $\\boxed{No}$\n</output>\n"
)


def test_the_conversation_ends_after_the_first_no_turn_by_default():
    messages = build_conversation(PROBLEM, STEPS, CRITIQUE, [1, 0], ExportSettings())
    assert messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Question: {PROBLEM}\n\nTom starts with 3 apples."},
        {"role": "assistant", "content": TURN1},
        {"role": "user", "content": "He buys 4 more, so 3 + 4 = 8."},
        {"role": "assistant", "content": TURN2},
    ]


def test_keep_continues_after_the_first_error_judged_no_and_prefixes_can_stay():
    settings = ExportSettings(after_first_error="keep", keep_step_prefixes=True, first_turn="plain")
    messages = build_conversation(PROBLEM, STEPS, CRITIQUE, [1, 0], settings)
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3
    assert messages[1]["content"] == f"{PROBLEM}\nStep 1: Tom starts with 3 apples."
    assert messages[3]["content"] == "Step 2: He buys 4 more, so 3 + 4 = 8."
    assert messages[6]["content"].endswith("Wrong.\n</verify>\n<output>\n**Judgement**: $\\boxed{No}$\n</output>\n")
    # Labels for every step are used as given.
    full = build_conversation(PROBLEM, STEPS, CRITIQUE, [1, 0, 1], settings)
    assert full[6]["content"].endswith("$\\boxed{Yes}$\n</output>\n")


def test_a_correct_solution_needs_every_paragraph_and_every_label():
    messages = build_conversation(PROBLEM, STEPS, CRITIQUE, [1, 1, 1], ExportSettings())
    assert len(messages) == 7 and all("{Yes}" in m["content"] for m in messages[2::2])
    with pytest.raises(ValueError, match="cover all 3 steps"):
        build_conversation(PROBLEM, STEPS, CRITIQUE, [1, 1], ExportSettings())
    with pytest.raises(ValueError, match="0/1"):
        build_conversation(PROBLEM, STEPS, CRITIQUE, [1, 2], ExportSettings())


def test_two_code_rounds_keep_the_text_between_them():
    verify = ("```python\nx = 3 + 4\nprint(x)\n```\n" + OUT.format(7) + "Now the claimed total:\n"
              "```python\nprint(x == 8)\n```\n" + OUT.format(False) + "So 8 is wrong.\n")
    text = critique_text(P1, teacher_section(2, "3 + 4 is 7.", verify))
    turn = build_conversation(PROBLEM, STEPS, text, [1, 0], ExportSettings())[4]["content"]
    assert turn == (
        "<analyze>\nLet's analyze the Paragraph 2 step by step: 3 + 4 is 7.\n</analyze>\n<verify>\n"
        "Let's use python code to find any potential error:\n```python\nx = 3 + 4\nprint(x)\n```\n[Code Output]\n\n"
        "```\n7\n```\nNow the claimed total:\n```python\nprint(x == 8)\n```\n[Code Output]\n\n```\nFalse\n```\n"
        "So 8 is wrong.\n</verify>\n<output>\n**Judgement**: $\\boxed{No}$\n</output>\n"
    )


def test_a_section_without_verify_tags_takes_the_text_after_its_analysis():
    untagged = [part.replace("<verify>\n", "") for part in (P1, P2)]
    untagged[1] = untagged[1].replace("### Paragraph 2\n", "### Paragraph 2:\n")  # a colon is tolerated
    text = "<think>\n" + untagged[0] + "\n" + untagged[1] + CONCLUSION  # the last one closed by the conclusion
    messages = build_conversation(PROBLEM, STEPS, text, [1, 0], ExportSettings())
    assert [messages[2]["content"], messages[4]["content"]] == [TURN1, TURN2]


def test_a_verdict_the_teacher_wrote_itself_must_agree_and_its_output_part_is_replaced():
    own = P1 + "</verify>\n<output>\n**Judgement**: $\\boxed{Yes}$\n</output>\n"
    text = "<think>\n" + own + P2 + CONCLUSION
    assert build_conversation(PROBLEM, STEPS, text, [1, 0], ExportSettings())[2]["content"] == TURN1


def test_a_verify_part_left_open_ends_at_the_next_heading():
    # As the 1.5B teacher writes it: the interpretation, then straight on to the next paragraph.
    text = "<think>\n" + P1 + "\n" + P2 + "</verify>\n" + P3 + CONCLUSION
    messages = build_conversation(PROBLEM, STEPS, text, [1, 0], ExportSettings())
    assert [messages[2]["content"], messages[4]["content"]] == [TURN1, TURN2]


def test_one_verify_part_per_code_block_makes_one_turn_with_several_rounds():
    second = "<verify>\n```python\nprint(apples == 3)\n```\n" + OUT.format(True) + "Still 3.\n"
    for joint in ("</verify>\n\n", "\n"):  # closed between the parts, or only opened again
        text = critique_text(P1 + joint + second, P2)
        turn = build_conversation(PROBLEM, STEPS, text, [1, 0], ExportSettings())[2]["content"]
        assert turn == TURN1.replace(
            "The count is 3.\n", "The count is 3.\n```python\nprint(apples == 3)\n```\n" + OUT.format(True) + "Still 3.\n")
    third = second.replace("apples == 3", "apples > 2")
    with pytest.raises(ConversationError) as caught:  # three blocks: more than the verifier runs in one step
        build_conversation(PROBLEM, STEPS, critique_text(P1 + "\n" + second + third, P2), [1, 0], ExportSettings())
    assert caught.value.reason == "too-many-code-blocks" and caught.value.paragraph == 1


def test_an_analysis_left_open_ends_where_the_verify_part_begins():
    open_analysis = P1.replace("\n</analyze>", "")
    text = critique_text(open_analysis, P2)
    assert build_conversation(PROBLEM, STEPS, text, [1, 0], ExportSettings())[2]["content"] == TURN1
    no_tag = open_analysis.replace("<verify>\n", "")  # nor a verify tag: it ends at the python fence
    assert build_conversation(PROBLEM, STEPS, critique_text(no_tag, P2), [1, 0], ExportSettings())[2]["content"] == TURN1
    with pytest.raises(ConversationError) as caught:  # open, and nothing after it: nothing to split
        build_conversation(PROBLEM, STEPS, critique_text(P1, "### Paragraph 2\n<analyze>\nIt is wrong.\n"), [1, 0],
                           ExportSettings())
    assert caught.value.reason == "no-analysis"


BROKEN = {
    "missing-paragraph": critique_text(P1),
    "duplicate-paragraph": critique_text(P1, P2, P2),
    "no-analysis": critique_text(P1, "### Paragraph 2\n<verify>\n```python\nprint(7)\n```\n" + OUT.format(7)),
    "two-analyses": critique_text(P1, P2.replace("<verify>", "<analyze>\nagain\n</analyze>\n<verify>")),
    "no-code": critique_text(P1, teacher_section(2, "wrong", "I just know it is 7.\n")),
    "unexecuted-code": critique_text(P1, P2.replace("It prints 7", "```python\nprint(1)\n```\nIt prints 7")),
    "stray-code-output": critique_text(P1, P2.replace("It prints 7", OUT.format(9) + "It prints 7")),
    "too-many-code-blocks": critique_text(P1, P2.replace("It prints 7", "```python\nprint(2)\n```\n" + OUT.format(2)
                                                       + "```python\nprint(3)\n```\n" + OUT.format(3) + "It prints 7")),
    "stop-in-verify": critique_text(P1, P2.replace("It prints 7", "See:\n```\n7\n```\nIt prints 7")),
    "two-verdicts": critique_text(P1, P2.replace("It prints 7", "\\boxed{yes} or \\boxed{No}? It prints 7")),
    "verdict-mismatch": critique_text(P1, P2.replace("It prints 7", "\\boxed{Yes} It prints 7")),
}


@pytest.mark.parametrize("reason", sorted(BROKEN))
def test_what_cannot_be_split_cleanly_is_refused_with_its_reason(reason):
    with pytest.raises(ConversationError) as caught:
        build_conversation(PROBLEM, STEPS, BROKEN[reason], [1, 0], ExportSettings())
    assert caught.value.reason == reason
    assert caught.value.paragraph == 2
    assert REASONS[reason] in str(caught.value)


def test_every_documented_reason_has_a_case():
    # An analysis is cut at its first </analyze>, so only other callers of turn_problem meet this one:
    assert set(BROKEN) | {"stop-in-analysis"} == set(REASONS)
    parts = TurnParts(1, "a\n</analyze>\nb\n", (CodeRound("", "print(1)", "1"),), "ok\n", "Yes")
    assert turn_problem(parts) == "stop-in-analysis"
    assert turn_problem(replace(parts, analysis="a\n")) is None
    assert turn_problem(replace(parts, analysis="a\n"), max_code_rounds=1) == "too-many-code-blocks"
    assert turn_problem(replace(parts, rounds=())) == "no-code"


def test_settings_are_validated():
    from genprm.errors import ConfigError

    with pytest.raises(ConfigError, match="first_turn"):
        ExportSettings(first_turn="fancy")
    with pytest.raises(ConfigError, match="after_first_error"):
        ExportSettings(after_first_error="drop")  # type: ignore[arg-type]


def rows():
    conversation = build_conversation(PROBLEM, STEPS, CRITIQUE, [1, 0], ExportSettings())
    return [{"conversations": conversation, "problem_id": "gsm8k-7", "first_error": 1, "source_run": "runs/synth"},
            {"conversations": conversation[:3], "problem_id": "gsm8k-8", "first_error": -1, "source_run": "runs/synth"}]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_files_round_trip_with_a_messages_alias(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    assert write_conversations(rows(), path) == 2
    back = read_conversations(path)
    assert [r["conversations"] for r in back] == [r["conversations"] for r in rows()]
    assert [r["messages"] for r in back] == [r["conversations"] for r in rows()]
    assert [(r["problem_id"], r["first_error"]) for r in back] == [("gsm8k-7", 1), ("gsm8k-8", -1)]
    assert list(tmp_path.iterdir()) == [path]


def test_parquet_has_the_published_column_shape(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    write_conversations(rows(), path)
    schema = pq.read_schema(path)
    turn = schema.field("conversations").type.value_type
    assert [turn.field(i).name for i in range(turn.num_fields)] == ["content", "role"]
    assert schema.field("messages").type == schema.field("conversations").type


def test_a_bad_row_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "train.jsonl"
    write_conversations(rows(), path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="row 1"):
        write_conversations([rows()[0], {"conversations": [{"role": "user"}]}], path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
    assert json.loads(before.splitlines()[0])["messages"][0]["role"] == "system"


def test_an_unknown_suffix_is_refused(tmp_path):
    from genprm.errors import ConfigError

    with pytest.raises(ConfigError, match="parquet"):
        write_conversations(rows(), tmp_path / "train.csv")


def test_parquet_without_pyarrow_names_the_users_file_and_writes_nothing(tmp_path, monkeypatch):
    from genprm.errors import ConfigError

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed: import raises ImportError
    path = tmp_path / "train.parquet"
    with pytest.raises(ConfigError, match="genprm\\[synth\\]") as caught:
        write_conversations(rows(), path)
    assert f"'{path}'" in str(caught.value)
    assert list(tmp_path.iterdir()) == []
