"""Golden tests: every exact string the GenPRM checkpoints were trained on, as the model sees it."""

from __future__ import annotations

import math

from conftest import R1_SPECIAL
from genprm.engines.scripted import ScriptedEngine
from genprm.protocol import prompts as P
from genprm.protocol.chat import AssistantHeader, ChatTemplate, build_messages
from genprm.verifier.config import VerifyConfig
from genprm.verifier.driver import drive
from genprm.verifier.path import verify_step_path

PROBLEM = "What is 2 + 3?"
STEP1 = "2 + 3 = 5."
STEP2 = "So the answer is 5."
BOS, EOS = R1_SPECIAL["bos_token"], R1_SPECIAL["eos_token"]


def test_exact_literals():
    assert P.SYSTEM_PROMPT == (
        "You are a math teacher. Your task is to review and critique the paragraphs in solution step by step."
    )
    assert P.DIRECT_SYSTEM_PROMPT == (
        "You are a math teacher. Your task is to review and critique the paragraphs in solution directly. "
        "Output your judgement in the format of `\\boxed{Yes}` if the paragraph is correct, or "
        "`\\boxed{No}` if the paragraph is incorrect."
    )
    assert P.analyze_prefix(3) == "<analyze>\nLet's analyze the Paragraph 3 step by step: "
    assert P.ANALYZE_END == "</analyze>\n"
    assert P.VERIFY_PREFIX == "<verify>\nLet's use python code to find any potential error:\n```python\n"
    assert P.OUTPUT_PREFIX == "<output>\n**Judgement**: $\\boxed"
    assert P.code_output_block("5") == "[Code Output]\n\n```\n5\n```\n"
    assert P.verdict_close("Yes") == "{Yes}$\n</output>\n"
    assert P.user_turn(PROBLEM, STEP1, 0) == f"Question: {PROBLEM}\n\n{STEP1}"
    assert P.user_turn(PROBLEM, STEP1, 0, "plain") == f"{PROBLEM}\n{STEP1}"
    assert P.user_turn(PROBLEM, STEP2, 1) == STEP2


def test_r1_first_step_prompt_ends_with_trained_assistant_header(r1_template):
    chat = ChatTemplate(r1_template, R1_SPECIAL)
    messages = build_messages(P.SYSTEM_PROMPT, [P.user_turn(PROBLEM, STEP1, 0)], [])
    prompt = chat.prompt_for(messages, AssistantHeader.TEMPLATE)
    assert prompt == f"{BOS}{P.SYSTEM_PROMPT}<｜User｜>Question: {PROBLEM}\n\n{STEP1}<｜Assistant｜>"
    assert "<think>" not in prompt


def test_r1_history_keeps_full_assistant_turns(r1_template):
    chat = ChatTemplate(r1_template, R1_SPECIAL)
    turn1 = "<analyze>\nLet's analyze the Paragraph 1 step by step: ok\n</analyze>\n" + P.OUTPUT_PREFIX + "{Yes}$\n</output>\n"
    users = [P.user_turn(PROBLEM, STEP1, 0), STEP2]
    prompt = chat.prompt_for(build_messages(P.SYSTEM_PROMPT, users, [turn1]), AssistantHeader.TEMPLATE)
    assert prompt == (
        f"{BOS}{P.SYSTEM_PROMPT}<｜User｜>Question: {PROBLEM}\n\n{STEP1}<｜Assistant｜>{turn1}{EOS}"
        f"<｜User｜>{STEP2}<｜Assistant｜>"
    )


def test_r1_header_variants_of_the_released_code(r1_template):
    chat = ChatTemplate(r1_template, R1_SPECIAL)
    messages = build_messages(P.SYSTEM_PROMPT, [P.user_turn(PROBLEM, STEP1, 0)], [])
    assert chat.prompt_for(messages, AssistantHeader.GENERATION_PROMPT).endswith(f"{STEP1}<｜Assistant｜><think>\n")
    assert chat.prompt_for(messages, AssistantHeader.NONE).endswith(f"\n\n{STEP1}")


