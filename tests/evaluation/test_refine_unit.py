"""Critique-refine on scripted engines: critique extraction, the refine turn, conversations, per-round
accounting and resumption. The policy and the verifier are separate scripted engines.
"""

from __future__ import annotations

import json
import math

import pytest

from genprm.engines.scripted import ScriptedEngine
from genprm.errors import ConfigError, InputError
from genprm.evaluation.chat import ChatModel
from genprm.evaluation.refine import (
    Refiner,
    RefineSettings,
    Round,
    conversation,
    critique_of,
    critique_path,
    refine_turn,
    worst_path,
)
from genprm.evaluation.refine_data import gold_answer, load_problems
from genprm.evaluation.refine_results import compute_results, evaluate_refine
from genprm.evaluation.scoring import StoreScorer
from genprm.store import RunStore
from genprm.verifier import VerifyConfig

pytest.importorskip("math_verify")

PREFIX = "There might be some problem in this paragraph of your reasoning, please rethink and refine your answer:\n>"
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# -- critique, turn, steps -----------------------------------------------------------------------


def test_critique_drops_the_lead_in_and_stops_at_the_closing_tag():
    turn = (
        "<analyze>\nLet's analyze the Paragraph 12 step by step: The sum 2 + 3 is 5, not 6.\nSo it is wrong.\n"
        "</analyze>\n<verify>\nLet's use python code to find any potential error:\n```python\nprint(2+3)\n```\n"
        "</verify>\n<output>\n**Judgement**: $\\boxed{No}$\n</output>\n"
    )
    assert critique_of(turn) == "The sum 2 + 3 is 5, not 6.\nSo it is wrong."


def test_critique_without_analyze_is_empty():
    assert critique_of("<output>\n**Judgement**: $\\boxed{No}$\n</output>\n") == ""  # direct mode
    assert critique_of("") == ""


def test_critique_of_an_unfinished_analysis_keeps_what_was_written():
    assert critique_of("<analyze>\nLet's analyze the Paragraph 3 step by step: half a thought") == "half a thought"


def test_refine_turn_is_byte_exact():
    assert refine_turn("So 2 + 3 = 6.", "2 + 3 is 5.") == (
        "There might be some problem in this paragraph of your reasoning, please rethink and refine your answer:\n"
        ">So 2 + 3 = 6.\n\n2 + 3 is 5."
    )
    assert refine_turn("So 2 + 3 = 6.", "") == PREFIX + "So 2 + 3 = 6."


def test_worst_path_is_the_lowest_readable_reward_first_on_ties():
    assert worst_path([0.4, None, 0.1, 0.1]) == 2
    assert worst_path([None, None]) is None


def test_the_critique_comes_from_path_0_by_default_as_the_released_history_keeps():
    assert critique_path([0.4, None, 0.1], "first") == 0
    assert critique_path([0.4, None, 0.1], "worst") == 2
    with pytest.raises(ConfigError, match="critique"):
        RefineSettings(critique="best")  # type: ignore[arg-type]


def test_the_first_turn_and_budget_follow_the_released_code():
    from genprm.evaluation.refine import first_user_turn

    assert first_user_turn("What is 1+1?", INSTRUCTION) == "What is 1+1?\n\n" + INSTRUCTION
    assert RefineSettings().max_tokens == 16384


def test_gold_answers_of_the_shared_shapes():
    assert gold_answer("She makes $18.\n#### 18") == "18"
    assert gold_answer("#### 1,000") == "1000"
    assert gold_answer(27.0) == "27" and gold_answer(2.5) == "2.5"
    assert gold_answer("\\frac{1}{2}") == "\\frac{1}{2}"
    assert gold_answer(True) is None and gold_answer("  ") is None and gold_answer([1]) is None


# -- input ----------------------------------------------------------------------------------------


