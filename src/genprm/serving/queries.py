"""Turn what an RL framework sends into what the verifier needs: a problem and a list of steps.

OpenRLHF sends ``query`` (the prompt and the policy's response, decoded with special tokens kept) and
``prompts`` (the prompt alone). The response is ``query[len(prompt):]`` without the policy's special
tokens; the problem is the prompt's last user turn (ChatML, Llama 3, DeepSeek, Gemma, Mistral and Phi
markup are recognised), optionally matched against a template such as ``"{problem}\\nPlease reason
step by step"`` to drop the instruction around it; the steps are the response's paragraphs (blank
lines) or its ``Step N`` sections.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genprm.protocol.parse import split_paragraphs

DEFAULT_SPECIAL_TOKENS = (
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "</s>", "<eos>",
    "<end_of_turn>", "<pad>", "<|pad|>", "<｜end▁of▁sentence｜>",
)
"""End-of-turn, end-of-text and padding tokens of common policy families, stripped from responses."""

# (opening of a user turn, what closes it), per chat markup; the last user turn is the problem.
_USER_TURNS = (
    (r"<\|im_start\|>user\s*\n", r"<\|im_end\|>"),
    (r"<\|start_header_id\|>user<\|end_header_id\|>\s*", r"<\|eot_id\|>"),
    (r"<｜User｜>", r"<｜Assistant｜>|<｜end▁of▁sentence｜>"),
    (r"<start_of_turn>user\s*\n", r"<end_of_turn>"),
    (r"\[INST\]", r"\[/INST\]"),
    (r"<\|user\|>\s*\n?", r"<\|end\|>|</s>"),
)
_STEP_HEADER = r"\n(?=[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?Step[ \t]*\d+)"
"""Where a ``Step N`` section starts: a line opening with ``Step 3``, ``## Step 3`` or ``**Step 3``."""


class QueryError(ValueError):
    """A query that cannot be read; the message says why (the caller names the field)."""


class QueryParser(BaseModel):
    """How a policy's prompt and response become a problem and steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strip_tokens: tuple[str, ...] = Field(
        DEFAULT_SPECIAL_TOKENS, description="Special tokens removed from the response wherever they appear."
    )
    problem_template: str | None = Field(
        None,
        description="The user turn's shape around the problem, with '{problem}' where it is, e.g. "
        "'{problem}\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'.",
    )
    split: Literal["paragraphs", "steps"] = Field(
        "paragraphs", description="paragraphs: split on blank lines; steps: before each 'Step N' line."
    )
    step_pattern: str | None = Field(None, description="A regular expression to split steps on (overrides split).")

    @field_validator("problem_template")
    @classmethod
    def _one_placeholder(cls, template: str | None) -> str | None:
        if template is not None and template.count("{problem}") != 1:
            raise ValueError("must contain '{problem}' exactly once")
        return template

    @field_validator("step_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return pattern

    @cached_property
    def _template(self) -> re.Pattern[str] | None:
        if self.problem_template is None:
            return None
        before, after = self.problem_template.split("{problem}")
        return re.compile(re.escape(before.strip()) + r"\s*(?P<problem>.*?)\s*" + re.escape(after.strip()), re.S)

    @cached_property
    def _splitter(self) -> re.Pattern[str] | None:
        if self.step_pattern is not None:
            return re.compile(self.step_pattern)
        return re.compile(_STEP_HEADER) if self.split == "steps" else None

    def response_of(self, query: str, prompt: str) -> str:
        """The policy's response: ``query`` after ``prompt``, its special tokens removed."""
        if query.startswith(prompt):
            response = query[len(prompt) :]
        else:
            # A decode round trip may change the prompt's edges (a BOS token, leading spaces).
            core = prompt.strip()
            at = query.find(core) if core else -1
            if at < 0:
                raise QueryError("does not start with its prompt (prompts[i]); send query = prompt + response")
            response = query[at + len(core) :]
        return self.clean(response)

    def clean(self, response: str) -> str:
        """``response`` without the policy's special tokens and surrounding whitespace."""
        for token in self.strip_tokens:
            response = response.replace(token, "")
        return response.strip()

    def problem_of(self, prompt: str) -> tuple[str, bool]:
        """The problem in ``prompt`` and whether ``problem_template`` matched it (``True`` without one)."""
        text = _last_user_turn(prompt)
        if self._template is None:
            return text, True
        match = self._template.fullmatch(text.strip())
        if match is None or not match.group("problem").strip():
            return text, False
        return match.group("problem").strip(), True

    def steps_of(self, response: str) -> list[str]:
        """The response's steps, in order, without empty ones."""
        if self._splitter is None:
            return split_paragraphs(response)
        return [part.strip() for part in self._splitter.split(response) if part.strip()]


def _last_user_turn(prompt: str) -> str:
    """The content of the prompt's last user turn in a known chat markup, else the whole prompt."""
    for opening, closing in _USER_TURNS:
        starts = list(re.finditer(opening, prompt))
        if not starts:
            continue
        rest = prompt[starts[-1].end() :]
        end = re.search(closing, rest)
        return (rest[: end.start()] if end else rest).strip()
    return prompt.strip()
