"""The policy's prompts: header + prefill equals the released 'render with the prefill, cut the end of turn'."""

from __future__ import annotations

import pytest
from tests.conftest import R1_SPECIAL, named_model_path

from genprm.engines.scripted import CHATML
from genprm.protocol.chat import ChatTemplate
from genprm.protocol.synthesis import (
    COT_INSTRUCTION,
    STEP_PREFILL,
    continuation_prompt,
    final_step,
    policy_messages,
    rollout_prefix,
)

STEPS = ["Step 1: Half of 48 is 24.", "Step 2: 48 + 24 = 72.", "Step 3: The answer is \\boxed{72}."]


def _released(chat: ChatTemplate, messages: list[dict[str, str]], prefix: str, end_of_turn: str) -> str:
    """The released way: render the assistant turn holding the prefix, then cut the end-of-turn text."""
    rendered = chat.render([*messages, {"role": "assistant", "content": prefix}])
    assert rendered.endswith(end_of_turn), rendered[-40:]
    return rendered[: -len(end_of_turn)]


def qwen_template() -> str:
    path = named_model_path("qwen2.5-coder-0.5b-instruct")
    if path is None:
        pytest.skip("qwen2.5-coder-0.5b-instruct not in the model folder")
    import llama_cpp

    return str(llama_cpp.Llama(str(path), vocab_only=True, verbose=False).metadata["tokenizer.chat_template"])


@pytest.mark.parametrize("system", [COT_INSTRUCTION, ""])
@pytest.mark.parametrize("t", [0, 1, 2])
def test_qwen_prompts_continue_the_assistant_turn(system: str, t: int) -> None:
    chat = ChatTemplate(qwen_template())
    messages = policy_messages(system, "Natalia sold 48 clips. How many?")
    prefix = rollout_prefix(STEPS, t)
    prompt = continuation_prompt(chat, messages, prefix)
    assert prompt == _released(chat, messages, prefix, "<|im_end|>\n")
    assert prompt.endswith("<|im_start|>assistant\n" + prefix)


@pytest.mark.parametrize("t", [0, 2])
def test_r1_distill_prompts_continue_the_assistant_turn(r1_template: str, t: int) -> None:
    chat = ChatTemplate(r1_template, R1_SPECIAL)
    messages = policy_messages(COT_INSTRUCTION, "Natalia sold 48 clips. How many?")
    prefix = rollout_prefix(STEPS, t)
    prompt = continuation_prompt(chat, messages, prefix)
    assert prompt == _released(chat, messages, prefix, R1_SPECIAL["eos_token"])
    assert "<think>" not in prompt  # not the generation prompt's line: the training rendering's header


def test_chatml_and_the_rollout_prefixes():
    chat = ChatTemplate(CHATML)
    messages = policy_messages("", "P")
    assert messages == [{"role": "user", "content": "P"}]
    assert continuation_prompt(chat, messages, STEP_PREFILL) == "<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\nStep 1: "
    assert rollout_prefix(STEPS, 0) == "Step 1: "
    assert rollout_prefix(STEPS, 1) == "Step 1: Half of 48 is 24.\n\nStep 2: "
    assert rollout_prefix(STEPS, 2) == "Step 1: Half of 48 is 24.\n\nStep 2: 48 + 24 = 72.\n\nStep 3: "
    with pytest.raises(ValueError):
        rollout_prefix(STEPS, 4)


def test_the_final_step_is_where_the_answer_is_read():
    assert final_step("so 24.\nStep 3: The answer is 72.") == "The answer is 72."
    assert final_step("The answer is 72.") == "The answer is 72."


def test_the_step_label_is_not_graded():
    assert final_step("Step 1: x") == "x"
    assert final_step("a\n\nStep 5: she has nothing left.") == "she has nothing left."
