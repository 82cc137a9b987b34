"""Render GenPRM conversations with the model's own chat template, as Hugging Face would.

Why not a hand-written format: GenPRM checkpoints were trained on conversations rendered by their
tokenizer's Jinja template, so the only byte-exact prompt is the one that template produces. We
render templates the way ``transformers``' ``apply_chat_template`` does (a sandboxed Jinja
environment with ``trim_blocks`` and ``lstrip_blocks``) without depending on ``transformers``.

The current step's prompt must end with the assistant header *as an assistant turn is rendered in
training*, which is not always what ``add_generation_prompt`` adds (for the R1-distill template that
appends ``<｜Assistant｜><think>\\n``, a line GenPRM never saw). ``AssistantHeader.TEMPLATE`` cuts a
rendered assistant turn at its content; the other choices reproduce the released code's variants.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from genprm.errors import ConfigError

Message = dict[str, str]
_SENTINEL = "\u2063GENPRM-ASSISTANT-CONTENT\u2063"


class AssistantHeader(str, Enum):
    """How the prompt of the step being verified ends."""

    TEMPLATE = "template"
    """The header exactly as an assistant turn renders in training (default; faithful)."""
    GENERATION_PROMPT = "generation-prompt"
    """Whatever ``add_generation_prompt=True`` appends (the released OpenAI-client code path)."""
    NONE = "none"
    """No header at all (the released vLLM code path stripped it)."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template plus the special-token variables it refers to."""

    source: str
    variables: dict[str, str] = field(default_factory=dict)

    @cached_property
    def _compiled(self) -> jinja2.Template:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            return env.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError("chat_template", self.source[:60] + "...", f"invalid Jinja: {exc}") from exc

    def render(self, messages: list[Message], *, add_generation_prompt: bool = False) -> str:
        """Render ``messages`` to prompt text, as ``apply_chat_template(tokenize=False)`` would."""
        return self._compiled.render(
            messages=messages, add_generation_prompt=add_generation_prompt, **self.variables
        )

    def assistant_header(self, messages: list[Message]) -> str:
        """The text an assistant turn starts with after ``messages`` in a training rendering."""
        full = self.render([*messages, {"role": "assistant", "content": _SENTINEL}])
        before = self.render(messages)
        if _SENTINEL not in full:
            raise ConfigError("chat_template", "<model template>", "does not render assistant content")
        head = full[: full.index(_SENTINEL)]
        if not head.startswith(before):
            # Templates that rewrite earlier turns once an assistant reply exists: fall back to the
            # generation prompt, which such templates define for exactly this position.
            return self.render(messages, add_generation_prompt=True)[len(before) :]
        return head[len(before) :]

    def prompt_for(self, messages: list[Message], header: AssistantHeader) -> str:
        """The prompt for the next assistant turn after ``messages``."""
        if header is AssistantHeader.GENERATION_PROMPT:
            return self.render(messages, add_generation_prompt=True)
        body = self.render(messages)
        if header is AssistantHeader.NONE:
            return body
        return body + self.assistant_header(messages)


def template_fields(source: str, model_template: str | None) -> dict[str, str]:
    """What a stored result's key needs to know of its chat template: a digest of ``source`` when it
    overrides the model's own (another template renders other prompts), nothing otherwise.
    """
    if source == model_template:
        return {}
    return {"chat_template": hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]}


def build_messages(
    system_prompt: str, user_turns: list[str], assistant_turns: list[str]
) -> list[Message]:
    """System, then alternating user/assistant turns; the last user turn has no reply yet."""
    if len(assistant_turns) != len(user_turns) - 1:
        raise ValueError("need exactly one assistant turn per earlier user turn")
    messages: list[Message] = [{"role": "system", "content": system_prompt}]
    for i, user in enumerate(user_turns):
        messages.append({"role": "user", "content": user})
        if i < len(assistant_turns):
            messages.append({"role": "assistant", "content": assistant_turns[i]})
    return messages
