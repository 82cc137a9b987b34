"""The teacher's strings for synthesising training data, byte for byte as GenPRM's released code sends them.

The teacher (QwQ-32B in the paper) critiques a whole policy solution in one assistant turn, writing
``### Paragraph k`` sections with ``<analyze>`` and ``<verify>`` parts whose Python genprm runs; after
the last verification a fixed "Final Conclusion" text asks for the earliest wrong paragraph as
``\\boxed{INDEX}``. Whitespace matters: the user prompt has two spaces after "in the solution." and a
space before two line breaks, as released. Source: RyanLiu112/GenPRM ``src/rationale_generation``;
see ``docs/synthesis-format.md``. Nothing else in genprm spells these strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from genprm.protocol.prompts import CODE_BLOCK_END
from genprm.protocol.synthesis import strip_step_prefix

TEACHER_SYSTEM_PROMPT = (
    "You are a math teacher. Your task is to review and critique the paragraphs in solution step by step "
    "with python code."
)

# ``{problem}`` and ``{solution_section}`` are filled; ``{ID}``, ``{CODE}`` and ``{INDEX}`` stay literally.
TEACHER_USER_PROMPT = (
    "The following is the math problem and a solution (split into paragraphs, enclosed with tags and indexed "
    "from 1):\n[Math Problem]\n\n{problem}\n\n[Solution]\n\n{solution_section}\n\n"
    "Your task is to verify the correctness of paragraph in the solution.  Split your verification by "
    "`### Paragraph {{ID}}`. \n\n"
    "Your verification for each paragraph should be constructed by 2 parts, wrapped by `<analyze></analyze>` "
    "and `<verify></verify>` separately.\n\n"
    "1. in `<analyze>` part, you need to analyze the reasoning process and explain why the paragraph is correct "
    "or incorrect in detail. \n"
    "2. in `<verify>` part, you must write **Python code** in the form of ```python\n{{CODE}}\n``` to verify "
    "every details that can be verified by code. You can import PyPI (i.e., `sympy`, `scipy` and so on) to "
    "implement complicated calculation. Make sure to print the critic results in the code. Every code will be "
    "executed automatically by system. You need to analyze the `[Code Output]` after code executing.\n\n"
    "> Pay attention that you must follow the format of ```python\n{{CODE}}\n``` when you write the code, "
    "otherwise the code will not be executed.\n\n"
    "After all verifications, if you identify an error in a paragraph, return the **index of the paragraph "
    "where the earliest error occurs**. Otherwise, return the **index of -1 (which typically denotes \"not "
    "found\")**. Please put your final answer (i.e., the index) within box in the form of `$\\boxed{{INDEX}}$`."
)

PARAGRAPH_SECTION = "<paragraph_{k}>\n{step}\n</paragraph_{k}>"
PARAGRAPH_JOIN = "\n\n"
PARAGRAPH_HEADING = "### Paragraph {k}"

TEACHER_PREFILL = "<think>\n### Paragraph 1\n<analyze>\n"
THINK_END = "</think>"
TEACHER_STOPS = (CODE_BLOCK_END, THINK_END)
"""A code fence closing (run the block, splice its output) and the end of the teacher's thinking."""

VERIFY_CLOSE = "</verify>"
FINAL_CONCLUSION = (
    "</verify>\n### Final Conclusion\n\nAccording to the requirement, I need to return the **index of the "
    "paragraph where the earliest error occurs**. Otherwise, return the **index of -1 (which typically denotes "
    "\"not found\")**.\n\nANSWER: \\boxed"
)
"""Appended after the text is cut at its last ``</verify>``; the index completions continue it."""
INDEX_STOP = "}"
NO_ERROR_INDEX = -1

def solution_section(steps: Sequence[str]) -> str:
    """The solution as ``<paragraph_k>`` sections, prefixes removed, ``k`` from 1."""
    return PARAGRAPH_JOIN.join(
        PARAGRAPH_SECTION.format(k=k, step=strip_step_prefix(step)) for k, step in enumerate(steps, start=1)
    )


def teacher_user_prompt(problem: str, steps: Sequence[str]) -> str:
    """The user turn asking the teacher to critique every paragraph of ``steps``."""
    return TEACHER_USER_PROMPT.format(problem=problem, solution_section=solution_section(steps))


def teacher_messages(problem: str, steps: Sequence[str]) -> list[dict[str, str]]:
    """System and user turns of a critique; the assistant turn starts with :data:`TEACHER_PREFILL`."""
    return [
        {"role": "system", "content": TEACHER_SYSTEM_PROMPT},
        {"role": "user", "content": teacher_user_prompt(problem, steps)},
    ]


def paragraph_heading(k: int) -> str:
    return PARAGRAPH_HEADING.format(k=k)


_BOXED_VERDICT = re.compile(r"\\boxed\{\s*(yes|no)\s*\}", re.IGNORECASE)
_FENCED = re.compile(r"```.*?```", re.DOTALL)


def normalise_verdict_case(text: str) -> str:
    r"""``\boxed{yes}``, ``\boxed{YES}`` ... become ``\boxed{Yes}`` / ``\boxed{No}``, outside code fences.

    The released code normalises the casing in the teacher's text; code and code outputs are left as
    they ran, so an exported block stays the one that produced its output.
    """

    def fix(part: str) -> str:
        return _BOXED_VERDICT.sub(lambda m: "\\boxed{" + m.group(1).capitalize() + "}", part)

    pieces, at = [], 0
    for fence in _FENCED.finditer(text):
        pieces += [fix(text[at : fence.start()]), fence.group(0)]
        at = fence.end()
    pieces.append(fix(text[at:]))
    return "".join(pieces)


_INDEX = re.compile(r"^\s*\{\s*(-?\d+)\s*\}?\s*$")


def parse_index(completion: str, paragraphs: int) -> int | None:
    """The earliest-error index a completion after :data:`FINAL_CONCLUSION` gives (``{3}``, ``{-1}``).

    ``None`` when it is not one integer in braces or names no paragraph (0, or past the last one).
    """
    match = _INDEX.match(completion)
    if match is None:
        return None
    index = int(match.group(1))
    if index == NO_ERROR_INDEX or 1 <= index <= paragraphs:
        return index
    return None
