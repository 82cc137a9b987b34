"""The embedded CPU engine: GGUF models through llama.cpp (``pip install 'genprm[llamacpp]'``).

One model, one KV cache, in this process. Two things make GenPRM cheap here:

* **Prefix reuse.** A path's stages and steps extend the same conversation, so each call only
  evaluates the tokens after the longest prefix already in the KV cache.
* **Saved states.** With N independent paths the cache would thrash between paths' histories; after
  each verdict read we keep a copy of the KV state (bounded by ``state_cache_mb``) and restore the
  one sharing the longest prefix with the next prompt, instead of re-evaluating the history.

Sampling follows the protocol's parameters with llama.cpp's extra filters off (``min_p=0``,
``repeat_penalty=1``). llama.cpp applies top-k and top-p before temperature, vLLM after; the
difference only matters when sampling, never for the verdict probabilities: they come from the
full logits (raw log-softmax, every token when asked), so both reward modes are exact here.

``sample`` (n continuations of one prompt) is the base class's: the n requests run back to back,
and after the first the prompt is in the KV cache, so only its last token is evaluated again
(``cached_prompt_tokens`` of samples 2..n is the prompt length minus one).

``parallel`` > 1 (opt-in) decodes up to that many generation requests together, those of one call
and those other threads have queued meanwhile, in a second context on the same weights with a KV
cache per sequence (:mod:`genprm.engines.llamacpp_batch`); a sequence's logits are bit-identical to
the path above, so are greedy and seeded outputs. Verdict reads keep the path above.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

# ggml's OpenMP threads spin after each parallel region by default; on a machine with fewer cores
# than busy threads (several llama.cpp processes, a sandbox, a server) that spinning takes the cores
# the working threads need: measured 10x slower here. Sleep instead (the user's setting wins); set
# before llama.cpp's library, and with it the OpenMP runtime, is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import llama_cpp  # noqa: E402
import numpy as np  # noqa: E402
from llama_cpp._utils import suppress_stdout_stderr

from genprm.engines.base import (
    ALL_TOKENS,
    Engine,
    Generation,
    GenerationRequest,
    LogprobRequest,
    Prompt,
    TokenLogprobs,
)
from genprm.engines.llamacpp_batch import BatchDecoder, BatchWorker, Continuation, Job, random_seed, state_header
from genprm.engines.llamacpp_build import check_build, installed_library_dir
from genprm.engines.models import resolve_gguf
from genprm.errors import ConfigError, ContextOverflowError, ModelNotFoundError
from genprm.tokens import common_prefix_length, with_bos

DEFAULT_CTX = 16384
"""The context when the model does not declare one."""
KV_CACHE_MB = 4096
"""The memory bound of the default context: the KV cache (f16) of the whole context fits in this."""

T = TypeVar("T")


def context_length(metadata: dict[str, str], requested: int | None, kv_cache_mb: int = KV_CACHE_MB) -> int:
    """The context to allocate: ``requested``, else the model's trained context as its GGUF metadata
    declares it, as far as its f16 KV cache fits in ``kv_cache_mb`` (never beyond what it was trained on).
    """
    arch = metadata.get("general.architecture", "")

    def number(name: str) -> int:
        try:
            return int(float(metadata.get(f"{arch}.{name}", 0) or 0))
        except ValueError:
            return 0

    trained = number("context_length")
    if requested:
        return min(requested, trained) if trained > 0 else requested
    layers, heads = number("block_count"), number("attention.head_count")
    kv_heads = number("attention.head_count_kv") or heads
    head_dim = number("attention.key_length") or (number("embedding_length") // heads if heads else 0)
    per_token = 2 * layers * kv_heads * head_dim * 2  # K and V, f16
    fits = kv_cache_mb * 2**20 // per_token if per_token > 0 else DEFAULT_CTX
    return max(256, min(trained if trained > 0 else DEFAULT_CTX, fits))


def _quiet_native_logs(verbose: bool) -> None:
    """llama.cpp logs warnings from C before ``Llama(verbose=False)`` takes effect; silence them."""
    try:
        from llama_cpp import _logger

        _logger.set_verbose(verbose)
    except (ImportError, AttributeError):  # a llama-cpp-python without the hook: keep its default
        pass


class _StateCache:
    """Saved KV states keyed by their token prefix, least recently used evicted past a byte budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.states: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.bytes = 0

    def best(self, tokens: Sequence[int]) -> tuple[int, Any]:
        best_len, best_key = 0, None
        for key in self.states:
            n = common_prefix_length(key, tokens)
            if n > best_len:
                best_len, best_key = n, key
        if best_key is None:
            return 0, None
        self.states.move_to_end(best_key)
        return best_len, self.states[best_key]

    def put(self, state: Any) -> None:
        _slim(state)
        size = state_bytes(state)
        if self.budget <= 0 or size > self.budget:
            return
        key = tuple(state.input_ids[: state.n_tokens].tolist())
        if key in self.states:
            self.bytes -= state_bytes(self.states.pop(key))
        self.states[key] = state
        self.bytes += size
        while self.bytes > self.budget and self.states:
            _, old = self.states.popitem(last=False)
            self.bytes -= state_bytes(old)


