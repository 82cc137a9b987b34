"""Reading OpenRLHF's queries: the response after the prompt, the problem in the prompt, the steps."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from genprm.serving import QueryParser
from genprm.serving.queries import QueryError

from .support import chatml_prompt

PROMPTS = {
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "deepseek": "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n",
    "gemma": "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "mistral": "<s>[INST] What is 2+2? [/INST]",
    "phi": "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n",
    "plain": "  What is 2+2?  ",
}


@pytest.mark.parametrize("family", sorted(PROMPTS))
def test_the_problem_is_the_prompts_last_user_turn(family):
    assert QueryParser().problem_of(PROMPTS[family]) == ("What is 2+2?", True)


def test_the_last_user_turn_wins_in_a_multi_turn_prompt():
    prompt = ("<|im_start|>user\nfirst<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
              "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert QueryParser().problem_of(prompt)[0] == "What is 2+2?"


def test_a_problem_template_drops_the_instruction_and_says_when_it_does_not_match():
    parser = QueryParser(problem_template="{problem}\nPlease reason step by step, and put your final answer "
                                          "within \\boxed{}.")
    prompt = "<|im_start|>user\nWhat is 2+2?\nPlease reason step by step, and put your final answer within " \
             "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    assert parser.problem_of(prompt) == ("What is 2+2?", True)
    assert parser.problem_of(chatml_prompt("Just a question")) == ("Just a question", False)
    with pytest.raises(ValidationError):
        QueryParser(problem_template="no placeholder")


def test_the_response_is_the_query_after_its_prompt_without_special_tokens():
    prompt = PROMPTS["chatml"]
    query = prompt + "Two plus two.\n\nIt is $\\boxed{4}$.<|im_end|><|endoftext|><|endoftext|>"
    assert QueryParser().response_of(query, prompt) == "Two plus two.\n\nIt is $\\boxed{4}$."
    assert QueryParser(strip_tokens=("<|im_end|>",)).response_of(query, prompt).endswith("<|endoftext|>")
    # a decode round trip that changed the prompt's edges still finds the response
    assert QueryParser().response_of("<s>" + prompt.strip() + "Four.", "  " + prompt) == "Four."
    with pytest.raises(QueryError):
        QueryParser().response_of("unrelated text", prompt)


def test_steps_are_paragraphs_or_step_sections_or_a_pattern():
    text = "Intro line.\n\nStep 1: add.\n2+2=4\n\n## Step 2: answer\n**Step 3** done"
    assert QueryParser().steps_of(text) == ["Intro line.", "Step 1: add.\n2+2=4", "## Step 2: answer\n**Step 3** done"]
    assert QueryParser(split="steps").steps_of(text) == [
        "Intro line.", "Step 1: add.\n2+2=4", "## Step 2: answer", "**Step 3** done"]
    assert QueryParser(step_pattern=r"\n-{3,}\n").steps_of("a\n---\nb\n----\nc") == ["a", "b", "c"]
    with pytest.raises(ValidationError):
        QueryParser(step_pattern="(")
