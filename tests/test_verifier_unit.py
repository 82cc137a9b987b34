"""Path and solution semantics on a scripted engine (the unit is the protocol, not the model)."""

from __future__ import annotations

import math

import pytest

from genprm.engines.scripted import ScriptedEngine
from genprm.protocol import prompts as P
from genprm.verifier import SolutionVerifier, VerifyConfig
from genprm.verifier.driver import drive
from genprm.verifier.path import verify_step_path


def _run(engine, config, conversation="CONV", runner=lambda code: "42"):
    return drive(engine, [verify_step_path(config, conversation, 1, 0, engine.tokenize, seed=3)], [runner])[0]


def test_three_code_rounds_then_the_verify_part_is_dropped():
    def respond(prompt, request):
        if prompt.endswith("step by step: "):
            return "looks fine\n</analyze>\n"
        return "x = 1\n```\n"  # the model never reaches its judgement

    engine = ScriptedEngine(respond=respond)
    runs = []
    step = _run(engine, VerifyConfig(), runner=lambda code: runs.append(code) or "1")
    assert len(runs) == 3 and step.degraded == "code-rounds"
    assert step.text.startswith("<analyze>\nLet's analyze the Paragraph 1 step by step: looks fine\n</analyze>\n<output>")
    assert "<verify>" not in step.text
    assert len(step.code_runs) == 3


def test_token_budget_degrades_to_analysis():
    def respond(prompt, request):
        if prompt.endswith("step by step: "):
            return "ok\n</analyze>\n"
        return "y" * 500

    step = _run(ScriptedEngine(respond=respond), VerifyConfig(max_step_tokens=64))
    assert step.degraded == "token-budget"
    assert step.text.endswith(P.OUTPUT_PREFIX + "{" + step.verdict + "}$\n</output>\n")
    assert "<verify>" not in step.text


def test_no_code_block_gets_the_upstream_format_error():
    def respond(prompt, request):
        if prompt.endswith("step by step: "):
            return "ok\n</analyze>\n"
        if prompt.endswith("```python\n"):
            return "just words\n```\n"
        return "done\n</verify>\n<output>"

    ran = []
    step = _run(ScriptedEngine(respond=respond), VerifyConfig(), runner=lambda c: ran.append(c) or "")
    # The fence the model closed holds "just words", which is a (bad) python block: it is run.
    assert ran == ["just words"]
    assert "[Code Output]\n\n```\n\n```\n" in step.text


def test_code_without_execution_never_runs_code():
    def respond(prompt, request):
        if prompt.endswith("step by step: "):
            return "ok\n</analyze>\n"
        assert "\n```\n" not in request.params.stop
        return "print(1)\n```\n[Code Output]\n\n```\n1\n```\n</verify>\n<output>\n**Judgement**"

    step = _run(ScriptedEngine(respond=respond), VerifyConfig(mode="code-no-exec"),
                runner=lambda c: pytest.fail("code ran"))
    assert "[Code Output]\n\n```\n1\n```\n</verify>\n<output>\n**Judgement**: $\\boxed{" in step.text


def _solution_engine(verdicts, max_batch=1):
    """Analysis-only replies; the verdict depends on which step is being judged."""

    def verdict(prompt):
        k = int(prompt.rsplit("Paragraph ", 1)[1].split(" ", 1)[0])
        p = verdicts[k - 1]
        return (math.log(p), math.log(1 - p)) if p is not None else (None, None)

    return ScriptedEngine(respond=lambda p, r: "fine\n</analyze>\n", verdict=verdict, max_batch=max_batch)


def test_solution_rewards_first_error_and_unreadable_steps():
    engine = _solution_engine([0.9, None, 0.2, 0.8])
    result = SolutionVerifier(engine, VerifyConfig(n=2, mode="analyze", reward="raw")).verify("p", ["a", "b", "c", "d"])
    assert result.step_rewards[0] == pytest.approx(0.9)
    assert result.step_rewards[1] is None and result.step_status[1] == "unreadable"
    assert not any(p.readable for p in result.steps[1].paths)
    assert result.first_error == 2
    assert result.step_status == ["scored", "unreadable", "scored", "scored"]


def test_stop_at_first_error_keeps_first_error_and_skips_the_rest():
    engine = _solution_engine([0.9, 0.1, 0.9])
    full = SolutionVerifier(engine, VerifyConfig(mode="analyze")).verify("p", ["a", "b", "c"])
    calls = len(engine.calls)
    short = SolutionVerifier(engine, VerifyConfig(mode="analyze", stop_at_first_error=True)).verify("p", ["a", "b", "c"])
    assert full.first_error == short.first_error == 1
    assert short.step_status == ["scored", "scored", "skipped"] and short.stopped_early
    assert len(engine.calls) - calls == 2


def test_independent_paths_keep_their_own_history_and_shared_paths_follow_path_0():
    engine = _solution_engine([0.9, 0.9])
    independent = SolutionVerifier(engine, VerifyConfig(n=3, mode="analyze", seed=1)).verify("p", ["a", "b"])
    step2_prompts = [p for p, _ in engine.calls if "Paragraph 2" in p]
    for j, prompt in enumerate(step2_prompts):
        assert independent.steps[0].paths[j].text in prompt
    engine.calls.clear()
    SolutionVerifier(engine, VerifyConfig(n=3, mode="analyze", paths="shared", seed=1)).verify("p", ["a", "b"])
    shared_step2 = [p for p, _ in engine.calls if "Paragraph 2" in p]
    assert len(set(shared_step2)) == 1  # all paths continue the same (path 0's) history


def test_batch_engines_get_all_paths_of_a_step_at_once():
    engine = _solution_engine([0.9], max_batch=64)
    SolutionVerifier(engine, VerifyConfig(n=4, mode="analyze")).verify("p", ["a"])
    assert engine.batches == [4]


def test_config_rejects_typos_and_bad_values():
    with pytest.raises(ValueError):
        VerifyConfig(nn=3)
    with pytest.raises(ValueError):
        VerifyConfig(n=0)
    with pytest.raises(ValueError, match="first_turn"):
        VerifyConfig(first_turn="fancy")


def test_config_checks_the_cascade():
    assert VerifyConfig(cascade="direct, analyze,full").levels == (P.Mode.DIRECT, P.Mode.ANALYZE, P.Mode.FULL)
    assert VerifyConfig(mode="analyze").levels == (P.Mode.ANALYZE,)
    for bad, reason in [("full,analyze", "only the last"), ("analyze,analyze", "once"), ("", "at least one"),
                        ("direct,fancy", "unknown mode 'fancy'")]:
        with pytest.raises(ValueError, match=reason):
            VerifyConfig(cascade=bad)
