"""Several llama.cpp sequences decoded in one batch: the opt-in ``parallel`` mode of the llama.cpp engine.

Decoding one sequence reads every weight once per token; decoding k sequences in one
``llama_decode`` reads them once for all k, so on a machine whose cores outrun its memory bandwidth
the tokens per second in all grow with k (on the idle 2-core development machine, 1.46x at 4
sequences and nothing at 2: see ``bench/llamacpp_parallel.py`` and bench/README.md). Here:

* :class:`Continuation` is one request's generated text checked against its stop strings and token
  budget, token by token (the plain engine path uses it too, so both stop exactly alike);
* :class:`BatchDecoder` owns a second llama.cpp context on the same model weights with ``parallel``
  sequences, each in a KV stream of its own (llama.cpp's ``kv_unified=False``). Each request gets a
  sequence: the one whose cached tokens share the longest prefix with its prompt, or a copy
  (``llama_memory_seq_cp``) of another sequence where that shares much more, e.g. a step's N paths.
  Then one token per live sequence per ``llama_decode``, each sampled by its own sampler chain (its
  own seed). A sequence's own stream keeps its attention exactly what it is alone: measured on the
  demo model, its logits are bit-identical to the plain path's, where one unified KV cache shared
  by the sequences (masked) moved them by up to 1.3 and changed greedy tokens;
* a verdict read (on the main context) of a path just generated here starts from a copy of its
  sequence (``llama_state_seq_get_data``/``set_data``), not from a prefill of the step's tokens;
* :class:`BatchWorker` is the one thread that makes every llama.cpp call in this mode: it runs queued
  calls (verdict reads on the main context) between decode steps and admits requests queued by other
  threads into free sequences as soon as one is free, so concurrent ``generate`` calls share batches.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import llama_cpp

from genprm.engines.base import FinishReason, Generation, SamplingParams
from genprm.tokens import common_prefix_length

T = TypeVar("T")


@dataclass
class Continuation:
    """The text generated for one request so far, and why it ended.

    ``text`` ends with the matched stop string (vLLM's ``include_stop_str_in_output``); a token that
    ends the sequence (EOS) is neither counted nor part of the text.
    """

    stop: tuple[str, ...]
    max_new: int
    raw: bytearray = field(default_factory=bytearray)
    text: str = ""
    produced: int = 0
    finish: FinishReason = "length"
    stop_string: str | None = None

    def add(self, piece: bytes) -> bool:
        """Append one generated token's bytes; True when the request is done (a stop string or the budget).

        Only the text a new token can complete is searched: the last longest-stop characters onward.
        """
        self.produced += 1
        self.raw += piece
        scan_from = max(0, len(self.text) - max((len(s) for s in self.stop), default=0))
        self.text = self.raw.decode("utf-8", errors="ignore")
        hits = [(at, s) for at, s in ((self.text.find(s, scan_from), s) for s in self.stop) if at >= 0]
        if hits:
            at, self.stop_string = min(hits)
            self.text, self.finish = self.text[: at + len(self.stop_string)], "stop"
            return True
        return self.produced >= self.max_new

    def end_of_sequence(self) -> None:
        self.finish = "eos"

    def generation(self, prompt_tokens: int, cached: int, seconds: float) -> Generation:
        return Generation(self.text, self.finish, self.stop_string, prompt_tokens, self.produced, cached, seconds)


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def sampler_chain(params: SamplingParams) -> Any:
    """A llama.cpp sampler for ``params``: the chain ``Llama.generate`` builds for the plain path (greedy
    at temperature 0; else top-k, top-p, then temperature, with ``typical_p=1`` and ``min_p=0`` off),
    seeded with ``params.seed`` (random when None), so a sequence samples alike in either mode.
    """
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if params.temperature == 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    for sampler in (
        llama_cpp.llama_sampler_init_top_k(params.top_k),
        llama_cpp.llama_sampler_init_typical(1.0, 1),
        llama_cpp.llama_sampler_init_top_p(params.top_p, 1),
        llama_cpp.llama_sampler_init_min_p(0.0, 1),
        llama_cpp.llama_sampler_init_temp(params.temperature),
        llama_cpp.llama_sampler_init_dist(params.seed if params.seed is not None else random_seed()),
    ):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    return chain


COPY_GAIN = 64
"""Prompt tokens a copy from another sequence must save: across KV streams llama.cpp copies the
source's whole stream (every layer's cells), not just the prefix."""


@dataclass
class Job:
    """One request waiting for, or in, a sequence. ``max_new`` is already cut to the context's room."""

    tokens: list[int]
    params: SamplingParams
    max_new: int
    future: Future[Generation] = field(default_factory=Future)


@dataclass
class _Live:
    job: Job
    slot: int
    sampler: Any
    text: Continuation
    cached: int
    started: float
    pending: int
    """The token to decode next: the prompt's last, then each sampled one."""


