"""Any OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang, llama.cpp) as an engine.

    pip install 'genprm[openai]'
    engine = OpenAIEngine(base_url="http://127.0.0.1:8000", chat_template="template.jinja")

Only the plain completions endpoint is used: GenPRM renders its prompts with the model's own chat
template, so a server's chat endpoint would format them a second time. Servers differ in what they
offer beyond that endpoint; the engine learns it once, at start-up, by probing, and keeps it:

* **Tokenizer.** vLLM's ``POST /tokenize``/``/detokenize``, llama-cpp-python's
  ``/extras/tokenize``/``/extras/detokenize`` or llama.cpp ``llama-server``'s ``/tokenize``/
  ``/detokenize``, else the local ``tokenizer=`` (a GGUF file or genprm model name, read without
  weights). Which tokens a server adds by itself (a BOS) is learned by tokenizing ``""``; ``tokenize``
  then follows the engine rule: special tokens parsed, BOS added only if the model wants one and the
  text lacks it. llama-cpp-python renders control tokens (``<|im_start|>``) as nothing when
  detokenizing; their text is learned from common special-token spellings, the chat template and
  the texts given to ``tokenize`` (a ``<...>``-like piece that is one token the server renders
  differently), or read from the ``tokenizer=`` GGUF when given.
* **Chat template.** ``chat_template=``, else llama-server's ``GET /props`` or vLLM's
  ``GET /tokenizer_info`` (``--enable-tokenizer-info-endpoint``), else the ``tokenizer=`` GGUF;
  otherwise ``chat_template`` is ``None`` and genprm asks for ``--chat-template``.
* **Prompts.** Servers that accept token ids get ids (text prompts are tokenized first, so the BOS
  rule holds exactly). llama-cpp-python accepts only text: token prompts are sent as their text, and
  only if re-tokenizing that text gives back exactly the same ids (otherwise generation raises
  :class:`EngineError` and a log-probability read returns ``None``: nothing is guessed).
* **Stop strings.** vLLM reports the matched stop in ``stop_reason`` and keeps it in the text with
  ``include_stop_str_in_output``; SGLang reports ``matched_stop`` (kept with ``no_stop_trim``).
  Servers that report neither (llama.cpp's) answer ``finish_reason="stop"`` both for a stop string
  and for end-of-sequence, and cut the stop from the text. For them the stops are not sent at all:
  the completion is streamed and cut here at the first stop, exactly as the in-process engine cuts
  (the connection is then closed, which ends the generation on the server). A server ``"stop"`` then
  can only mean end-of-sequence. ``completion_tokens`` counts streamed chunks, one per token except
  where one character spans tokens, unless the server reports usage.
* **Verdict log-probabilities**, exact where the server allows, in this order of preference:

  1. ``ids`` (vLLM >= 0.32 ``logprob_token_ids``): one ``max_tokens=1`` request names the candidates
     and the server reports their log-probabilities at the next position (prefix cache used).
  2. ``prompt`` (vLLM ``prompt_logprobs``, token prompts): each candidate is appended to the prompt
     and the server reports the log-probability of that last prompt token (vLLM then skips its
     prefix cache for the request).
  3. ``biased`` (llama.cpp): ``max_tokens=1`` with ``logit_bias={candidate: +100}`` at temperature 0
     forces the candidate to be the generated token, and the server reports its log-probability
     from the unbiased logits. Used only if a start-up probe shows that the reported value is
     unbiased (it matches the same token's value in an unbiased request).
  4. ``top``: ``max_tokens=1, logprobs=logprobs_k``; the candidates are looked up in the first
     position's ``top_logprobs``, and one outside them is ``None``.

  In 2 and 3 a second request is made only if the other candidate is not among the first answer's
  top ``logprobs_k``. Entries are matched by token id where the server gives ids, else by the
  server's own text of the candidate token (``None`` if two candidates read alike). Requests are
  sent at temperature 1 (0 when forcing) and top-p 1, so that a server applying sampling to its
  logprobs still reports the full softmax.

llama-cpp-python's server runs one request at a time and, by default (``interrupt_requests``), cuts
a stream as soon as another request arrives; requests to it are therefore sent one at a time
(``serialize=None`` decides so by itself). Every request is retried on connection errors, timeouts,
HTTP 429 and 5xx with exponential backoff and jitter (each retry is logged); other 4xx answers raise
:class:`EngineError` at once, with the status and the start of the body.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from genprm.engines.base import (
    Engine,
    FinishReason,
    Generation,
    GenerationRequest,
    LogprobRequest,
    Prompt,
    SamplingParams,
    TokenLogprobs,
)
from genprm.errors import ConfigError, EngineError, MissingDependencyError
from genprm.tokens import with_bos

log = logging.getLogger(__name__)

API_KEY_ENV = "GENPRM_OPENAI_API_KEY"
"""The only environment variable read: the bearer token sent to the server."""

_PROBE_TEXT = "Hello world"
_BODY_QUOTE = 300
_BODY_KEEP = 4000
_MAX_BACKOFF_S = 30.0
_NO_LOGPROBS = (
    "this server returns no logprobs; GenPRM needs them to read the verdict: start llama.cpp's "
    "server with logits_all (llama_cpp.server --logits_all true), vLLM with --max-logprobs >= 2"
)
# Pieces of text that may be one special token: <|im_start|>, <｜Assistant｜>, </s>, <think>, [INST].
_SPECIAL_CANDIDATE = re.compile(
    r"<\|[^<>|\s]{1,64}\|>|<｜[^<>｜]{1,64}｜>|</?[A-Za-z_][\w.:-]{0,40}>|\[/?[A-Z][A-Z_]{1,30}\]"
)
_MAX_SPECIAL_CHECKS = 4096
_RUN_CACHE = 256
# Spellings of the special tokens of common chat formats, tried at start-up on servers that do not
# write special tokens out when detokenizing (llama-cpp-python): a token prompt built elsewhere can
# then still be sent as text. Only pieces that are one token of this model are kept.
_COMMON_SPECIALS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<start_of_turn>",
    "<end_of_turn>", "[INST]", "[/INST]", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<think>",
    "</think>",
)

T = TypeVar("T")
Json = dict[str, Any]
Scores = tuple[dict[int, float | None], Json]


class _Failure(Exception):
    """One failed attempt: the error to raise and whether another attempt may succeed."""

    def __init__(self, error: EngineError, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


class _EmptyStream(EngineError):
    """A stream that ended before its first event: the server failed before generating."""


class _PromptMismatch(Exception):
    """A token prompt cannot be sent exactly to a server that accepts only text."""


@dataclass
class _Capabilities:
    """What the server offers, probed once at start-up."""

    flavor: str = "openai-compatible"
    tokenize_style: str | None = None
    """``vllm``, ``llama-cpp-python``, ``llama-server``, or ``None`` (use the local tokenizer)."""
    token_prompts: bool = False
    stop_report: str = "client"
    """``stop_reason`` (vLLM), ``matched_stop`` (SGLang) or ``client`` (stream and cut here)."""
    logprobs: str = "top"
    """``ids`` (vLLM logprob_token_ids), ``prompt`` (vLLM prompt_logprobs), ``biased`` (logit_bias
    forcing) or ``top`` (top_logprobs)."""
    added_prefix: list[int] = field(default_factory=list)
    added_suffix: list[int] = field(default_factory=list)
    """Tokens the server's tokenize endpoint (and its text prompts) always add, e.g. a BOS."""
    max_model_len: int | None = None


