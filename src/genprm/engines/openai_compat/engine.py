"""``OpenAIEngine``: generation and verdict log-probabilities over an OpenAI-compatible server.

The engine composes the pieces of this package: :class:`HttpClient` carries the requests,
:class:`Vocabulary` tokenizes and shapes prompts, :class:`Prober` learns the server's
:class:`Capabilities` once at start-up; what is left here is the :class:`Engine` interface itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from genprm.engines.base import (
    ALL_TOKENS,
    Engine,
    FinishReason,
    Generation,
    GenerationRequest,
    LogprobRequest,
    Prompt,
    SamplingParams,
    TokenLogprobs,
    most_likely,
)
from genprm.engines.openai_compat.capabilities import Capabilities
from genprm.engines.openai_compat.http import BODY_KEEP, BODY_QUOTE, HttpClient
from genprm.engines.openai_compat.probe import Prober
from genprm.engines.openai_compat.vocabulary import LocalTokenizer, PromptMismatch, Vocabulary, read_template
from genprm.engines.openai_compat.wire import (
    NO_LOGPROBS,
    Json,
    Scores,
    cached_tokens,
    first_position_top,
    forced_value,
    forcing_body,
    int_or_zero,
    logprob_body,
    logprob_value,
)
from genprm.errors import ConfigError, ContextOverflowError, EngineError

# The package's logger, not this module's: its records keep the name they are filtered by.
log = logging.getLogger(__package__)

T = TypeVar("T")


class OpenAIEngine(Engine):
    """A model served over HTTP by an OpenAI-compatible completions server.

    ``model`` names the model in genprm's records (default: the served name); it is also used as
    the served name when the server lists a model of that id. ``served_model`` is the name sent in
    requests (default: the first id of ``GET /v1/models``). ``base_url`` is the server root (a
    trailing ``/v1`` is accepted). ``api_key`` defaults to ``$GENPRM_OPENAI_API_KEY``.
    ``concurrency`` bounds the HTTP requests in flight (and is ``max_batch``); ``tokenizer`` is a
    local GGUF whose vocabulary serves when the server has no tokenize endpoint (and provides the
    chat template and BOS/EOS texts a server does not expose); ``chat_template`` is a file path or
    the template text. ``logprobs_k`` is how many top log-probabilities to ask for (default 20; 200
    for llama-cpp-python, whose cost does not depend on it). ``backoff_s`` is the first retry delay;
    ``serialize`` forces one-request-at-a-time on or off (default: on for llama-cpp-python only).
    """

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str,
        api_key: str | None = None,
        served_model: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        concurrency: int = 16,
        tokenizer: str | None = None,
        chat_template: str | None = None,
        logprobs_k: int | None = None,
        backoff_s: float = 0.5,
        serialize: bool | None = None,
    ) -> None:
        super().__init__()
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError("base_url", base_url, "must start with http:// or https://")
        if timeout_s <= 0:
            raise ConfigError("timeout_s", timeout_s, "must be > 0")
        if max_retries < 0:
            raise ConfigError("max_retries", max_retries, "must be >= 0")
        if concurrency < 1:
            raise ConfigError("concurrency", concurrency, "must be at least 1")
        if logprobs_k is not None and logprobs_k < 1:
            raise ConfigError("logprobs_k", logprobs_k, "must be at least 1")
        root = base_url.rstrip("/")
        self.base_url = root[: -len("/v1")] if root.endswith("/v1") else root
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.max_batch = concurrency
        self.logprobs_k = logprobs_k or 20
        self.backoff_s = backoff_s
        self._label = model
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._http = HttpClient(
            self.base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s,
            concurrency=concurrency, count=self._bump,
        )
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(concurrency, thread_name_prefix="genprm-openai")
        self._caps = Capabilities()
        self._vocab = Vocabulary(self._http, self._caps)
        self._template: str | None = None
        self._closed = False
        try:
            self._vocab.local = LocalTokenizer(tokenizer) if tokenizer else None
            self._template = Prober(self._http, self._caps, self._vocab).run(
                model, served_model, read_template(chat_template)
            )
        except BaseException:
            self.close()
            raise
        if logprobs_k is None and self._caps.flavor == "llama-cpp-python":
            self.logprobs_k = 200  # it sorts the whole vocabulary for any logprobs request: a long list is free
        if serialize if serialize is not None else self._caps.flavor == "llama-cpp-python":
            self._http.limit_in_flight(1)

    @property
    def served_model(self) -> str:
        """The model name sent in requests (``served_model=``, else found at start-up)."""
        return self._caps.served_model

    # -- bookkeeping ----------------------------------------------------------------------------
    def _bump(self, counter: str, by: float = 1) -> None:
        with self._lock:
            self.stats.extra[counter] = self.stats.extra.get(counter, 0) + by

    def _count(self, prompt: int, cached: int, completion: int, seconds: float) -> None:
        with self._lock:
            self.stats.requests += 1
            self.stats.prompt_tokens += prompt
            self.stats.cached_prompt_tokens += cached
            self.stats.completion_tokens += completion
            self.stats.seconds += seconds

    def _map(self, function: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
        if self._pool is None:
            raise EngineError("the engine is closed")
        if len(items) <= 1:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of a whole prompt: special tokens parsed, BOS added if the model wants one."""
        return self._vocab.tokenize(text)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``, special tokens written out."""
        return self._vocab.detokenize(tokens)

    # -- generation -----------------------------------------------------------------------------
    def _sampling(self, params: SamplingParams) -> dict[str, Any]:
        flavor = self._caps.flavor
        fields: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p}
        if flavor in ("vllm", "sglang"):
            fields["top_k"] = params.top_k if params.top_k > 0 else -1
        else:
            fields["top_k"] = params.top_k
        if flavor in ("llama-cpp-python", "llama-server"):  # their defaults filter further; the protocol does not
            fields.update(min_p=0.0, repeat_penalty=1.0)
        if params.seed is not None:
            fields["seed"] = params.seed
        return fields

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return self._map(self._generate_one, list(requests))

    def sample(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        """``params.n`` continuations per prompt: one request with ``n`` where the server answers it
        with n choices (probed; the server then seeds the samples its own way), else the default.
        """
        if not self._caps.n_samples:
            return super().sample(requests)
        return self._map(self._sample_one, list(requests))

    def _sample_one(self, request: GenerationRequest) -> list[Generation]:
        started = time.perf_counter()
        params = request.params
        payload, n_prompt = self._vocab.payload(request.prompt)
        body: dict[str, Any] = {
            "model": self.served_model, "prompt": payload, "max_tokens": self._room(n_prompt, params.max_tokens),
            "n": params.n, "return_token_ids": True, **self._sampling(params),
        }
        if params.stop:
            body["stop"] = list(params.stop)
            body["include_stop_str_in_output" if self._caps.stop_report == "stop_reason" else "no_stop_trim"] = True
        answer = self._http.json("POST", "/v1/completions", body, what="sample")
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or len(choices) != params.n:
            raise EngineError(f"sample: asked for {params.n} choices, got {str(answer)[:BODY_QUOTE]!r}")
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        prompt_tokens = int_or_zero(usage.get("prompt_tokens")) or n_prompt or 0
        cached = cached_tokens(usage)
        seconds = time.perf_counter() - started
        out = []
        for choice in sorted(choices, key=lambda c: int_or_zero(c.get("index"))):
            text, finish, stop = self._reported_finish(choice)
            ids = choice.get("token_ids")
            completion = len(ids) if isinstance(ids, list) else len(self._vocab.raw_tokenize(text))
            out.append(Generation(text, finish, stop, prompt_tokens, completion, cached, seconds))
        self._count(prompt_tokens, cached, sum(g.completion_tokens for g in out), seconds)
        return out

    def _room(self, n_prompt: int | None, wanted: int) -> int:
        limit = self._caps.max_model_len
        if limit is None or n_prompt is None:
            return wanted
        if n_prompt >= limit:
            raise ContextOverflowError(n_prompt, limit)
        return min(wanted, limit - n_prompt)

    def _generate_one(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        params = request.params
        try:
            payload, n_prompt = self._vocab.payload(request.prompt)
        except PromptMismatch as exc:
            reason = f"cannot send this token prompt to {self.base_url}, which accepts only text: {exc}"
            raise EngineError(reason) from exc
        body: dict[str, Any] = {
            "model": self.served_model, "prompt": payload, "max_tokens": self._room(n_prompt, params.max_tokens),
            **self._sampling(params),
        }
        what = "generate"
        caps = self._caps
        if caps.stop_report == "client":
            out = self._http.stream(body, params.stop, what=what)
            text, finish, stop, completion, usage = out.text, out.finish, out.stop, out.chunks, out.usage
            completion = int_or_zero(usage.get("completion_tokens")) or completion
        else:
            if params.stop:
                body["stop"] = list(params.stop)
                body["include_stop_str_in_output" if caps.stop_report == "stop_reason" else "no_stop_trim"] = True
            choice, usage = self._http.complete(body, what=what)
            text, finish, stop = self._reported_finish(choice)
            completion = int_or_zero(usage.get("completion_tokens"))
        prompt_tokens = int_or_zero(usage.get("prompt_tokens")) or n_prompt
        if prompt_tokens is None:
            prompt_tokens = len(self.tokenize(payload)) if isinstance(payload, str) else len(payload)
        cached = cached_tokens(usage)
        seconds = time.perf_counter() - started
        self._count(prompt_tokens, cached, completion, seconds)
        return Generation(text, finish, stop, prompt_tokens, completion, cached, seconds)

    def _reported_finish(self, choice: Json) -> tuple[str, FinishReason, str | None]:
        text = choice.get("text")
        if not isinstance(text, str):
            raise EngineError(f"generate: a choice without text: {str(choice)[:BODY_QUOTE]!r}")
        reason = choice.get("finish_reason")
        if reason == "length":
            return text, "length", None
        if reason != "stop":
            raise EngineError(f"generate: the server ended a completion with finish_reason={reason!r}")
        matched = choice.get(self._caps.stop_report)
        if isinstance(matched, str) and matched:
            return (text if text.endswith(matched) else text + matched), "stop", matched
        return text, "eos", None  # no string: end-of-sequence or a stop token id

    # -- log-probabilities ----------------------------------------------------------------------
    def next_token_logprobs(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        return self._map(self._logprobs_one, list(requests))

    def _logprobs_one(self, request: LogprobRequest) -> TokenLogprobs:
        if request.top != 0:
            return self._logprobs_with_top(request)
        started = time.perf_counter()
        candidates = list(dict.fromkeys(request.candidates))
        strategy = self._caps.logprobs
        if strategy == "ids":
            values, usage = self._scored_by_ids(request.prompt, candidates)
        elif strategy == "prompt":
            values, usage = self._scored_by_prompt(request.prompt, candidates)
        else:
            values, usage = self._scored_by_forcing(request.prompt, candidates, force=strategy == "biased")
        seconds = time.perf_counter() - started
        cached = cached_tokens(usage)
        self._count(len(request.prompt), cached, 0, seconds)
        return TokenLogprobs(values, prompt_tokens=len(request.prompt), cached_prompt_tokens=cached, seconds=seconds)

    def _logprobs_with_top(self, request: LogprobRequest) -> TokenLogprobs:
        """The paper's read: the top log-probabilities at the next position, as many as the server gives.

        ``ids`` and ``top``/``biased`` servers answer one ``max_tokens=1`` request with
        ``logprobs=k``; ``prompt`` servers the prompt log-probabilities of ``prompt + [candidate]``.
        Tokens a server names only by text keep their text's candidate id where it is one, else a
        negative placeholder id (their identity does not matter, only their values).
        """
        started = time.perf_counter()
        caps = self._caps
        count = self.logprobs_k if request.top == ALL_TOKENS else min(request.top, self.logprobs_k)
        if count < request.top or request.top == ALL_TOKENS:
            self._warn_once(f"the paper's reward asks for the top {'all' if request.top == ALL_TOKENS else request.top}"
                            f" log-probabilities; {self.base_url} is asked for {count} (logprobs_k): readings that "
                            "need more are approximate")
        found: dict[int, float] = {}
        usage: Json = {}
        approximate = None
        if caps.logprobs == "prompt":
            body = {**self._logprob_body([*request.prompt, request.candidates[0]]), "prompt_logprobs": count}
            choice, usage = self._http.complete(body, what="score the verdict tokens")
            entries = choice.get("prompt_logprobs")
            last = entries[-1] if isinstance(entries, list) and entries and isinstance(entries[-1], dict) else {}
            found = {int(k): v for k, raw in last.items() if k.lstrip("-").isdigit()
                     and (v := logprob_value(raw)) is not None}
            found = most_likely(found, count)  # the appended candidate may be one more than asked
        else:
            try:
                payload: Prompt = request.prompt if caps.logprobs == "ids" else self._vocab.payload(request.prompt)[0]
            except PromptMismatch as exc:
                log.warning("cannot score a token prompt at %s exactly (%s); the verdict stays unreadable",
                            self.base_url, exc)
                self._bump("unsendable_prompts")
                return TokenLogprobs(dict.fromkeys(request.candidates), prompt_tokens=len(request.prompt))
            body = {**self._logprob_body(payload), "logprobs": count}
            choice, usage = self._http.complete(body, what="score the verdict tokens")
            top = first_position_top(choice)
            if top is None:
                raise EngineError(NO_LOGPROBS, body=json.dumps(choice)[:BODY_KEEP])
            found = self._ids_of(top, request.candidates)
            if not caps.raw_top_logprobs:
                approximate = "the server reports log-probabilities after its sampling settings"
        if approximate:
            self._warn_once(f"{self.base_url}: {approximate}; paper-mode rewards are approximate")
        seconds = time.perf_counter() - started
        cached = cached_tokens(usage)
        self._count(len(request.prompt), cached, 0, seconds)
        return TokenLogprobs(
            {c: found.get(c) for c in request.candidates}, prompt_tokens=len(request.prompt),
            cached_prompt_tokens=cached, seconds=seconds, top=most_likely(found, request.top), approximate=approximate,
        )

    def _ids_of(self, top: tuple[dict[int, float], dict[str, float]], candidates: Sequence[int]) -> dict[int, float]:
        """Top log-probabilities by token id: the server's ids, else texts (candidates by their text)."""
        by_id, by_text = top
        if by_id:
            return dict(by_id)
        texts = {c: self._vocab.candidate_text(c) for c in candidates}
        named = {text: c for c, text in texts.items() if text is not None and list(texts.values()).count(text) == 1}
        found: dict[int, float] = {}
        for i, (text, value) in enumerate(sorted(by_text.items(), key=lambda item: -item[1])):
            found[named.get(text, -(i + 2))] = value
        return found

    def _warn_once(self, message: str) -> None:
        with self._lock:
            if message in self._warned:
                return
            self._warned.add(message)
        log.warning("%s", message)

    def _logprob_body(self, prompt: Prompt) -> Json:
        return logprob_body(self.served_model, prompt, flavor=self._caps.flavor)

    def _scored_by_ids(self, prompt: list[int], candidates: list[int]) -> Scores:
        """One request; the server reports the candidates' log-probabilities at the next position."""
        self._room(len(prompt), 1)
        body = {**self._logprob_body(prompt), "logprobs": 1, "logprob_token_ids": candidates,
                "return_tokens_as_token_ids": True}
        choice, usage = self._http.complete(body, what="score the verdict tokens")
        top = first_position_top(choice)
        if top is None:
            raise EngineError(NO_LOGPROBS, body=json.dumps(choice)[:BODY_KEEP])
        return {c: top[0].get(c) for c in candidates}, usage

    def _scored_by_prompt(self, prompt: list[int], candidates: list[int]) -> Scores:
        """Append each candidate to the prompt; the server scores that last prompt token exactly."""
        values: dict[int, float | None] = {}
        usage: Json = {}
        self._room(len(prompt) + 1, 1)
        for candidate in candidates:
            if candidate in values:
                continue
            body = {**self._logprob_body([*prompt, candidate]), "prompt_logprobs": self.logprobs_k}
            choice, usage = self._http.complete(body, what="score the verdict tokens")
            entries = choice.get("prompt_logprobs")
            last = entries[-1] if isinstance(entries, list) and entries else None
            if isinstance(last, dict):
                for other in candidates:
                    if other not in values and str(other) in last:
                        values[other] = logprob_value(last[str(other)])
            values.setdefault(candidate, None)
        return {c: values.get(c) for c in candidates}, usage

    def _scored_by_forcing(self, prompt: list[int], candidates: list[int], *, force: bool) -> Scores:
        """Read the candidates at the next position: forced one by one (``force``) or from the top-k."""
        values: dict[int, float | None] = {}
        try:
            payload, _ = self._vocab.payload(prompt)
        except PromptMismatch as exc:
            log.warning("cannot score a token prompt at %s exactly (%s); the verdict stays unreadable",
                        self.base_url, exc)
            self._bump("unsendable_prompts")
            return dict.fromkeys(candidates), {}
        self._room(len(prompt), 1)
        usage: Json = {}
        for candidate in candidates if force else candidates[:1]:
            if candidate in values:
                continue
            if force:
                body = forcing_body(self.served_model, payload, candidate, self.logprobs_k, flavor=self._caps.flavor)
            else:
                body = {**self._logprob_body(payload), "logprobs": self.logprobs_k}
            choice, usage = self._http.complete(body, what="score the verdict tokens")
            if force:
                values[candidate] = forced_value(choice, candidate, self._vocab.candidate_text)
            self._fill_from_top(choice, candidates, values)
        return {c: values.get(c) for c in candidates}, usage

    def _fill_from_top(self, choice: Json, candidates: list[int], values: dict[int, float | None]) -> None:
        """Take the candidates not known yet from a choice's top log-probabilities, when unambiguous."""
        top = first_position_top(choice)
        if top is None:
            raise EngineError(NO_LOGPROBS, body=json.dumps(choice)[:BODY_KEEP])
        by_id, by_text = top
        missing = [c for c in candidates if values.get(c) is None]
        if by_id:
            for candidate in missing:
                if candidate in by_id:
                    values[candidate] = by_id[candidate]
            return
        texts = {c: self._vocab.candidate_text(c) for c in candidates}
        for candidate in missing:
            text = texts[candidate]
            if text is not None and list(texts.values()).count(text) == 1 and text in by_text:
                values[candidate] = by_text[text]

    # -- description ----------------------------------------------------------------------------
    @property
    def chat_template(self) -> str | None:
        return self._template

    @property
    def special_tokens(self) -> dict[str, str]:
        out = {}
        if self._vocab.bos_text:
            out["bos_token"] = self._vocab.bos_text
        if self._vocab.eos_text:
            out["eos_token"] = self._vocab.eos_text
        return out

    @property
    def model_id(self) -> str:
        if self._label:
            return self._label
        served = self.served_model
        return Path(served).name if served.endswith(".gguf") else served

    @property
    def capabilities(self) -> dict[str, Any]:
        """What start-up probing found (for logs and tests)."""
        caps = self._caps
        return {
            "flavor": caps.flavor, "tokenizer": caps.tokenize_style or "local", "token_prompts": caps.token_prompts,
            "stop_report": caps.stop_report, "logprobs": caps.logprobs, "in_flight_limit": self._http.in_flight_limit,
            "max_model_len": caps.max_model_len, "raw_top_logprobs": caps.raw_top_logprobs, "n_samples": caps.n_samples,
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        self._vocab.close()