def _jsonl(tmp_path, rows, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_load_problems_reads_gsm8k_math500_and_generic_shapes(tmp_path):
    path = _jsonl(tmp_path, [
        {"question": "q1", "answer": "work\n#### 42"},
        {"problem": "q2", "answer": "\\frac{1}{2}", "unique_id": "test/x.json"},
        {"problem": "q3", "answer": 7, "id": 9, "response": "It is \\boxed{7}."},
    ])
    problems = load_problems(path)
    assert [(p.id, p.problem, p.gold, p.response) for p in problems] == [
        ("0", "q1", "42", None), ("test/x.json", "q2", "\\frac{1}{2}", None), ("9", "q3", "7", "It is \\boxed{7}."),
    ]
    assert len(load_problems(path, limit=2)) == 2


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"answer": "1"}, "p.jsonl:2, record 1, field 'problem': missing"),
        ({"problem": "q"}, "p.jsonl:2, record 1, field 'answer': missing"),
        ({"problem": "q", "answer": None}, "p.jsonl:2, record 1, field 'answer': must be"),
        ({"problem": " ", "answer": "1"}, "p.jsonl:2, record 1, field 'problem': must be a non-empty string"),
        ({"problem": "q", "answer": "1", "response": ["a"]}, "p.jsonl:2, record 1, field 'response'"),
        ("{not json", "p.jsonl:2, record 1: invalid JSON"),
        ([1, 2], "p.jsonl:2, record 1: expected an object"),
    ],
)
def test_bad_records_name_file_line_record_and_field(tmp_path, row, expected):
    path = _jsonl(tmp_path, [{"problem": "ok", "answer": "1"}, row])
    with pytest.raises(InputError) as caught:
        load_problems(path)
    assert str(caught.value).startswith(str(tmp_path / expected.split(":")[0]))
    assert expected.split(":", 1)[1].strip() in str(caught.value)


def test_missing_file_says_which(tmp_path):
    with pytest.raises(InputError, match="nope.jsonl: no such file"):
        load_problems(tmp_path / "nope.jsonl")


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="history"):
        RefineSettings(history="most")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rounds"):
        RefineSettings(rounds=-1)
    with pytest.raises(ConfigError, match="top_p"):
        RefineSettings(top_p=0)


# -- the loop on scripted engines -----------------------------------------------------------------

# Per problem marker: the policy's answer after 0, 1, 2 refinement turns in its conversation.
SCRIPT = {
    "alpha": ["We add 2 and 2.\n\nSo the answer is \\boxed{4}."],
    "beta": ["Start from 2 and 3.\n\nWRONG: 2 + 3 = 6, so \\boxed{6}.", "Start from 2 and 3.\n\n2 + 3 = 5, so \\boxed{5}."],
    "gamma": ["WRONG guess \\boxed{1}.", "Think.\n\nWRONG again \\boxed{2}.", "Done: \\boxed{7}."],
}
ROWS = [
    {"id": "a", "problem": "alpha: what is 2 + 2?", "answer": "4"},
    {"id": "b", "problem": "beta: what is 2 + 3?", "answer": "5"},
    {"id": "c", "problem": "gamma: what is 3 + 4?", "answer": "#### 7"},
]


def policy_engine() -> ScriptedEngine:
    def respond(prompt, request):
        marker = next(m for m in SCRIPT if m in prompt)
        return SCRIPT[marker][prompt.count(PREFIX)]

    return ScriptedEngine("policy", respond=respond)


def _last_user_turn(prompt: str) -> str:
    return prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


def verifier_engine() -> ScriptedEngine:
    """Analysis names the paragraph it judges; a step containing WRONG gets P(Yes) = 0.1."""

    def respond(prompt, request):
        k = prompt.rsplit("Paragraph ", 1)[1].split(" ", 1)[0]
        verdict = "wrong" if "WRONG" in _last_user_turn(prompt) else "right"
        return f"Paragraph {k} is {verdict}.\n</analyze>\n"

    def verdict(prompt):
        p = 0.1 if "WRONG" in _last_user_turn(prompt) else 0.9
        return math.log(p), math.log(1 - p)

    return ScriptedEngine("verifier", respond=respond, verdict=verdict)