def _engine(reply_by_stage):
    """A scripted engine that answers by which lead-in the prompt ends with."""

    def respond(prompt, request):
        for suffix, reply in reply_by_stage:
            if prompt.endswith(suffix):
                return reply
        raise AssertionError(f"unexpected prompt end: {prompt[-80:]!r}")

    return ScriptedEngine(respond=respond, verdict=lambda p: (math.log(0.75), math.log(0.25)))


def test_full_mode_stages_are_byte_exact(r1_template):
    chat = ChatTemplate(r1_template, R1_SPECIAL)
    conversation = chat.prompt_for(
        build_messages(P.SYSTEM_PROMPT, [P.user_turn(PROBLEM, STEP1, 0)], []), AssistantHeader.TEMPLATE
    )
    engine = _engine([
        ("step by step: ", "The sum is right.\n</analyze>\n"),
        ("```python\n", "print(2 + 3)\n```\n"),
        ("```\n5\n```\n", "The code confirms it.\n</verify>\n<output>\n**Judgement**: $\\boxed{Yes}$\n</output>\n"),
    ])
    ran = []
    coroutine = verify_step_path(VerifyConfig(reward="raw"), conversation, 1, 0, engine.tokenize, seed=1)
    [step] = drive(engine, [coroutine], [lambda code: ran.append(code) or "5"])

    prompts = [p for p, _ in engine.calls]
    stage1 = conversation + "<analyze>\nLet's analyze the Paragraph 1 step by step: "
    assert prompts[0] == stage1
    verify_lead = stage1 + "The sum is right.\n</analyze>\n<verify>\nLet's use python code to find any potential error:\n```python\n"
    assert prompts[1] == verify_lead
    assert prompts[2] == verify_lead + "print(2 + 3)\n```\n[Code Output]\n\n```\n5\n```\n"
    assert ran == ["print(2 + 3)"]
    params = [r.params for _, r in engine.calls]
    assert params[0].stop == ("</analyze>\n",)
    assert "\n```\n" in params[1].stop and "</output>\n" in params[1].stop
    assert (params[0].temperature, params[0].top_p, params[0].top_k) == (0.6, 0.95, 20)
    assert step.text == (
        "<analyze>\nLet's analyze the Paragraph 1 step by step: The sum is right.\n</analyze>\n"
        "<verify>\nLet's use python code to find any potential error:\n```python\nprint(2 + 3)\n```\n"
        "[Code Output]\n\n```\n5\n```\nThe code confirms it.\n</verify>\n"
        "<output>\n**Judgement**: $\\boxed{" + step.verdict + "}$\n</output>\n"
    )
    assert abs(step.reward - 0.75) < 1e-12
    assert step.code_runs[0].output == "5"


def test_verdict_is_read_right_after_the_output_prefix(r1_template):
    seen = []
    engine = ScriptedEngine(
        respond=lambda p, r: "fine\n</analyze>\n",
        verdict=lambda p: seen.append(p) or (math.log(0.2), math.log(0.6)),
    )
    cfg = VerifyConfig(mode="analyze", reward="raw")
    [step] = drive(engine, [verify_step_path(cfg, "CONV", 2, 0, engine.tokenize, seed=0)], [str])
    assert seen[0] == "CONV<analyze>\nLet's analyze the Paragraph 2 step by step: fine\n</analyze>\n<output>\n**Judgement**: $\\boxed{"
    assert abs(step.reward - 0.25) < 1e-12
    assert step.p_yes == 0.2 and abs(step.p_no - 0.6) < 1e-12


def test_direct_mode_judges_at_once():
    engine = ScriptedEngine(respond=lambda p, r: "unused")
    cfg = VerifyConfig(mode="direct")
    [step] = drive(engine, [verify_step_path(cfg, "CONV", 1, 0, engine.tokenize, seed=0)], [str])
    assert engine.calls == []
    assert step.text in ("<output>\n**Judgement**: $\\boxed{Yes}$\n</output>\n", "<output>\n**Judgement**: $\\boxed{No}$\n</output>\n")
    assert cfg.mode.system_prompt == P.DIRECT_SYSTEM_PROMPT
