"""A deterministic engine for unit tests: a character tokenizer and scripted continuations.

It is registered like the real engines so tests exercise the same code paths. A test gives it a
``respond(prompt_text, params) -> str`` function; the engine cuts the reply at the first stop
string (keeping it, as real engines here do) and reports next-token log-probabilities from one of:

* ``verdict(prompt_text) -> (logprob_yes, logprob_no)``: the two candidates' log-probabilities,
  and no other token is likely (they are the whole vocabulary for the paper's reading, which
  renormalises them);
* ``distribution(prompt_text) -> {token: logprob}``: the whole next-token distribution, for tests
  of the paper's reading; a token not in it has probability 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from genprm.engines.base import (
    Engine,
    Generation,
    GenerationRequest,
    LogprobRequest,
    Prompt,
    TokenLogprobs,
    most_likely,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

Respond = Callable[[str, GenerationRequest], str]
Verdict = Callable[[str], tuple[float | None, float | None]]
Distribution = Callable[[str], Mapping[int, float]]


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
        distribution: Distribution | None = None,
        chat_template: str = CHATML,
        max_batch: int = 1,
    ) -> None:
        super().__init__()
        self._respond = respond or (lambda prompt, request: "")
        self._verdict = verdict or _always_yes
        self._distribution = distribution
        self.logprob_requests: list[LogprobRequest] = []
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
            self.logprob_requests.append(request)
            prompt = self.detokenize(request.prompt)
            if self._distribution is not None:
                known: dict[int, float] = dict(self._distribution(prompt))
                candidates = {c: known.get(c) for c in request.candidates}
            else:
                yes, no = request.candidates
                lp_yes, lp_no = self._verdict(prompt)
                candidates = {yes: lp_yes, no: lp_no}
                # an unknown candidate means the engine reports nothing usable: no distribution either
                known = {} if None in candidates.values() else {t: v for t, v in candidates.items() if v is not None}
            top = most_likely(known, request.top)
            whole = bool(known) and len(top) == len(known)
            outs.append(TokenLogprobs(candidates, prompt_tokens=len(request.prompt), top=top, whole_vocabulary=whole))
        return outs

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(chr(t) for t in tokens)

    @property
    def chat_template(self) -> str | None:
        return self._template