def _refiner(tmp_path, policy, verifier, rounds=2, history="full", n=1):
    store = RunStore(tmp_path / "run")
    scorer = StoreScorer(store, verifier, VerifyConfig(n=n, mode="analyze", max_step_tokens=128, reward="raw"))
    return Refiner(store, ChatModel(policy), scorer, RefineSettings(rounds=rounds, history=history, max_tokens=256))


@pytest.fixture
def problems(tmp_path):
    return load_problems(_jsonl(tmp_path, ROWS))


def test_per_round_accounting(tmp_path, problems):
    results = evaluate_refine(problems, _refiner(tmp_path, policy_engine(), verifier_engine()))
    assert results.accuracy == {0: pytest.approx(1 / 3), 1: pytest.approx(2 / 3), 2: 1.0}
    assert results.refined == {1: 2, 2: 1}
    assert results.transitions == {1: {"wrong_to_right": 1, "right_to_wrong": 0},
                                   2: {"wrong_to_right": 1, "right_to_wrong": 0}}
    by_id = {s["id"]: s for s in results.samples}
    beta = by_id["b"]["rounds"]
    # Each round shows its own answer and the verifier's finding on that answer (none past the last round).
    assert [r["source"] for r in beta] == ["policy", "refined", "kept"]
    assert [r["correct"] for r in beta] == [False, True, True]
    assert [r["first_error"] for r in beta] == [1, -1, None]
    assert beta[0]["step"] == "WRONG: 2 + 3 = 6, so \\boxed{6}."
    assert beta[0]["critique"] == "Paragraph 2 is wrong."  # the analysis of the k-th paragraph, lead-in removed
    assert beta[0]["step_rewards"] == [pytest.approx(0.9), pytest.approx(0.1)]
    assert [r["source"] for r in by_id["a"]["rounds"]] == ["policy", "kept", "kept"]
    assert [r["first_error"] for r in by_id["c"]["rounds"]] == [0, 1, None]

    saved = json.loads((tmp_path / "run" / "refine.json").read_text())
    assert saved["benchmark"] == "refine" and saved["policy"] == saved["verifier"] == "scripted"
    assert saved["rounds"] == 2 and saved["problems"] == 3
    assert saved["accuracy"] == {"0": pytest.approx(1 / 3), "1": pytest.approx(2 / 3), "2": 1.0}
    assert saved["refined"] == {"1": 2, "2": 1}
    assert set(saved["samples"][0]) >= {"id", "gold", "rounds"}
    assert set(saved["samples"][0]["rounds"][0]) >= {"answer", "correct", "first_error", "critique"}


