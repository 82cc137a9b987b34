"""Model-written code runs in the real sandbox; its output lands in the transcript; namespaces follow paths."""

from __future__ import annotations

import re
from pathlib import Path

from genprm.engines.scripted import ScriptedEngine
from genprm.verifier import SolutionVerifier, VerifyConfig


def _engine():
    """Step 1's code defines a value; step 2's code (a later turn, a new request) prints it."""

    def respond(prompt, request):
        if prompt.endswith("step by step: "):
            return "checking\n</analyze>\n"
        if prompt.endswith("```python\n"):
            if "Paragraph 1" in prompt.rsplit("<analyze>", 1)[1]:
                return "value = 6 * 7\nprint('set')\n```\n"
            return "print(value)\n```\n"
        return "done\n</verify>\n<output>"

    return ScriptedEngine(respond=respond)


def test_code_output_is_spliced_and_namespace_survives_across_steps():
    result = SolutionVerifier(_engine(), VerifyConfig(n=2)).verify("p", ["a", "b"])
    for path in result.steps[0].paths:
        assert "```\n[Code Output]\n\n```\nset\n```\ndone\n</verify>\n" in path.text
    for path in result.steps[1].paths:
        [run] = path.code_runs
        assert (run.code, run.output) == ("print(value)", "42")


def test_code_errors_are_data_in_the_upstream_wording():
    def respond(prompt, request):
        if prompt.endswith("step by step: "):
            return "checking\n</analyze>\n"
        if prompt.endswith("```python\n"):
            return "print(1/0)\n```\n"
        return "done\n</verify>\n<output>"

    result = SolutionVerifier(ScriptedEngine(respond=respond), VerifyConfig()).verify("p", ["a"])
    [run] = result.steps[0].paths[0].code_runs
    assert run.output == "Code execute Error: ZeroDivisionError: division by zero"
    assert "[Code Output]\n\n```\nCode execute Error: ZeroDivisionError: division by zero\n```\n" in result.steps[0].paths[0].text


def test_the_sandbox_guide_example_runs_as_its_comments_say():
    guide = Path(__file__).resolve().parents[1] / "docs" / "sandbox.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.DOTALL)
    [snippet] = [b for b in blocks if "CodeSession" in b]
    names: dict = {}
    exec(compile(snippet, str(guide), "exec"), names)
    session = names["s"]
    assert session.restarts == 1 and session.replayed == 1 and session.replay_failures == 0  # the timeout
    assert list(session.history) == ["x = 41", "print(x + 1)"]
    with names["branch"] as branch:
        assert branch.run("print(x)") == "41"  # the branch starts from the replayed namespace
