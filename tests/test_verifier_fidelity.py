"""Fidelity of one path's turn to the released loop: the step's token budget counts the whole step text,
and an end-of-sequence never drops the verification (only the call and token budgets do).

The scripted engine has one token per character, so budgets are character counts here.
"""

from __future__ import annotations

import math

from genprm.engines.scripted import ScriptedEngine
from genprm.protocol import prompts as P
from genprm.verifier import VerifyConfig
from genprm.verifier.driver import drive
from genprm.verifier.path import verify_step_path

CONV = "CONV|"
LEAD = CONV + P.analyze_prefix(1)


def _engine(reply_by_stage):
    def respond(prompt, request):
        for suffix, reply in reply_by_stage:
            if prompt.endswith(suffix):
                return reply
        raise AssertionError(f"unexpected prompt end: {prompt[-80:]!r}")

    return ScriptedEngine(respond=respond, verdict=lambda p: (math.log(0.75), math.log(0.25)))


def _run(engine, outputs, **config):
    ran: list[str] = []

    def run_code(code: str) -> str:
        ran.append(code)
        return outputs.pop(0)

    cfg = VerifyConfig(reward="raw", **config)
    [step] = drive(engine, [verify_step_path(cfg, CONV, 1, 0, engine.tokenize, seed=3)], [run_code])
    return step, ran


def test_the_budget_counts_forced_text_and_spliced_code_output():
    long_output = "x" * 150
    engine = _engine([
        ("step by step: ", "ok\n</analyze>\n"),
        ("```python\n", "print('x' * 150)\n```\n"),
        ("```\n" + long_output + "\n```\n", "fine\n</verify>\n<output>"),
    ])
    step, _ = _run(engine, [long_output], max_step_tokens=400)
    prompts = [p for p, _ in engine.calls]
    budgets = [r.params.max_tokens for _, r in engine.calls]
    assert budgets == [400 - (len(p) - len(CONV)) for p in prompts]  # all of the turn so far counts
    assert budgets[2] < 400 - len("ok\n</analyze>\n") - len("print('x' * 150)\n```\n")  # not just generated text
    assert step.degraded is None


def test_spliced_output_past_the_budget_drops_the_verify_part():
    long_output = "y" * 300
    engine = _engine([
        ("step by step: ", "ok\n</analyze>\n"),
        ("```python\n", "print('y' * 300)\n```\n"),
    ])
    step, ran = _run(engine, [long_output], max_step_tokens=300)
    assert ran == ["print('y' * 300)"] and len(engine.calls) == 2  # no call once the output filled the budget
    assert step.degraded == "token-budget"
    assert step.text.startswith(P.analyze_prefix(1) + "ok\n</analyze>\n<output>")


def test_an_end_of_sequence_in_the_analysis_closes_it_and_verification_goes_on():
    engine = _engine([
        ("step by step: ", "The sum is right."),  # no </analyze>: the model ended its sequence
        ("```python\n", "print(2 + 3)\n```\n"),
        ("```\n5\n```\n", "Confirmed.\n</verify>\n<output>"),
    ])
    step, ran = _run(engine, ["5"])
    prompts = [p for p, _ in engine.calls]
    assert prompts[1] == LEAD + "The sum is right." + P.ANALYZE_END + P.VERIFY_PREFIX
    assert ran == ["print(2 + 3)"] and step.degraded is None
    assert "[Code Output]\n\n```\n5\n```\nConfirmed.\n</verify>\n<output>" in step.text


def test_an_end_of_sequence_in_the_verify_stage_runs_the_last_block_and_calls_again():
    engine = _engine([
        ("step by step: ", "ok\n</analyze>\n"),
        ("```python\n", "print(2 + 3)\n```"),  # fence closed, then end-of-sequence (no stop string)
        ("```\n5\n```\n", "Confirmed.\n</verify>\n<output>"),
    ])
    step, ran = _run(engine, ["5"])
    prompts = [p for p, _ in engine.calls]
    assert ran == ["print(2 + 3)"]
    assert prompts[2].endswith("print(2 + 3)\n```\n" + P.code_output_block("5"))
    assert step.degraded is None and step.text.count("[Code Output]") == 1


def test_only_the_call_budget_degrades_a_verify_stage_that_never_reaches_its_judgement():
    engine = _engine([
        ("step by step: ", "ok\n</analyze>\n"),
        ("```python\n", "print(1)\n```\n"),
        ("```\n1\n```\n", "print(1)\n```\n"),
    ])
    step, ran = _run(engine, ["1", "1", "1"], max_code_rounds=3)
    assert len(ran) == 3 and step.degraded == "code-rounds"
    assert step.text == P.analyze_prefix(1) + "ok\n</analyze>\n" + P.OUTPUT_PREFIX + P.verdict_close(step.verdict)