def _slim(state: Any) -> None:
    """Drop the logits copy ``save_state`` makes (n_batch × vocab floats: 311 MB for Qwen2).

    We never read restored logits (at least one token is always evaluated after a restore), and
    keeping them made a long run grow past 15 GB. One row still broadcasts in ``load_state``.
    """
    if state.scores.shape[0] > 1:
        state.scores = state.scores[:1].copy()


def top_of_vocabulary(logprobs: np.ndarray, count: int) -> tuple[dict[int, float], bool]:
    """:func:`~genprm.engines.base.most_likely` on a full log-probability vector, and whether the
    result is the whole vocabulary.
    """
    if count == 0:
        return {}, False
    if count == ALL_TOKENS or count >= logprobs.shape[0]:
        return {i: float(v) for i, v in enumerate(logprobs.tolist())}, True
    last = np.partition(logprobs, logprobs.shape[0] - count)[logprobs.shape[0] - count]  # the count-th largest
    chosen = np.flatnonzero(logprobs >= last)
    below = np.flatnonzero(logprobs < last)
    if below.size:
        chosen = np.append(chosen, below[np.argmax(logprobs[below])])
    return {int(i): float(logprobs[i]) for i in chosen}, False


def state_bytes(state: Any) -> int:
    """What a saved state really holds in memory: the KV data plus the arrays beside it."""
    return int(state.llama_state_size) + int(state.scores.nbytes) + int(state.input_ids.nbytes)


