"""The policy-side strings of GenPRM's training-data synthesis, byte for byte as released.

Stage 1 forces the policy to write numbered steps by prefilling its turn with ``Step 1: `` and
splits the response on ``\\nStep ``; stage 2 continues a solution's first t steps, joined by a blank
line, after ``\\n\\nStep {t+1}: ``. Prompts are the chat template's rendering of the messages before
the assistant turn, then the assistant header as an assistant turn renders in training, then the
prefill: the same text as rendering the conversation with the prefill as the assistant's content,
no generation prompt, and the trailing end-of-turn cut (what the released code did), but without
guessing the end-of-turn text. Source: arXiv 2504.00891 §3.3, RyanLiu112/GenPRM
``src/reward_generation``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from genprm.protocol.chat import ChatTemplate, Message

COT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""The released synthesis script's chain-of-thought system prompt for Qwen policies (its ``default``)."""

STEP_PREFILL = "Step 1: "
STEP_SEPARATOR = "\nStep "
"""What a response is split on (the released ``llm_step_tag``)."""
STEP_JOIN = "\n\n"
"""What the steps of a rollout prefix are joined with."""
NEXT_STEP = "\n\nStep {number}: "
"""What a rollout prefix ends with: the start of the next step (``number`` counts from 1)."""

_STEP_LABEL = re.compile(r"^\s*Step \d+:\s?")


def split_steps(response: str) -> list[str]:
    """The steps of a policy response generated after :data:`STEP_PREFILL` (the prefill is put back).

    Each step keeps its ``Step k: `` prefix and loses surrounding whitespace; empty pieces go.
    """
    pieces = (STEP_PREFILL + response).split(STEP_SEPARATOR)
    steps = [pieces[0].strip()] + [("Step " + piece).strip() for piece in pieces[1:]]
    return [step for step in steps if strip_step_prefix(step)]


def strip_step_prefix(step: str) -> str:
    """A step without its leading ``Step k: `` (as ProcessBench steps and policy answers at inference look)."""
    return _STEP_LABEL.sub("", step, count=1).strip()


def rollout_prefix(steps: Sequence[str], t: int) -> str:
    """The assistant text a rollout from step ``t`` continues: steps 1..t, then the next step's label.

    ``t = 0`` is the empty prefix (the problem's own pass@1 under the completer): just the prefill.
    """
    if t == 0:
        return STEP_PREFILL
    if not 0 < t <= len(steps):
        raise ValueError(f"t={t}: a prefix holds 1..{len(steps)} steps")
    return STEP_JOIN.join(steps[:t]) + NEXT_STEP.format(number=t + 1)


def policy_messages(system_prompt: str, problem: str) -> list[Message]:
    """The policy's conversation before its turn; no system message when ``system_prompt`` is empty."""
    messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": problem}]


def continuation_prompt(chat: ChatTemplate, messages: list[Message], assistant_prefix: str) -> str:
    """The prompt that makes the model continue an assistant turn that starts with ``assistant_prefix``."""
    return chat.render(messages) + chat.assistant_header(messages) + assistant_prefix


def final_step(response: str) -> str:
    """The last step of a response or continuation without its label: what its final answer is read
    from (the label's number must not pass for an answer).
    """
    last = response.rsplit(STEP_SEPARATOR, 1)
    return strip_step_prefix("Step " + last[1] if len(last) > 1 else last[0])