def test_the_refine_prompt_is_the_conversation_so_far(tmp_path, problems):
    policy = policy_engine()
    evaluate_refine(problems, _refiner(tmp_path, policy, verifier_engine()))
    gamma = [prompt for prompt, _ in policy.calls if "gamma" in prompt]
    assert len(gamma) == 3
    turn1 = PREFIX + "WRONG guess \\boxed{1}.\n\nParagraph 1 is wrong."
    turn2 = PREFIX + "WRONG again \\boxed{2}.\n\nParagraph 2 is wrong."
    user0 = f"gamma: what is 3 + 4?\n\n{INSTRUCTION}"
    assert gamma[2] == (
        f"<|im_start|>user\n{user0}<|im_end|>\n"
        "<|im_start|>assistant\nWRONG guess \\boxed{1}.<|im_end|>\n"
        f"<|im_start|>user\n{turn1}<|im_end|>\n"
        "<|im_start|>assistant\nThink.\n\nWRONG again \\boxed{2}.<|im_end|>\n"
        f"<|im_start|>user\n{turn2}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_last_history_restarts_from_the_latest_answer():
    rounds = [Round("A0", "policy"), Round("A1", "refined", 0, turn="T1")]
    assert conversation("P", "I", rounds, "T2", "last") == [
        {"role": "user", "content": "P\n\nI"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "T2"},
    ]
    assert [m["content"] for m in conversation("P", "", rounds, "T2", "full")] == ["P", "A0", "T1", "A1", "T2"]


def test_reruns_resume_and_more_rounds_compute_only_the_new_ones(tmp_path, problems):
    policy, verifier = policy_engine(), verifier_engine()
    first = evaluate_refine(problems, _refiner(tmp_path, policy, verifier, rounds=1))
    assert first.accuracy == {0: pytest.approx(1 / 3), 1: pytest.approx(2 / 3)}
    policy_calls, verifier_calls = len(policy.calls), len(verifier.calls)
    assert policy_calls == 5  # 3 first answers + 2 refinements

    again = evaluate_refine(problems, _refiner(tmp_path, policy, verifier, rounds=1))
    assert (len(policy.calls), len(verifier.calls)) == (policy_calls, verifier_calls)
    assert again.to_json() == first.to_json()

    more = evaluate_refine(problems, _refiner(tmp_path, policy, verifier, rounds=2))
    assert len(policy.calls) == policy_calls + 1  # only gamma is refined again
    # Round 2 verified the two round-1 answers that changed; alpha's unchanged answer was a store hit.
    assert more.accuracy[2] == 1.0


def test_another_verifier_setting_reuses_the_first_answers(tmp_path, problems):
    policy = policy_engine()
    evaluate_refine(problems, _refiner(tmp_path, policy, verifier_engine(), rounds=1))
    calls = len(policy.calls)
    evaluate_refine(problems, _refiner(tmp_path, policy, verifier_engine(), rounds=1, n=2))
    assert len(policy.calls) == calls + 2  # the round-1 refinements again, no first answers


def test_a_given_response_is_round_zero_and_an_empty_answer_is_kept(tmp_path):
    path = _jsonl(tmp_path, [
        {"id": "r", "problem": "alpha given", "answer": "4", "response": "So \\boxed{4}."},
        {"id": "e", "problem": "beta empty", "answer": "5"},
    ])
    policy = ScriptedEngine("policy", respond=lambda prompt, request: "")
    verifier = verifier_engine()
    results = evaluate_refine(load_problems(path), _refiner(tmp_path, policy, verifier, rounds=1))
    by_id = {s["id"]: s["rounds"] for s in results.samples}
    assert [r["source"] for r in by_id["r"]] == ["input", "kept"]
    assert [r["source"] for r in by_id["e"]] == ["policy", "kept"]
    assert by_id["e"][0]["first_error"] is None  # nothing to verify
    assert len(policy.calls) == 1  # only the empty problem's first answer
    assert results.accuracy == {0: 0.5, 1: 0.5}


def test_compute_results_needs_every_round(problems):
    rounds = {p.key: [Round("x", "policy")] for p in problems}
    with pytest.raises(ValueError, match="lack rounds"):
        compute_results(problems, rounds, {}, policy="p", verifier="v", settings="s", n_rounds=1)


def test_a_policy_chat_template_override_gets_its_own_first_answers(tmp_path, problems):
    policy = policy_engine()
    store = RunStore(tmp_path / "run")
    scorer = StoreScorer(store, verifier_engine(), VerifyConfig(mode="analyze"))
    plain = Refiner(store, ChatModel(policy), scorer)
    custom = Refiner(store, ChatModel(policy, "{{ messages[0]['content'] }}"), scorer)
    assert plain.policy_key != custom.policy_key
    assert plain.policy_key == Refiner(store, ChatModel(policy), scorer, RefineSettings(rounds=1)).policy_key


def test_a_run_killed_mid_round_resumes_with_the_problem_in_flight(tmp_path, problems):
    def crashing(prompt, request):
        if "gamma" in prompt and PREFIX in prompt:
            raise RuntimeError("killed")
        return policy_engine()._respond(prompt, request)

    verifier = verifier_engine()
    with pytest.raises(RuntimeError, match="killed"):
        evaluate_refine(problems, _refiner(tmp_path, ScriptedEngine("policy", respond=crashing), verifier, rounds=1))
    verified = len(verifier.calls)
    policy = policy_engine()
    results = evaluate_refine(problems, _refiner(tmp_path, policy, verifier, rounds=1))
    assert len(policy.calls) == 1 and "gamma" in policy.calls[0][0]  # only gamma's refinement is redone
    assert len(verifier.calls) == verified  # its verification was stored before the crash
    assert results.refined == {1: 2}