@dataclass
class _Streamed:
    text: str
    finish: FinishReason
    stop: str | None
    chunks: int
    usage: dict[str, Any]


class _LocalTokenizer:
    """A GGUF file's vocabulary loaded without its weights (the ``tokenizer=`` fallback)."""

    def __init__(self, name: str) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingDependencyError("llama-cpp-python", "llamacpp") from exc
        from genprm.engines.models import resolve_gguf

        path = resolve_gguf(name)
        try:
            self._llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigError("tokenizer", name, f"llama.cpp could not read {path}: {exc}") from exc
        self.name = Path(path).name
        self.bos: int | None = self._llm.token_bos() if self._llm._model.add_bos_token() else None
        self.bos_text = self.text_of(self._llm.token_bos())
        self.eos_text = self.text_of(self._llm.token_eos())
        template = self._llm.metadata.get("tokenizer.chat_template")
        self.chat_template: str | None = template if isinstance(template, str) and template else None

    def text_of(self, token: int) -> str:
        return "" if token < 0 else self.detokenize([token])

    def tokenize_raw(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(self._llm.detokenize(list(tokens), special=True)).decode("utf-8", errors="replace")

    def close(self) -> None:
        self._llm.close()


def _read_template(value: str | None) -> str | None:
    """``chat_template=`` is a file path or the template text itself."""
    if value is None:
        return None
    if "{" not in value and os.path.isfile(value):
        return Path(value).read_text(encoding="utf-8")
    if "{" not in value:
        raise ConfigError("chat_template", value, "is neither a file nor Jinja template text")
    return value


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer configs write it: a string or ``{"content": string, ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _cached_tokens(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    return _int(details.get("cached_tokens")) if isinstance(details, dict) else 0


def _logprob_value(value: Any) -> float | None:
    """A logprob entry as servers write it: a number, or ``{"logprob": number, ...}``."""
    if isinstance(value, dict):
        value = value.get("logprob")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


def _sampled(choice: Json) -> tuple[int | None, str | None, float | None]:
    """The id (if given), text and log-probability of a choice's first generated token."""
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        return None, None, None
    content = block.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        token_id = first.get("id") if isinstance(first.get("id"), int) else None
        text = first.get("token") if isinstance(first.get("token"), str) else None
        return token_id, text, _logprob_value(first)
    tokens, values = block.get("tokens"), block.get("token_logprobs")
    text = tokens[0] if isinstance(tokens, list) and tokens and isinstance(tokens[0], str) else None
    value = _logprob_value(values[0]) if isinstance(values, list) and values else None
    if text is not None and text.startswith("token_id:") and text[9:].isdigit():
        return int(text[9:]), None, value
    return None, text, value


def _first_position_top(choice: dict[str, Any]) -> tuple[dict[int, float], dict[str, float]] | None:
    """The next position's top log-probabilities of a completion choice, by id and by token text.

    Understands the legacy completions format (``top_logprobs: [{text: logprob}]``) and the
    chat-style one some servers use for completions too (``content: [{top_logprobs: [{id, token,
    logprob}]}]``). ``None`` when the choice carries no log-probabilities.
    """
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        return None
    by_id: dict[int, float] = {}
    by_text: dict[str, float] = {}
    content = block.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        entries = list(first.get("top_logprobs") or []) + [first]
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            value = _logprob_value(entry)
            if value is None:
                continue
            if isinstance(entry.get("id"), int):
                by_id.setdefault(entry["id"], value)
            elif isinstance(entry.get("token"), str):
                by_text.setdefault(entry["token"], value)
        return (by_id, by_text) if by_id or by_text else None
    tops = block.get("top_logprobs")
    if not isinstance(tops, list) or not tops or not isinstance(tops[0], dict):
        return None
    for key, raw in tops[0].items():
        value = _logprob_value(raw)
        if value is None:
            continue
        if key.startswith("token_id:") and key[9:].isdigit():
            by_id[int(key[9:])] = value
        else:
            by_text[key] = value
    return (by_id, by_text) if by_id or by_text else None


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
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2),
        )
        self._in_flight_limit = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(concurrency, thread_name_prefix="genprm-openai")
        self._lock = threading.Lock()
        self._caps = _Capabilities()
        self._local: _LocalTokenizer | None = None
        self._bos: int | None = None
        self._bos_text: str | None = None
        self._eos_text: str | None = None
        self._specials: dict[int, str] = {}
        self._special_checked: set[str] = set()
        self._learn_specials_on = False
        self._candidate_texts: dict[int, str | None] = {}
        self._run_texts: OrderedDict[tuple[int, ...], str] = OrderedDict()
        self.served_model = ""
        self._closed = False
        try:
            self._local = _LocalTokenizer(tokenizer) if tokenizer else None
            self._template = _read_template(chat_template)
            self._probe(served_model, serialize, logprobs_k)
        except BaseException:
            self.close()
            raise

    # -- HTTP -----------------------------------------------------------------------------------
    def _failure(self, response: httpx.Response, what: str) -> _Failure:
        status = response.status_code
        try:
            body = response.text
        except (httpx.HTTPError, UnicodeDecodeError):
            body = ""
        quoted = body[:_BODY_QUOTE]
        error = EngineError(f"{what}: {self.base_url} answered HTTP {status}: {quoted!r}", status=status,
                            body=body[:_BODY_KEEP])
        retry_after = None
        header = response.headers.get("retry-after")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        return _Failure(error, retryable=status == 429 or status >= 500, retry_after=retry_after)

    def _call(self, what: str, attempt: Callable[[], T], *, retry: bool = True) -> T:
        """Run one HTTP exchange holding a concurrency slot; retry what may succeed next time."""
        attempts = self.max_retries + 1 if retry else 1
        for number in range(attempts):
            try:
                with self._slots:
                    self._bump("http_requests")
                    return attempt()
            except _Failure as failed:
                error, retryable, retry_after = failed.error, failed.retryable, failed.retry_after
            except httpx.TransportError as exc:  # refused, reset, timed out, broken protocol
                error = EngineError(f"{what}: no answer from {self.base_url}: {type(exc).__name__}: {exc}")
                retryable, retry_after = True, None
            if not retryable or number == attempts - 1:
                if number:
                    error.args = (f"{error.args[0]} (after {number + 1} attempts)",)
                raise error
            delay = min(_MAX_BACKOFF_S, self.backoff_s * 2**number) * random.uniform(0.5, 1.5)
            if retry_after is not None:
                delay = max(delay, min(retry_after, _MAX_BACKOFF_S))
            self._bump("retries")
            log.warning("%s failed (%s); retry %d of %d in %.2f s", what, error, number + 1, self.max_retries, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, body: Json | None = None, *, what: str, retry: bool = True) -> Any:
        def attempt() -> Any:
            response = self._client.request(method, path, json=body)
            if response.status_code >= 400:
                raise self._failure(response, what)
            try:
                return response.json()
            except ValueError as exc:
                raise _Failure(
                    EngineError(f"{what}: the answer is not JSON: {response.text[:_BODY_QUOTE]!r}",
                                status=response.status_code, body=response.text[:_BODY_KEEP]),
                    retryable=False,
                ) from exc

        return self._call(what, attempt, retry=retry)

    def _complete(self, body: Json, *, what: str, retry: bool = True) -> tuple[Json, Json]:
        data = self._json("POST", "/v1/completions", body, what=what, retry=retry)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise EngineError(f"{what}: the server answered without a choice: {str(data)[:_BODY_QUOTE]!r}")
        usage = data.get("usage")
        return choices[0], usage if isinstance(usage, dict) else {}

    def _stream(self, body: Json, stops: Sequence[str], *, what: str, retry: bool = True) -> _Streamed:
        """Stream a completion and cut it at the first of ``stops``, as the in-process engine does.

        llama_cpp.server answers a request it cannot serve (a prompt longer than its context) with
        an empty stream; the same request without streaming then gets its error, which is raised
        as the server words it (a 4xx is not retried).
        """
        try:
            return self._call(what, lambda: self._stream_once(body, stops, what), retry=retry)
        except _EmptyStream:
            self._complete({**body, "max_tokens": 1}, what=what, retry=retry)  # raises the server's error
            return self._call(what, lambda: self._stream_once(body, stops, what), retry=retry)

    def _stream_once(self, body: Json, stops: Sequence[str], what: str) -> _Streamed:
        longest = max((len(s) for s in stops), default=0)
        # One connection per stream: a stream cut at a stop string leaves its connection unusable.
        payload, headers = {**body, "stream": True}, {"Connection": "close"}
        with self._client.stream("POST", "/v1/completions", json=payload, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise self._failure(response, what)
            text, chunks, usage, events = "", 0, {}, 0
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                events += 1
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if "error" in event:
                    raise _Failure(EngineError(f"{what}: error in the stream: {data[:_BODY_QUOTE]!r}"), True)
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    piece = choice.get("text") or ""
                    reason = choice.get("finish_reason")
                    if piece or reason is None:
                        chunks += 1
                    if piece:
                        scan_from = max(0, len(text) - longest)
                        text += piece
                        hits = [(at, s) for s in stops if (at := text.find(s, scan_from)) >= 0]
                        if hits:
                            at, stop = min(hits)
                            return _Streamed(text[: at + len(stop)], "stop", stop, chunks, usage)
                    if reason == "stop":
                        return _Streamed(text, "eos", None, chunks, usage)
                    if reason == "length":
                        return _Streamed(text, "length", None, chunks, usage)
                    if reason is not None:
                        error = EngineError(f"{what}: the server ended with finish_reason={reason!r}")
                        raise _Failure(error, retryable=False)
        if events == 0:
            raise _Failure(_EmptyStream(f"{what}: the server sent an empty stream"), retryable=False)
        raise _Failure(
            EngineError(
                f"{what}: the stream ended without a finish reason (llama_cpp.server cuts a stream when another "
                "request arrives; start it with --interrupt_requests false if other clients use it)"
            ),
            retryable=True,
        )

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

    # -- start-up probing -----------------------------------------------------------------------
    def _probe(self, served_model: str | None, serialize: bool | None, logprobs_k: int | None) -> None:
        listing = self._json("GET", "/v1/models", what="list the served models")
        data = listing.get("data") if isinstance(listing, dict) else None
        entries = [m for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        ids = [m["id"] for m in entries]
        if served_model is not None:
            if ids and served_model not in ids:
                raise ConfigError("served_model", served_model, f"{self.base_url} serves only {', '.join(ids)}")
            served = served_model
        elif self._label is not None and self._label in ids:
            served = self._label
        elif ids:
            served = ids[0]
        else:
            raise EngineError(f"{self.base_url}/v1/models lists no model; pass served_model=")
        self.served_model = served
        entry = next((m for m in entries if m["id"] == served), {})
        caps = self._caps
        caps.flavor = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llama-server"}.get(
            str(entry.get("owned_by", "")), "openai-compatible"
        )
        if isinstance(entry.get("max_model_len"), int):
            caps.max_model_len = entry["max_model_len"]
        self._probe_tokenizer()
        self._probe_completions()
        if logprobs_k is None and caps.flavor == "llama-cpp-python":
            self.logprobs_k = 200  # it sorts the whole vocabulary for any logprobs request: a long list is free
        if serialize if serialize is not None else caps.flavor == "llama-cpp-python":
            self._in_flight_limit = 1
            self._slots = threading.BoundedSemaphore(1)
        self._find_template_and_specials()
        log.info(
            "%s at %s: tokenizer=%s, prompts=%s, stops=%s, logprobs=%s",
            caps.flavor, self.base_url, caps.tokenize_style or "local", "tokens" if caps.token_prompts else "text",
            caps.stop_report, caps.logprobs,
        )

    def _probe_tokenizer(self) -> None:
        caps = self._caps
        for candidate in ("vllm", "llama-cpp-python", "llama-server"):
            try:
                found = self._server_tokenize(candidate, _PROBE_TEXT, add_special=False, retry=False)
            except EngineError as exc:
                if exc.status is None:
                    raise
                continue
            if found:
                caps.tokenize_style = candidate
                break
        style = caps.tokenize_style
        if style is None:
            if self._local is None:
                raise EngineError(
                    f"{self.base_url} has no tokenize endpoint (vLLM /tokenize, llama.cpp /tokenize or "
                    "/extras/tokenize); GenPRM needs the model's tokenizer: pass tokenizer=<the model's GGUF>"
                )
            self._bos = self._local.bos
            return
        if style == "llama-cpp-python":
            caps.flavor = "llama-cpp-python"
        elif style == "vllm" and caps.flavor == "openai-compatible":
            caps.flavor = "vllm"
        empty = self._server_tokenize(style, "", add_special=True)
        full = self._server_tokenize(style, _PROBE_TEXT, add_special=True)
        common = 0
        while common < min(len(empty), len(full)) and empty[common] == full[common]:
            common += 1
        prefix, suffix = empty[:common], empty[common:]
        if suffix and full[-len(suffix):] != suffix:
            prefix, suffix = [], []
        if style == "llama-cpp-python":  # its tokenize endpoint always adds them
            caps.added_prefix, caps.added_suffix = prefix, suffix
            self._learn_specials_on = self._local is None
        self._bos = prefix[0] if len(prefix) == 1 else None
        if self._local is not None:
            check = "<|im_start|>user\n" + _PROBE_TEXT + " 3 + 4 = 7\n"
            if self._local.tokenize_raw(check) != self._raw_tokenize(check):
                reason = f"does not tokenize like the model served at {self.base_url}"
                raise ConfigError("tokenizer", self._local.name, reason)

    def _probe_completions(self) -> None:
        caps = self._caps
        body: dict[str, Any] = {"model": self.served_model, "max_tokens": 1, "temperature": 0.0, "logprobs": 3}
        choice: dict[str, Any] | None = None
        logprob_error: EngineError | None = None
        ids = self.tokenize(_PROBE_TEXT)
        vllm = caps.flavor == "vllm"  # always takes token prompts: a failure here is a real error
        try:
            extra = {"prompt_logprobs": 1} if vllm else {}
            choice, _ = self._complete({**body, **extra, "prompt": ids}, what="probe token prompts", retry=vllm)
            caps.token_prompts = True
        except EngineError as exc:
            if exc.status is None or vllm:
                raise
        if choice is None:
            try:
                choice, _ = self._complete({**body, "prompt": _PROBE_TEXT}, what="probe logprobs", retry=False)
            except EngineError as exc:
                if exc.status is None:
                    raise
                logprob_error = exc
                plain = {k: v for k, v in body.items() if k != "logprobs"}
                choice, _ = self._complete({**plain, "prompt": _PROBE_TEXT}, what="probe completions")
        prompt_lps = choice.get("prompt_logprobs")
        if caps.token_prompts and caps.flavor == "vllm" and self._ids_are_scored(ids):
            caps.logprobs = "ids"
        elif caps.token_prompts and isinstance(prompt_lps, list) and prompt_lps and isinstance(prompt_lps[-1], dict):
            caps.logprobs = "prompt"
        elif _first_position_top(choice) is not None:
            exact = self._bias_reads_exactly(choice, ids if caps.token_prompts else _PROBE_TEXT)
            caps.logprobs = "biased" if exact else "top"
        else:
            raise EngineError(
                _NO_LOGPROBS,
                status=logprob_error.status if logprob_error else None,
                body=logprob_error.body if logprob_error else json.dumps(choice)[:_BODY_KEEP],
            )
        if "stop_reason" in choice:
            caps.stop_report = "stop_reason"
        elif "matched_stop" in choice:
            caps.stop_report = "matched_stop"
        else:
            caps.stop_report = "client"
            prompt: Prompt = ids if caps.token_prompts else _PROBE_TEXT
            try:
                self._stream({"model": self.served_model, "prompt": prompt, "max_tokens": 2, "temperature": 0.0},
                             (), what="probe streaming", retry=False)
            except EngineError as exc:
                raise EngineError(
                    "this server reports neither which stop string ended a completion (vLLM's stop_reason) nor "
                    f"streams completions, so stop strings and end-of-sequence cannot be told apart: {exc}",
                    status=exc.status, body=exc.body,
                ) from exc

    def _ids_are_scored(self, ids: list[int]) -> bool:
        """Does the server honour vLLM's ``logprob_token_ids`` (log-probabilities of chosen tokens)?"""
        wanted = ids[-1]
        body = {**self._logprob_body(ids), "logprobs": 1, "logprob_token_ids": [wanted],
                "return_tokens_as_token_ids": True}
        try:
            choice, _ = self._complete(body, what="probe logprob_token_ids", retry=False)
        except EngineError as exc:
            if exc.status is None:
                raise
            return False
        top = _first_position_top(choice)
        return top is not None and wanted in top[0]

    def _bias_reads_exactly(self, choice: Json, prompt: Prompt) -> bool:
        """Does forcing a token with ``logit_bias`` report its unbiased log-probability?"""
        top = _first_position_top(choice)
        if top is None:
            return False
        by_id, by_text = top
        sampled_id, sampled_text, _ = _sampled(choice)
        target: int | None = None
        expected: float | None = None
        for token, value in by_id.items():
            if token != sampled_id:
                target, expected = token, value
                break
        for text, value in by_text.items():
            if target is not None:
                break
            if not text or text == sampled_text:
                continue
            ids = self._raw_tokenize(text)
            if len(ids) == 1 and self._candidate_text(ids[0]) == text:
                target, expected = ids[0], value
        if target is None or expected is None:
            return False
        try:
            forced, _ = self._complete(self._forcing_body(prompt, target, 1), what="probe logit_bias", retry=False)
        except EngineError as exc:
            if exc.status is None:
                raise
            return False
        reported = self._forced_value(forced, target)
        return reported is not None and abs(reported - expected) < 1e-3

    def _forcing_body(self, prompt: Prompt, token: int, k: int) -> Json:
        return {**self._logprob_body(prompt), "temperature": 0.0, "logprobs": k, "logit_bias": {str(token): 100.0}}

    def _forced_value(self, choice: Json, token: int) -> float | None:
        """The log-probability of the generated token if it is ``token``, else ``None``."""
        sampled_id, sampled_text, value = _sampled(choice)
        if sampled_id is not None:
            return value if sampled_id == token else None
        text = self._candidate_text(token)
        return value if text is not None and sampled_text == text else None

    def _find_template_and_specials(self) -> None:
        local = self._local
        props = self._server_properties() if self._template is None or local is None else {}
        if self._template is None:
            served = props.get("chat_template")
            if isinstance(served, str) and served:
                self._template = served
            elif local is not None:
                self._template = local.chat_template
        if self._learn_specials_on:
            self._learn_specials(" ".join(_COMMON_SPECIALS) + " " + (self._template or ""))
        if local is not None:
            self._bos_text, self._eos_text = local.bos_text or None, local.eos_text or None
            return
        self._bos_text, self._eos_text = _token_text(props.get("bos_token")), _token_text(props.get("eos_token"))
        if self._bos_text is None and self._bos is not None:
            self._bos_text = self._specials.get(self._bos) or self._server_detokenize([self._bos]) or None
        for key, known in (("bos_token", self._bos_text), ("eos_token", self._eos_text)):
            if self._template and key in self._template and known is None:
                log.warning(
                    "the chat template uses %s but %s does not tell its text; pass tokenizer=<the model's GGUF> "
                    "if prompts need it", key, self.base_url,
                )

    def _server_properties(self) -> Json:
        """Chat template and BOS/EOS texts where the server tells them.

        llama-server has ``/props``; vLLM has ``/tokenizer_info`` if run with
        ``--enable-tokenizer-info-endpoint``.
        """
        for path in ("/props", "/tokenizer_info"):
            try:
                found = self._json("GET", path, what="read the server's tokenizer properties", retry=False)
            except EngineError as exc:
                if exc.status is None:
                    raise
                continue
            if isinstance(found, dict) and found.get("chat_template"):
                return found
        return {}

    # -- tokens ---------------------------------------------------------------------------------
    def _server_tokenize(self, style: str, text: str, *, add_special: bool, retry: bool = True) -> list[int]:
        if style == "vllm":
            path, body = "/tokenize", {"model": self.served_model, "prompt": text, "add_special_tokens": add_special}
        elif style == "llama-cpp-python":
            path, body = "/extras/tokenize", {"model": self.served_model, "input": text}
        else:
            path, body = "/tokenize", {"content": text, "add_special": add_special}
        data = self._json("POST", path, body, what="tokenize", retry=retry)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise EngineError(f"tokenize: unexpected answer {str(data)[:_BODY_QUOTE]!r}", status=200)
        out = [t["id"] if isinstance(t, dict) else t for t in tokens]
        if not all(isinstance(t, int) for t in out):
            raise EngineError(f"tokenize: unexpected answer {str(data)[:_BODY_QUOTE]!r}", status=200)
        return out

    def _server_detokenize(self, tokens: Sequence[int], *, retry: bool = True) -> str:
        style = self._caps.tokenize_style
        if style == "vllm":
            path, body, key = "/detokenize", {"model": self.served_model, "tokens": list(tokens)}, "prompt"
        elif style == "llama-cpp-python":
            path, body, key = "/extras/detokenize", {"model": self.served_model, "tokens": list(tokens)}, "text"
        else:
            path, body, key = "/detokenize", {"tokens": list(tokens)}, "content"
        data = self._json("POST", path, body, what="detokenize", retry=retry)
        text = data.get(key) if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise EngineError(f"detokenize: unexpected answer {str(data)[:_BODY_QUOTE]!r}", status=200)
        return text

    def _raw_tokenize(self, text: str) -> list[int]:
        """Tokens of ``text`` with special tokens parsed and nothing added."""
        style = self._caps.tokenize_style
        if style is None:
            assert self._local is not None
            return self._local.tokenize_raw(text)
        ids = self._server_tokenize(style, text, add_special=False)
        prefix, suffix = self._caps.added_prefix, self._caps.added_suffix
        if prefix or suffix:
            if ids[: len(prefix)] != prefix or (suffix and ids[-len(suffix):] != suffix):
                raise EngineError(f"tokenize: the server did not add its usual {prefix}/{suffix} around {text[:40]!r}")
            ids = ids[len(prefix): len(ids) - len(suffix)]
        return ids

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a whole prompt: special tokens parsed, BOS added if the model wants one."""
        ids = self._raw_tokenize(text)
        with_bos(ids, self._bos)
        if self._learn_specials_on:
            self._learn_specials(text)
        return ids

    def _learn_specials(self, text: str) -> None:
        """Remember the text of special tokens the server detokenizes as something else (nothing)."""
        for piece in set(_SPECIAL_CANDIDATE.findall(text)):
            with self._lock:
                if piece in self._special_checked or len(self._special_checked) >= _MAX_SPECIAL_CHECKS:
                    continue
                self._special_checked.add(piece)
            ids = self._raw_tokenize(piece)
            if len(ids) == 1 and self._server_detokenize(ids) != piece:
                with self._lock:
                    self._specials[ids[0]] = piece

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``, special tokens written out."""
        if self._local is not None and self._caps.tokenize_style in (None, "llama-cpp-python"):
            return self._local.detokenize(tokens)
        if not self._specials:
            return self._server_detokenize(tokens) if tokens else ""
        parts: list[str] = []
        run: list[int] = []
        for token in tokens:
            special = self._specials.get(token)
            if special is None:
                run.append(token)
                continue
            if run:
                parts.append(self._run_text(run))
                run = []
            parts.append(special)
        if run:
            parts.append(self._run_text(run))
        return "".join(parts)

    def _run_text(self, run: list[int]) -> str:
        """Server text of tokens between special tokens; chat turns repeat, so recent runs are kept."""
        key = tuple(run)
        with self._lock:
            if key in self._run_texts:
                self._run_texts.move_to_end(key)
                return self._run_texts[key]
        text = self._server_detokenize(run)
        with self._lock:
            self._run_texts[key] = text
            while len(self._run_texts) > _RUN_CACHE:
                self._run_texts.popitem(last=False)
        return text

    def _text_prompt(self, tokens: Sequence[int]) -> str:
        """The text that a text-only server turns back into exactly ``tokens``, or ``_PromptMismatch``."""
        prefix, suffix = self._caps.added_prefix, self._caps.added_suffix
        ids = list(tokens)
        if suffix:
            raise _PromptMismatch(f"the server appends {suffix} to every text prompt")
        if ids[: len(prefix)] != prefix:
            raise _PromptMismatch(f"the server starts every text prompt with {prefix}, this prompt does not")
        body = ids[len(prefix):]
        text = self.detokenize(body)
        if self._raw_tokenize(text) != body:
            raise _PromptMismatch("its text tokenizes to other ids (a special token of unknown text, or a split "
                                  "the tokenizer would not make); pass tokenizer=<the model's GGUF>")
        return text

    def _wire(self, prompt: Prompt) -> tuple[str | list[int], int | None]:
        """What to send as ``prompt`` and its length in tokens, when known."""
        if self._caps.token_prompts:
            ids = list(prompt) if isinstance(prompt, list) else self.tokenize(prompt)
            return ids, len(ids)
        if isinstance(prompt, list):
            return self._text_prompt(prompt), len(prompt)
        bos_text = self._bos_text
        if self._caps.added_prefix and bos_text and prompt.startswith(bos_text):
            prompt = prompt[len(bos_text):]  # the server adds the BOS itself
        return prompt, None

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

    def _room(self, n_prompt: int | None, wanted: int) -> int:
        limit = self._caps.max_model_len
        if limit is None or n_prompt is None:
            return wanted
        if n_prompt >= limit:
            raise EngineError(f"prompt of {n_prompt} tokens does not fit the context of {limit}")
        return min(wanted, limit - n_prompt)

    def _generate_one(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        params = request.params
        try:
            wire, n_prompt = self._wire(request.prompt)
        except _PromptMismatch as exc:
            reason = f"cannot send this token prompt to {self.base_url}, which accepts only text: {exc}"
            raise EngineError(reason) from exc
        body: dict[str, Any] = {
            "model": self.served_model, "prompt": wire, "max_tokens": self._room(n_prompt, params.max_tokens),
            **self._sampling(params),
        }
        what = "generate"
        caps = self._caps
        if caps.stop_report == "client":
            out = self._stream(body, params.stop, what=what)
            text, finish, stop, completion, usage = out.text, out.finish, out.stop, out.chunks, out.usage
            completion = _int(usage.get("completion_tokens")) or completion
        else:
            if params.stop:
                body["stop"] = list(params.stop)
                body["include_stop_str_in_output" if caps.stop_report == "stop_reason" else "no_stop_trim"] = True
            choice, usage = self._complete(body, what=what)
            text, finish, stop = self._reported_finish(choice)
            completion = _int(usage.get("completion_tokens"))
        prompt_tokens = _int(usage.get("prompt_tokens")) or n_prompt
        if prompt_tokens is None:
            prompt_tokens = len(self.tokenize(wire)) if isinstance(wire, str) else len(wire)
        cached = _cached_tokens(usage)
        seconds = time.perf_counter() - started
        self._count(prompt_tokens, cached, completion, seconds)
        return Generation(text, finish, stop, prompt_tokens, completion, cached, seconds)

    def _reported_finish(self, choice: dict[str, Any]) -> tuple[str, FinishReason, str | None]:
        text = choice.get("text")
        if not isinstance(text, str):
            raise EngineError(f"generate: a choice without text: {str(choice)[:_BODY_QUOTE]!r}")
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
        cached = _cached_tokens(usage)
        self._count(len(request.prompt), cached, 0, seconds)
        return TokenLogprobs(values, prompt_tokens=len(request.prompt), cached_prompt_tokens=cached, seconds=seconds)

    def _logprob_body(self, prompt: Prompt) -> Json:
        body: Json = {"model": self.served_model, "prompt": prompt, "max_tokens": 1, "temperature": 1.0,
                      "top_p": 1.0, "seed": 0}
        if self._caps.flavor == "vllm":
            body["return_tokens_as_token_ids"] = True  # logprobs keyed by id, not by text
        return body

    def _scored_by_ids(self, prompt: list[int], candidates: list[int]) -> Scores:
        """One request; the server reports the candidates' log-probabilities at the next position."""
        self._room(len(prompt), 1)
        body = {**self._logprob_body(prompt), "logprobs": 1, "logprob_token_ids": candidates,
                "return_tokens_as_token_ids": True}
        choice, usage = self._complete(body, what="score the verdict tokens")
        top = _first_position_top(choice)
        if top is None:
            raise EngineError(_NO_LOGPROBS, body=json.dumps(choice)[:_BODY_KEEP])
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
            choice, usage = self._complete(body, what="score the verdict tokens")
            entries = choice.get("prompt_logprobs")
            last = entries[-1] if isinstance(entries, list) and entries else None
            if isinstance(last, dict):
                for other in candidates:
                    if other not in values and str(other) in last:
                        values[other] = _logprob_value(last[str(other)])
            values.setdefault(candidate, None)
        return {c: values.get(c) for c in candidates}, usage

    def _scored_by_forcing(self, prompt: list[int], candidates: list[int], *, force: bool) -> Scores:
        """Read the candidates at the next position: forced one by one (``force``) or from the top-k."""
        values: dict[int, float | None] = {}
        try:
            wire, _ = self._wire(prompt)
        except _PromptMismatch as exc:
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
                body = self._forcing_body(wire, candidate, self.logprobs_k)
            else:
                body = {**self._logprob_body(wire), "logprobs": self.logprobs_k}
            choice, usage = self._complete(body, what="score the verdict tokens")
            if force:
                values[candidate] = self._forced_value(choice, candidate)
            self._fill_from_top(choice, candidates, values)
        return {c: values.get(c) for c in candidates}, usage

    def _fill_from_top(self, choice: Json, candidates: list[int], values: dict[int, float | None]) -> None:
        """Take the candidates not known yet from a choice's top log-probabilities, when unambiguous."""
        top = _first_position_top(choice)
        if top is None:
            raise EngineError(_NO_LOGPROBS, body=json.dumps(choice)[:_BODY_KEEP])
        by_id, by_text = top
        missing = [c for c in candidates if values.get(c) is None]
        if by_id:
            for candidate in missing:
                if candidate in by_id:
                    values[candidate] = by_id[candidate]
            return
        texts = {c: self._candidate_text(c) for c in candidates}
        for candidate in missing:
            text = texts[candidate]
            if text is not None and list(texts.values()).count(text) == 1 and text in by_text:
                values[candidate] = by_text[text]

    def _candidate_text(self, token: int) -> str | None:
        """How the server writes ``token`` in its logprobs; ``None`` when that text is not usable."""
        with self._lock:
            if token in self._candidate_texts:
                return self._candidate_texts[token]
        try:
            text: str | None = self._server_detokenize([token], retry=False) if self._caps.tokenize_style else None
        except EngineError:
            text = None
        if not text or "\ufffd" in text:
            text = None
        with self._lock:
            self._candidate_texts[token] = text
        return text

    # -- description ----------------------------------------------------------------------------
    @property
    def chat_template(self) -> str | None:
        return self._template

    @property
    def special_tokens(self) -> dict[str, str]:
        out = {}
        if self._bos_text:
            out["bos_token"] = self._bos_text
        if self._eos_text:
            out["eos_token"] = self._eos_text
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
            "stop_report": caps.stop_report, "logprobs": caps.logprobs, "in_flight_limit": self._in_flight_limit,
            "max_model_len": caps.max_model_len,
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        if self._local is not None:
            self._local.close()
