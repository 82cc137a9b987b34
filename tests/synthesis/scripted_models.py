"""Scripted policy, completer and teacher for pipeline tests (the registered fake engine underneath).

The problem: 48 clips in April, half as many in May; the answer is 72. The policy's draw with an even
seed is right; an odd seed makes step 2 wrong (70). A rollout continues right unless its prefix holds
the wrong step. The teacher writes one well-formed ``### Paragraph k`` section per paragraph and
flags the paragraph holding ``70``, so its index agrees with the Monte-Carlo labels.
"""

from __future__ import annotations

import re

from genprm.engines.base import GenerationRequest
from genprm.engines.scripted import ScriptedEngine
from genprm.evaluation.chat import ChatModel
from genprm.synthesis.pipeline import Roles
from genprm.synthesis.problems import Problem

PROBLEM = Problem("clips", "Natalia sold 48 clips in April and half as many in May. How many in all?", "72", 0)
EASY = Problem("easy", "What is 2 + 2?", "4", 1)


def policy_reply(prompt: str, request: GenerationRequest) -> str:
    seed = request.params.seed or 0
    assistant = prompt.rsplit("<|im_start|>assistant\n", 1)[-1]
    if assistant == "Step 1: ":
        if "2 + 2" in prompt:
            return "2 + 2 = 4.\nStep 2: The answer is \\boxed{4}."
        total = 72 if seed % 2 == 0 else 70
        return (f"In May she sold 48 / 2 = 24 clips (draw {seed % 7}).\nStep 2: In all 48 + 24 = {total}.\n"
                f"Step 3: The answer is \\boxed{{{total}}}.")
    wrong = "= 70" in assistant
    return f"The answer is \\boxed{{{70 if wrong else 72}}}."


def teacher_reply(prompt: str, request: GenerationRequest) -> str:
    if prompt.endswith("ANSWER: \\boxed"):
        solution = prompt.split("[Solution]", 1)[1]
        paragraphs = re.findall(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\d+>", solution, re.DOTALL)
        wrong = [k for k, text in paragraphs if "= 70" in text]
        return "{" + (wrong[0] if wrong else "-1") + "}"
    solution = prompt.split("[Solution]", 1)[1]
    count = len(re.findall(r"<paragraph_\d+>", solution))
    assistant = prompt.rsplit("<think>\n", 1)[-1]
    k = assistant.count("### Paragraph")
    if not assistant.endswith("```\n"):
        return _section_body(k)
    # a code output was spliced: interpret it, then the next section up to its code block
    if k >= count:
        return "The output agrees with the paragraph.\n</verify>\n</think>"
    return f"The output agrees with the paragraph.\n</verify>\n### Paragraph {k + 1}\n<analyze>\n" + _section_body(k + 1)


def _section_body(k: int) -> str:
    return f"Paragraph {k} computes its value.\n</analyze>\n<verify>\n```python\nprint({k} * 2)\n```\n"


class ScriptedRoles(Roles):
    """The three roles on scripted engines (policy and completer share one, as one model would)."""

    def __init__(self) -> None:
        super().__init__({})
        self.policy = ScriptedEngine(respond=policy_reply)
        self.teacher = ScriptedEngine(respond=teacher_reply)

    def chat(self, role: str) -> ChatModel:
        return ChatModel(self.teacher if role == "teacher" else self.policy)
