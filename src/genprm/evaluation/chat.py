"""Plain chat completions on any engine: what the critic baseline and the policy model need."""

from __future__ import annotations

from collections.abc import Sequence

from genprm.engines.base import Engine, GenerationRequest, SamplingParams
from genprm.errors import ConfigError
from genprm.protocol.chat import ChatTemplate, Message, template_fields


class ChatModel:
    """An engine plus its chat template: messages in, assistant text out, batched by the engine."""

    def __init__(self, engine: Engine, chat_template: str | None = None) -> None:
        source = chat_template or engine.chat_template
        if not source:
            raise ConfigError("chat_template", None, f"model {engine.model_id} ships none; pass one explicitly")
        self.engine = engine
        self.template = ChatTemplate(source, engine.special_tokens)

    def template_fields(self) -> dict[str, str]:
        """The key fields of this model's template (a digest when it overrides the model's own)."""
        return template_fields(self.template.source, self.engine.chat_template)

    def prompt(self, messages: list[Message]) -> str:
        return self.template.render(messages, add_generation_prompt=True)

    def complete(self, conversations: Sequence[list[Message]], params: SamplingParams) -> list[str]:
        """One reply per conversation, in order; stop strings (if any) are cut from the reply."""
        requests = [GenerationRequest(self.prompt(c), params) for c in conversations]
        replies: list[str] = []
        batch = max(1, self.engine.max_batch)
        for start in range(0, len(requests), batch):
            for out in self.engine.generate(requests[start : start + batch]):
                text = out.text
                if out.stop_string and text.endswith(out.stop_string):
                    text = text[: -len(out.stop_string)]
                replies.append(text)
        return replies