class BatchDecoder:
    """``parallel`` sequences of one llama.cpp context, each with ``room`` tokens of KV, decoded together.

    ``slots[s]`` mirrors the tokens whose keys and values sequence ``s`` holds, so that a later
    request reuses them (the next stage or step of the path that left them there).
    """

    def __init__(
        self,
        model: Any,
        *,
        room: int,
        parallel: int,
        n_threads: int,
        n_batch: int,
        piece: Callable[[int], bytes],
        is_end: Callable[[int], bool],
        on_done: Callable[[Generation], object],
    ) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = room * parallel
        params.n_batch = params.n_ubatch = max(n_batch, parallel)
        params.n_seq_max = parallel
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = False
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the plain path's context
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {parallel} sequences x {room} tokens")
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.room = min(room, int(llama_cpp.llama_n_ctx_seq(ctx)))
        """The most tokens (prompt and generated) one sequence holds."""
        self.n_batch = int(params.n_batch)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.parallel = parallel
        self.slots: list[list[int]] = [[] for _ in range(parallel)]
        self._used = [0] * parallel
        self._clock = itertools.count(1)
        self.live: dict[int, _Live] = {}
        self._piece, self._is_end, self._on_done = piece, is_end, on_done
        self.steps = 0
        """``llama_decode`` calls that generated tokens (one per live sequence each)."""
        self.stepped_tokens = 0
        self.widest = 0

    # -- admission ------------------------------------------------------------------------------
    def free_slots(self) -> list[int]:
        return [s for s in range(self.parallel) if s not in self.live]

    def fits(self, n_prompt: int, max_new: int) -> bool:
        return n_prompt + max_new <= self.room

    def admit(self, job: Job) -> None:
        """Give ``job`` a free sequence (there must be one) and prefill its prompt but the last token."""
        free = self.free_slots()
        tokens = job.tokens
        reuse = [min(common_prefix_length(prefix, tokens), len(tokens) - 1) for prefix in self.slots]
        slot = max(free, key=lambda s: (reuse[s], -self._used[s]))
        source = max(range(self.parallel), key=lambda s: reuse[s])
        keep = reuse[slot]
        if reuse[source] >= keep + COPY_GAIN:
            llama_cpp.llama_memory_seq_cp(self.memory, source, slot, -1, -1)  # the whole stream, then cut
            self.slots[slot], keep = list(self.slots[source]), reuse[source]
        if llama_cpp.llama_memory_seq_rm(self.memory, slot, keep, -1):
            del self.slots[slot][keep:]
        else:
            self._empty(slot)  # a model whose cache cannot drop a tail (recurrent): start over
        cached = len(self.slots[slot])
        started = time.perf_counter()
        try:
            self._prefill(slot, tokens[cached:-1])
        except Exception:
            self._empty(slot)  # what a failed decode left there is unknown
            raise
        self.live[slot] = _Live(job, slot, sampler_chain(job.params), Continuation(job.params.stop, job.max_new),
                                cached, started, tokens[-1])

    def longest_prefix(self, tokens: Sequence[int]) -> tuple[int, int]:
        """The sequence holding the longest prefix of ``tokens``, and that prefix's length."""
        lengths = [common_prefix_length(prefix, tokens) for prefix in self.slots]
        slot = max(range(self.parallel), key=lengths.__getitem__)
        return slot, lengths[slot]

    def copy_out(self, slot: int, ctx: Any, header: bytes) -> bool:
        """Put sequence ``slot``'s keys and values into sequence 0 of ``ctx`` (one KV stream, the same
        model, ``header`` from :func:`state_header`), in place of what it held; False when refused.
        """
        state = one_stream(sequence_state(self.ctx, slot), slot, self.parallel, header)
        if state is None:
            return False
        data = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        return llama_cpp.llama_state_seq_set_data(ctx, data, len(state), 0) > 0

    def _empty(self, slot: int) -> None:
        llama_cpp.llama_memory_seq_rm(self.memory, slot, -1, -1)
        self.slots[slot] = []

    def _prefill(self, slot: int, tokens: Sequence[int]) -> None:
        for at in range(0, len(tokens), self.n_batch):
            chunk = tokens[at : at + self.n_batch]
            start = len(self.slots[slot])
            self._fill([(token, start + i, slot, False) for i, token in enumerate(chunk)])
            self.slots[slot].extend(chunk)

    def _fill(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (token, position, sequence, wants logits) entries."""
        batch = self.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, slot, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = slot
        code = llama_cpp.llama_decode(self.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed ({code}) on a batch of {len(entries)} tokens")

    # -- decoding -------------------------------------------------------------------------------
    def step(self) -> None:
        """Decode one token of every live sequence and sample the next; finished requests are answered."""
        order = list(self.live.values())
        self._fill([(seq.pending, len(self.slots[seq.slot]), seq.slot, True) for seq in order])
        self.steps += 1
        self.stepped_tokens += len(order)
        self.widest = max(self.widest, len(order))
        for i, seq in enumerate(order):
            self.slots[seq.slot].append(seq.pending)
            token = llama_cpp.llama_sampler_sample(seq.sampler, self.ctx, i)
            if self._is_end(token):
                seq.text.end_of_sequence()
            elif not seq.text.add(self._piece(token)):
                seq.pending = token
                continue
            self._finish(seq)

    def _finish(self, seq: _Live) -> None:
        generation = seq.text.generation(len(seq.job.tokens), seq.cached, time.perf_counter() - seq.started)
        self._release(seq)
        self._on_done(generation)
        seq.job.future.set_result(generation)

    def fail_live(self, error: BaseException) -> None:
        """Answer every live request with ``error`` (a failed decode: what they hold is unknown)."""
        for seq in list(self.live.values()):
            self._drop(seq, error)

    def _drop(self, seq: _Live, error: BaseException) -> None:
        self._release(seq)
        self._empty(seq.slot)  # what it holds is unknown after a failed decode
        seq.job.future.set_exception(error)

    def _release(self, seq: _Live) -> None:
        del self.live[seq.slot]
        llama_cpp.llama_sampler_free(seq.sampler)
        self._used[seq.slot] = next(self._clock)

    def close(self) -> None:
        self.fail_live(RuntimeError("the engine was closed"))
        if self.ctx is not None:
            llama_cpp.llama_batch_free(self.batch)
            llama_cpp.llama_free(self.ctx)
            self.ctx = None


class BatchWorker:
    """The one thread making every llama.cpp call: queued calls run between decode steps, queued
    generation jobs join the batch as sequences come free (first come, first served).
    """

    def __init__(self, decoder: BatchDecoder) -> None:
        self.decoder = decoder
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="genprm-llamacpp", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the worker thread, before its next decode step."""
        future: Future[T] = Future()
        with self._cond:
            self._check_open()
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    def call(self, fn: Callable[[], T]) -> T:
        return self.submit(fn).result()

    def enqueue(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs`` for sequences; each ``job.future`` gets its generation."""
        with self._cond:
            self._check_open()
            self._jobs.extend(jobs)
            self._cond.notify()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the llama.cpp engine is closed")

    def _run(self) -> None:
        decoder = self.decoder
        while True:
            with self._cond:
                while not (self._calls or self._jobs or decoder.live or self._closed):
                    self._cond.wait()
                if self._closed and not (self._calls or self._jobs or decoder.live):
                    return
                calls = list(self._calls)
                self._calls.clear()
            for fn, future in calls:
                _settle(future, fn)
            self._admit()
            if decoder.live:
                try:
                    decoder.step()
                except Exception as exc:  # noqa: BLE001 - the waiting callers get it; the thread lives on
                    decoder.fail_live(exc)

    def _admit(self) -> None:
        while self.decoder.free_slots():
            with self._cond:
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            try:
                self.decoder.admit(job)
            except Exception as exc:  # noqa: BLE001 - the caller gets it
                job.future.set_exception(exc)

    def close(self) -> None:
        """Finish what is queued and in flight, then stop the thread and free the context."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self.decoder.close()


WORD = 4
"""llama.cpp writes a sequence's KV state as 32-bit little-endian header words, then per KV stream
a cell count and, when not zero, that stream's cells."""


def sequence_state(ctx: Any, seq: int) -> bytes:
    size = llama_cpp.llama_state_seq_get_size(ctx, seq)
    buffer = (ctypes.c_uint8 * size)()
    return bytes(buffer[: llama_cpp.llama_state_seq_get_data(ctx, buffer, size, seq)])


def state_header(ctx: Any) -> bytes | None:
    """What precedes the stream count in a sequence state of ``ctx``, a context of one KV stream
    whose sequence 0 is empty (its state is that header, the stream count 1 and the cell count 0);
    None where it does not read so.
    """
    empty = sequence_state(ctx, 0)
    if len(empty) < 2 * WORD or empty[-2 * WORD :] != (1).to_bytes(WORD, "little") + bytes(WORD):
        return None
    return empty[: -2 * WORD]


def one_stream(state: bytes, stream: int, streams: int, header: bytes) -> bytes | None:
    """A sequence's KV state from a context of ``streams`` KV streams, rewritten as one from a context
    of one stream (the main context), or None where it is not laid out as expected.

    A sequence's cells are all in its own stream, but llama.cpp reads a sequence state back only into
    a context of the same stream count ("n_stream mismatch"). So: the one-stream context's own
    ``header`` (its magic and sequence id), the count 1, then the sequence's stream. Anything else is
    refused (another llama.cpp layout), and the caller computes the prefix instead.
    """
    count = len(header)
    first = count + WORD * (1 + stream)
    tail = WORD * (streams - 1 - stream)
    if len(state) <= first + WORD + tail or state[:WORD] != header[:WORD]:
        return None
    if int.from_bytes(state[count : count + WORD], "little") != streams:
        return None
    if any(state[count + WORD : first]) or any(state[len(state) - tail :]) or not any(state[first : first + WORD]):
        return None
    return header + (1).to_bytes(WORD, "little") + state[first : len(state) - tail]


def _settle(future: Future[T], fn: Callable[[], T]) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
        future.set_exception(exc)