class LlamaCppEngine(Engine):
    """A GGUF model run by llama.cpp on the CPU."""

    name = "llamacpp"
    max_batch = 1
    shares_sample_prompt = True

    def __init__(
        self,
        model: str,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int = 512,
        state_cache_mb: int = 1024,
        kv_cache_mb: int = KV_CACHE_MB,
        parallel: int = 1,
        verbose: bool = False,
    ) -> None:
        """Load ``model``; the context is ``n_ctx`` or the model's own (see :func:`context_length`).

        ``parallel`` > 1: generation requests waiting at the same time are decoded together, that many
        at most, in a second context with a KV cache per sequence: each the size of the main context,
        as far as all of them fit in ``kv_cache_mb`` (a request longer than that runs alone on the main one).
        """
        super().__init__()
        if not 1 <= parallel <= llama_cpp.llama_max_parallel_sequences():
            raise ConfigError("parallel", parallel, f"must be in 1..{llama_cpp.llama_max_parallel_sequences()}")
        check_build(installed_library_dir())
        self.path = resolve_gguf(model)
        self._model_name = model
        threads = n_threads or max(1, os.cpu_count() or 1)
        _quiet_native_logs(verbose)
        try:
            with suppress_stdout_stderr(disable=verbose):
                probe = llama_cpp.Llama(str(self.path), vocab_only=True, verbose=verbose)
            context = context_length(probe.metadata, n_ctx, kv_cache_mb)
            del probe
            self.llm = llama_cpp.Llama(
                str(self.path),
                n_ctx=context,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=n_batch,
                logits_all=False,
                verbose=verbose,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelNotFoundError(f"llama.cpp could not load {self.path}: {exc}") from exc
        self._vocab = self.llm._model.vocab
        self._add_bos = bool(self.llm._model.add_bos_token())
        self._bos = self.llm.token_bos()
        self._states = _StateCache(state_cache_mb * 2**20)
        # One thread makes every llama.cpp call: each calling thread would get an OpenMP team of its
        # own, and callers (the scheduler's path threads, a server's requests) are many.
        self.parallel = parallel
        self._calls: ThreadPoolExecutor | None = None
        self._batch: BatchWorker | None = None
        if parallel == 1:
            self._calls = ThreadPoolExecutor(1, thread_name_prefix="genprm-llamacpp")
            return
        self.max_batch = parallel
        room = min(self.llm.n_ctx(), context_length(self.llm.metadata, None, max(1, kv_cache_mb // parallel)))
        decoder = BatchDecoder(
            self.llm._model.model, room=room, parallel=parallel, n_threads=threads, n_batch=n_batch,
            piece=lambda token: self.llm.detokenize([token], special=False),
            is_end=lambda token: bool(llama_cpp.llama_vocab_is_eog(self._vocab, token)),
            on_done=self._counted,
        )
        self._batch = BatchWorker(decoder)
        self._state_header = state_header(self.llm.ctx)  # the main context is empty yet

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of a whole prompt: special tokens parsed, BOS added if the model wants one."""
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return with_bos(ids, self._bos if self._add_bos and self._bos >= 0 else None)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.llm.detokenize(list(tokens), special=True).decode("utf-8", errors="replace")

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    @property
    def chat_template(self) -> str | None:
        return self.llm.metadata.get("tokenizer.chat_template")

    @property
    def special_tokens(self) -> dict[str, str]:
        return {"bos_token": self._special_text(self._bos), "eos_token": self._special_text(self.llm.token_eos())}

    @property
    def model_id(self) -> str:
        return Path(self.path).name

    # -- cache ----------------------------------------------------------------------------------
    def _position(self, tokens: list[int]) -> int:
        """Make the KV cache hold the longest available prefix of ``tokens``; return its length.

        In parallel mode a sequence of the batch context is a third source: it holds the path whose
        generation just ended there, which the verdict read continues.
        """
        current = common_prefix_length(self.llm.input_ids[: self.llm.n_tokens].tolist(), tokens)
        saved, state = self._states.best(tokens)
        slot, batched = self._batch.decoder.longest_prefix(tokens) if self._batch is not None else (0, 0)
        if state is not None and saved > current + 16 and saved >= batched:
            self.llm.load_state(state)
            self.stats.extra["state_restores"] = self.stats.extra.get("state_restores", 0) + 1
            return saved
        if batched > max(current, saved) + 16 and self._take_sequence(slot):
            return batched
        return current

    def _take_sequence(self, slot: int) -> bool:
        """The main context takes the keys and values of the batch context's sequence ``slot``."""
        assert self._batch is not None
        decoder = self._batch.decoder
        if self._state_header is None:
            return False
        if not decoder.copy_out(slot, self.llm.ctx, self._state_header):
            self.llm.reset()  # what the main context holds is unknown now
            return False
        held = decoder.slots[slot]
        self.llm.input_ids[: len(held)] = held
        self.llm.n_tokens = len(held)
        self.llm._requires_eval = True  # the logits in place are another sequence's
        self.stats.extra["sequence_copies"] = self.stats.extra.get("sequence_copies", 0) + 1
        return True

    def _check_room(self, n_prompt: int, n_new: int) -> int:
        room = self.llm.n_ctx() - n_prompt
        if room <= 0:
            raise ContextOverflowError(n_prompt, self.llm.n_ctx())
        return min(n_new, room)

    # -- operations -----------------------------------------------------------------------------
    def _tokens(self, prompt: Prompt) -> list[int]:
        return self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)

    def _on_worker(self, fn: Callable[[], T]) -> T:
        """``fn`` on the one thread that makes llama.cpp calls."""
        if self._batch is not None:
            return self._batch.call(fn)
        if self._calls is None:
            raise RuntimeError("the llama.cpp engine is closed")
        return self._calls.submit(fn).result()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if self._batch is None:
            return self._on_worker(lambda: [self._generate_one(r) for r in requests])
        batch = self._batch
        jobs: list[Job | GenerationRequest] = []
        for request in requests:  # every prompt is checked before any is decoded, as on the plain path
            tokens = self._tokens(request.prompt)
            max_new = self._check_room(len(tokens), request.params.max_tokens)
            fits = bool(tokens) and batch.decoder.fits(len(tokens), max_new)
            jobs.append(Job(tokens, request.params, max_new) if fits else request)
        batch.enqueue([job for job in jobs if isinstance(job, Job)])
        # What does not fit a sequence's room is decoded alone on the main context, between steps.
        futures = [job.future if isinstance(job, Job) else batch.submit(partial(self._generate_one, job))
                   for job in jobs]
        return [future.result() for future in futures]

    def _generate_one(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        params = request.params
        tokens = self._tokens(request.prompt)
        max_new = self._check_room(len(tokens), params.max_tokens)
        cached = min(self._position(tokens), len(tokens) - 1)
        self.llm.set_seed(params.seed if params.seed is not None else random_seed())
        text = Continuation(params.stop, max_new)
        for token in self.llm.generate(
            tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=0.0,
            typical_p=1.0,
            temp=params.temperature,
            repeat_penalty=1.0,
            reset=True,
        ):
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                text.end_of_sequence()
                break
            if text.add(self.llm.detokenize([token], special=False)):
                break
        return self._counted(text.generation(len(tokens), cached, time.perf_counter() - started))

    def next_token_logprobs(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        return self._on_worker(lambda: [self._logprobs_one(r) for r in requests])

    def _logprobs_one(self, request: LogprobRequest) -> TokenLogprobs:
        started = time.perf_counter()
        tokens = list(request.prompt)
        self._check_room(len(tokens), 1)
        cached = min(self._position(tokens), len(tokens) - 1)
        self.llm.n_tokens = cached
        self.llm.eval(tokens[cached:])
        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),)).astype(np.float64)
        logprobs = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
        result: dict[int, float | None] = {c: float(logprobs[c]) for c in request.candidates}
        top, whole = top_of_vocabulary(logprobs, request.top)
        self._states.put(self.llm.save_state())
        seconds = time.perf_counter() - started
        self._count(len(tokens), cached, 0, seconds)
        return TokenLogprobs(result, prompt_tokens=len(tokens), cached_prompt_tokens=cached, seconds=seconds,
                             top=top, whole_vocabulary=whole)

    def _count(self, prompt: int, cached: int, completion: int, seconds: float) -> None:
        self.stats.requests += 1
        self.stats.prompt_tokens += prompt
        self.stats.cached_prompt_tokens += cached
        self.stats.completion_tokens += completion
        self.stats.seconds += seconds

    def _counted(self, generation: Generation) -> Generation:
        self._count(generation.prompt_tokens, generation.cached_prompt_tokens, generation.completion_tokens,
                    generation.seconds)
        if self._batch is not None:
            decoder = self._batch.decoder
            self.stats.extra.update(batch_steps=decoder.steps, batch_step_tokens=decoder.stepped_tokens,
                                    batch_widest=decoder.widest)
        return generation

    def close(self) -> None:
        calls = getattr(self, "_calls", None)
        if calls is not None:
            calls.shutdown(wait=True)
            self._calls = None
        batch = getattr(self, "_batch", None)
        if batch is not None:
            batch.close()
            self._batch = None
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None  # type: ignore[assignment]
