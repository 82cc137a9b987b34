"""A deterministic engine for unit tests: a character tokenizer and scripted continuations.

It is registered like the real engines so tests exercise the same code paths. A test gives it a
``respond(prompt_text, params) -> str`` function; the engine cuts the reply at the first stop
string (keeping it, as real engines here do) and reports verdict log-probabilities from a
``verdict(prompt_text) -> (logprob_yes, logprob_no)`` function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from genprm.engines.base import (
    Engine,
    Generation,
    GenerationRequest,
    LogprobRequest,
    Prompt,
    TokenLogprobs,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

Respond = Callable[[str, GenerationRequest], str]
Verdict = Callable[[str], tuple[float | None, float | None]]


def _always_yes(_: str) -> tuple[float | None, float | None]:
    return math.log(0.9), math.log(0.1)


class ScriptedEngine(Engine):
    """Replies come from a Python function; one token per character."""

    name = "scripted"

    def __init__(
        self,
        model: str | None = None,
        *,
        respond: Respond | None = None,
        verdict: Verdict | None = None,
        chat_template: str = CHATML,
        max_batch: int = 1,
    ) -> None:
        super().__init__()
        self._respond = respond or (lambda prompt, request: "")
        self._verdict = verdict or _always_yes
        self._template = chat_template
        self.max_batch = max_batch
        self.calls: list[tuple[str, GenerationRequest]] = []
        self.batches: list[int] = []

    def _text(self, prompt: Prompt) -> str:
        return prompt if isinstance(prompt, str) else self.detokenize(prompt)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.batches.append(len(requests))
        outs = []
        for request in requests:
            prompt = self._text(request.prompt)
            self.calls.append((prompt, request))
            reply = self._respond(prompt, request)
            finish, stop_hit = "eos", None
            cuts = [(reply.find(s), s) for s in request.params.stop if s in reply]
            if cuts:
                at, stop_hit = min(cuts)
                reply, finish = reply[: at + len(stop_hit)], "stop"
            if len(reply) > request.params.max_tokens:
                reply, finish, stop_hit = reply[: request.params.max_tokens], "length", None
            outs.append(Generation(reply, finish, stop_hit, len(prompt), len(reply)))  # type: ignore[arg-type]
            self.stats.requests += 1
        return outs

    def next_token_logprobs(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        outs = []
        for request in requests:
            lp_yes, lp_no = self._verdict(self.detokenize(request.prompt))
            yes, no = request.candidates
            outs.append(TokenLogprobs({yes: lp_yes, no: lp_no}, prompt_tokens=len(request.prompt)))
        return outs

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(chr(t) for t in tokens)

    @property
    def chat_template(self) -> str | None:
        return self._template
