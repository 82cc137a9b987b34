"""The vLLM engine: Hugging Face models through ``vllm.LLM`` in this process (GPU, or vLLM's CPU build).

Install vLLM into its own environment (it pins its own torch): on a CPU machine run
``scripts/install-vllm-cpu PYTHON``; on a GPU machine ``pip install vllm``. This module imports
vLLM only when the engine is created.

Three things make GenPRM fast here:

* **Continuous batching across threads.** The verifier's scheduler calls :meth:`generate` from many
  worker threads with one request each, and ``vllm.LLM`` is not thread-safe. Calls are therefore
  queued and one engine thread owns the model: it admits everything pending into the running batch
  at each engine step (``LLM.llm_engine.add_request`` + ``step``), so a path's next call joins the
  batch while the others are still decoding, and a verdict read never waits for the longest
  generation. ``continuous=False`` instead drains the queue into one ``LLM.generate`` call at a
  time (plain micro-batching, the public API only).
* **Prefix caching** (on by default): a path's stages and steps extend the same conversation, and
  all paths of a step share the problem and the earlier steps.
* **Verdict reads cost one decode step**: the candidate tokens' log-probabilities are read at the
  next position with ``SamplingParams.logprob_token_ids`` (raw log-softmax of the logits, so exact
  at temperature 1 whatever the sampling settings), which keeps the prefix cache. Without that
  field (older vLLM) they come from prompt log-probabilities of ``prompt + [candidate]``, which are
  raw too but recompute the prompt (vLLM does not read the prefix cache for them).
  The paper's reward asks for the top-T raw log-probabilities instead (``logprobs=T`` on the same
  one-step request; the engine runs with ``logprobs_mode="raw_logprobs"`` and no cap on
  ``max_logprobs``), from which :func:`genprm.protocol.verdict.v0_nucleus` rebuilds vLLM V0's
  processed distribution exactly. vLLM lets a batch that holds a ``logprob_token_ids`` request
  return only those ids for every request in it, so the engine thread never runs the two kinds of
  read in one batch.
* **n samples of one prompt** (:meth:`sample`) are one vLLM request with ``n``: vLLM fans it out
  into n child requests seeded ``seed + i`` (``vllm/v1/engine/parallel_sampling.py``), the seeds
  the base class gives n separate requests, that share the prompt's KV blocks.

Semantics match the llama.cpp engine: outputs in input order, ``text`` includes the stop string
that ended it and ``stop_string`` names it, ``finish_reason`` is ``stop``, ``length`` or ``eos``.
vLLM applies top-k and top-p after temperature (llama.cpp before); this only matters when sampling.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from genprm.engines.base import (
    ALL_TOKENS,
    Engine,
    FinishReason,
    Generation,
    GenerationRequest,
    LogprobRequest,
    Prompt,
    TokenLogprobs,
    most_likely,
)
from genprm.errors import ConfigError, ContextOverflowError, EngineError, ModelNotFoundError
from genprm.tokens import with_bos

DEFAULT_CTX = 16384
CPU_KV_CACHE_GIB = 4.0
CPU_BLOCK_SIZE = 32
"""KV block size on vLLM's CPU build (its attention takes multiples of 32; its default is 128)."""
TIE_MARGIN = 32
"""Log-probabilities asked beyond a paper-mode read's ``top``: bf16 logits tie often."""


@dataclass
class _Job:
    """One request on its way through the engine thread."""

    prompt: list[int]
    params: Any  # vllm.SamplingParams
    reads: str | None = None
    """The kind of log-probability read (``ids``, ``top``) that must not share a batch with the other."""
    submitted: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    output: Any = None  # vllm.RequestOutput
    error: BaseException | None = None
    seconds: float = 0.0


def _model_context(model: str) -> int:
    """The context length a local Hugging Face folder declares, or 0 when unknown."""
    config = Path(model) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    text_config = data.get("text_config") if isinstance(data.get("text_config"), dict) else {}
    value = data.get("max_position_embeddings") or text_config.get("max_position_embeddings") or 0
    return int(value) if isinstance(value, int | float) else 0


def _finite(value: float) -> float | None:
    return value if not math.isnan(value) else None


class VLLMEngine(Engine):
    """A Hugging Face model (folder or hub id) run by vLLM in this process."""

    name = "vllm"
    shares_sample_prompt = True

    def __init__(
        self,
        model: str,
        *,
        max_model_len: int = DEFAULT_CTX,
        enable_prefix_caching: bool = True,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.9,
        max_batch: int = 256,
        continuous: bool = True,
        cpu_kv_cache_gib: float = CPU_KV_CACHE_GIB,
        **engine_args: Any,
    ) -> None:
        """Start vLLM on ``model``; ``engine_args`` go to ``vllm.LLM`` unchanged.

        On vLLM's CPU build ``gpu_memory_utilization`` would reserve that fraction of the machine's
        memory, so there the KV cache gets ``cpu_kv_cache_gib`` instead (unless ``engine_args`` sets
        ``kv_cache_memory_bytes`` or the environment sets ``VLLM_CPU_KVCACHE_SPACE``), the model runs
        eagerly (``enforce_eager``) and on every core (``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` unless set).
        """
        super().__init__()
        if max_batch < 1:
            raise ConfigError("max_batch", max_batch, "must be at least 1")
        if max_model_len < 2:
            raise ConfigError("max_model_len", max_model_len, "must be at least 2")
        local = Path(model).expanduser()
        if local.exists() or model.startswith((os.path.sep, ".", "~")):
            if not local.is_dir():
                raise ModelNotFoundError(f"vLLM needs a Hugging Face model folder (or a hub id); {model} is not one")
            model = str(local)
        declared = _model_context(model)
        if declared and declared < max_model_len:
            max_model_len = declared
        self.max_batch = max_batch
        self.continuous = continuous
        self._model_name = model
        # vLLM's CPU build: use both cores for the model (its default keeps one for the front end,
        # which is mostly idle while a batch decodes) unless the user chose otherwise.
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        # vLLM logs to stdout by default, which would mix its log lines into results written there
        # (`genprm verify` without --out prints JSONL): send them to stderr unless the user chose.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError as exc:  # pragma: no cover - the registry checks first
            raise EngineError(f"vLLM is not importable here: {exc}") from exc
        self._vllm = vllm
        args: dict[str, Any] = {
            "max_model_len": max_model_len,
            "enable_prefix_caching": enable_prefix_caching,
            "dtype": dtype,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_num_seqs": max_batch,
            "logprobs_mode": "raw_logprobs",
            "max_logprobs": -1,  # the paper's reward may ask for the whole vocabulary (top-k off)
            **engine_args,
        }
        if current_platform.is_cpu():
            if "kv_cache_memory_bytes" not in engine_args and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                args["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib * 2**30)
            # Prefix caching reuses whole KV blocks, and the CPU backend's default block is 128 tokens:
            # every request recomputed its last, partly filled block. 32 is the smallest it takes;
            # bench/throughput.py at its issue's setting: 45% fewer prompt tokens computed, 12% less wall.
            args.setdefault("block_size", CPU_BLOCK_SIZE)
            # torch.compile's warm-up adds 50-150 s to every start on 2 cores for ~5% batched
            # throughput (0.5B model); pass enforce_eager=False for long runs.
            args.setdefault("enforce_eager", True)
            # vLLM-CPU 0.32 kills its engine when chunked prefill splits a *seeded* request's prompt
            # across steps: it rewinds the request's torch generator, and CPU generators refuse
            # ("CPU Generator does not use offset"). Every GenPRM path is seeded and many long prompts
            # arrive at once, so prefill whole prompts (a step then holds up to max_model_len tokens).
            if "enable_chunked_prefill" not in engine_args:
                args["enable_chunked_prefill"] = False
                args.setdefault("max_num_batched_tokens", max(max_model_len, max_batch, 2048))
        started = time.perf_counter()
        try:
            self.llm = vllm.LLM(model, **args)
        except OSError as exc:
            raise ModelNotFoundError(f"vLLM could not load {model}: {exc}") from exc
        except (ValueError, RuntimeError) as exc:  # bad settings, too little memory, a dead engine process
            raise EngineError(f"vLLM could not start on {model}: {exc}") from exc
        self.stats.extra["startup_seconds"] = time.perf_counter() - started
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self._tokenizer = self.llm.get_tokenizer()
        self._bos_id: int | None = getattr(self._tokenizer, "bos_token_id", None)
        self._add_bos = self._bos_id is not None and self._wants_bos()
        self._token_ids_supported = "logprob_token_ids" in getattr(vllm.SamplingParams, "__struct_fields__", ())
        from vllm.sampling_params import RequestOutputKind

        self._final_only = RequestOutputKind.FINAL_ONLY
        self._max_logprobs = int(getattr(self.llm.llm_engine.model_config, "max_logprobs", 20))
        self._vocab_size = int(self.llm.llm_engine.model_config.get_vocab_size())
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._held: list[_Job] = []  # log-probability reads waiting for the other kind's batch to finish
        self._closed = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="genprm-vllm", daemon=True)
        self._thread.start()

    # -- tokens ---------------------------------------------------------------------------------
    def _wants_bos(self) -> bool:
        """Whether the tokenizer adds BOS to a plain encode (``add_bos_token`` in any tokenizer class)."""
        probe = "a"
        with_special = self._tokenizer.encode(probe, add_special_tokens=True)
        without = self._tokenizer.encode(probe, add_special_tokens=False)
        return bool(with_special) and with_special[0] == self._bos_id and (not without or without[0] != self._bos_id)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a whole prompt: special tokens parsed, BOS added if the model wants one."""
        ids = list(self._tokenizer.encode(text, add_special_tokens=False))
        return with_bos(ids, self._bos_id if self._add_bos else None)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(tokens), skip_special_tokens=False))

    @property
    def chat_template(self) -> str | None:
        template = getattr(self._tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None

    @property
    def special_tokens(self) -> dict[str, str]:
        return {
            "bos_token": str(getattr(self._tokenizer, "bos_token", None) or ""),
            "eos_token": str(getattr(self._tokenizer, "eos_token", None) or ""),
        }

    @property
    def model_id(self) -> str:
        return Path(self._model_name.rstrip("/")).name or self._model_name

    # -- operations -----------------------------------------------------------------------------
    def _tokens(self, prompt: Prompt) -> list[int]:
        return self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)

    def _room(self, n_prompt: int, n_new: int) -> int:
        room = self.max_model_len - n_prompt
        if n_prompt == 0:
            raise EngineError("empty prompt")
        if room <= 0:
            raise ContextOverflowError(n_prompt, self.max_model_len)
        return min(n_new, room)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        jobs = [self._generation_job(request, n=1) for request in requests]
        self._run(jobs)
        return [self._generation(job, job.output.outputs[0]) for job in jobs]

    def sample(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        """``params.n`` continuations per prompt as one vLLM request with ``n`` (children seeded ``seed + i``)."""
        jobs = [self._generation_job(request, n=request.params.n) for request in requests]
        self._run(jobs)
        return [[self._generation(job, completion) for completion in job.output.outputs] for job in jobs]

    def _generation_job(self, request: GenerationRequest, *, n: int) -> _Job:
        p = request.params
        tokens = self._tokens(request.prompt)
        params = self._vllm.SamplingParams(
            n=n,
            max_tokens=self._room(len(tokens), p.max_tokens),
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            min_p=0.0,
            seed=p.seed,
            stop=list(p.stop) or None,
            include_stop_str_in_output=True,
        )
        return _Job(tokens, params)

    def _generation(self, job: _Job, completion: Any) -> Generation:
        out = job.output
        finish: FinishReason
        stop_hit: str | None = None
        if completion.finish_reason == "length":
            finish = "length"
        elif isinstance(completion.stop_reason, str):
            finish, stop_hit = "stop", completion.stop_reason
        elif completion.finish_reason == "stop":
            finish = "eos"  # the EOS token (stop_reason None) or a stop token id
        else:
            raise EngineError(f"vLLM ended a request with finish_reason={completion.finish_reason!r}")
        return Generation(
            text=completion.text,
            finish_reason=finish,
            stop_string=stop_hit,
            prompt_tokens=len(job.prompt),
            completion_tokens=len(completion.token_ids),
            cached_prompt_tokens=int(getattr(out, "num_cached_tokens", 0) or 0),
            seconds=job.seconds,
        )

    def next_token_logprobs(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        results: list[TokenLogprobs | None] = [None] * len(requests)
        with_top = [i for i, r in enumerate(requests) if r.top != 0]
        plain = [i for i, r in enumerate(requests) if r.top == 0]
        groups: list[tuple[list[int], list[TokenLogprobs]]] = []
        if with_top:
            groups.append((with_top, self._logprobs_with_top([requests[i] for i in with_top])))
        if plain:
            chosen = [requests[i] for i in plain]
            read = self._logprobs_by_token_ids if self._token_ids_supported else self._logprobs_by_prompt
            groups.append((plain, read(chosen)))
        for indices, outputs in groups:
            for i, output in zip(indices, outputs):
                results[i] = output
        return [r for r in results if r is not None]

    def _logprobs_with_top(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        """One decode step per request with ``logprobs=top``: the raw top-T at the next position.

        A candidate outside the top-T maps to ``None`` (less likely than all of them), which is all
        the paper's reading needs; ``ALL_TOKENS`` asks vLLM for the whole vocabulary.
        """
        vocab = self._vocab_size
        cap = vocab if self._max_logprobs == -1 else min(self._max_logprobs, vocab)
        jobs = []
        for request in requests:
            self._room(len(request.prompt), 1)
            # TIE_MARGIN more than asked, so that a tie with the last asked token shows where it ends
            count = min(vocab if request.top == ALL_TOKENS else request.top + TIE_MARGIN, cap)
            params = self._vllm.SamplingParams(
                max_tokens=1, temperature=0.0, detokenize=False, logprobs=-1 if count >= vocab else count
            )
            jobs.append(_Job(list(request.prompt), params, reads="top"))
        self._run(jobs)
        results = []
        for request, job in zip(requests, jobs):
            steps = job.output.outputs[0].logprobs or [{}]
            found = {int(t): v.logprob for t, v in steps[0].items() if _finite(v.logprob) is not None}
            top = most_likely(found, request.top)
            whole = len(found) >= self._vocab_size
            approximate = None
            if request.top == ALL_TOKENS and not whole:
                approximate = f"vLLM returned {len(found)} of {self._vocab_size} log-probabilities (max_logprobs)"
            logprobs = {c: found.get(c) for c in request.candidates}
            result = self._token_logprobs(job, logprobs)
            results.append(replace(result, top=top, whole_vocabulary=whole, approximate=approximate))
        return results

    def _logprobs_by_token_ids(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        """One decode step per request; vLLM returns the raw log-softmax at the candidate ids."""
        jobs = []
        for request in requests:
            self._room(len(request.prompt), 1)
            params = self._vllm.SamplingParams(
                max_tokens=1, temperature=0.0, detokenize=False, logprob_token_ids=list(request.candidates)
            )
            jobs.append(_Job(list(request.prompt), params, reads="ids"))
        self._run(jobs)
        results = []
        for request, job in zip(requests, jobs):
            steps = job.output.outputs[0].logprobs or [{}]
            found = steps[0]
            logprobs = {c: (_finite(found[c].logprob) if c in found else None) for c in request.candidates}
            results.append(self._token_logprobs(job, logprobs))
        return results

    def _logprobs_by_prompt(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        """Fallback: the prompt log-probability of each candidate appended to the prompt."""
        jobs: list[tuple[LogprobRequest, list[_Job]]] = []
        for request in requests:
            self._room(len(request.prompt) + 1, 1)
            params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, detokenize=False, prompt_logprobs=0)
            jobs.append((request, [_Job([*request.prompt, c], params) for c in request.candidates]))
        self._run([job for _, group in jobs for job in group])
        results = []
        for request, group in jobs:
            logprobs: dict[int, float | None] = {}
            for candidate, job in zip(request.candidates, group):
                last = (job.output.prompt_logprobs or [None])[-1] or {}
                logprobs[candidate] = _finite(last[candidate].logprob) if candidate in last else None
            first = group[0] if group else _Job(list(request.prompt), None)
            results.append(self._token_logprobs(first, logprobs))
        return results

    def _token_logprobs(self, job: _Job, logprobs: dict[int, float | None]) -> TokenLogprobs:
        cached = int(getattr(job.output, "num_cached_tokens", 0) or 0) if job.output is not None else 0
        return TokenLogprobs(logprobs, prompt_tokens=len(job.prompt), cached_prompt_tokens=cached, seconds=job.seconds)

    # -- the engine thread ----------------------------------------------------------------------
    def _run(self, jobs: list[_Job]) -> None:
        """Queue ``jobs`` for the engine thread and wait until each has its output."""
        if not jobs:
            return
        with self._cond:
            if self._closed or self._failure is not None:
                raise EngineError(
                    "the vLLM engine is closed" if self._closed else f"the vLLM engine failed: {self._failure}"
                )
            self._queue.extend(jobs)
            self._cond.notify_all()
        for job in jobs:
            job.done.wait()
        for job in jobs:
            if job.error is not None:
                if isinstance(job.error, EngineError):
                    raise job.error
                raise EngineError(f"vLLM failed on a request: {job.error}") from job.error

    def _take(self, block: bool) -> list[_Job] | None:
        """Everything queued; ``None`` once closed with nothing left. Waits only when ``block``."""
        with self._cond:
            while block and not self._queue and not self._closed:
                self._cond.wait()
            if self._closed and not self._queue and block:
                return None
            taken, self._queue = self._queue, []
            return taken

    def _serve(self) -> None:
        running: dict[str, _Job] = {}
        try:
            while True:
                new = self._take(block=not running and not self._held)
                if new is None:
                    return
                new, self._held = [*self._held, *new], []
                busy_from = time.perf_counter()
                if not self.continuous and not running and new:
                    self._generate_batch(new)
                else:
                    self._admit(new, running)
                    if running:
                        self._step(running)
                self.stats.seconds += time.perf_counter() - busy_from
        except BaseException as exc:  # the engine died: fail every waiting caller, refuse new ones
            with self._cond:
                self._failure = exc
                pending, self._queue = self._queue, []
            for job in [*running.values(), *self._held, *pending]:
                job.error = exc
                job.done.set()

    def _admissible(self, jobs: list[_Job], busy: set[str]) -> list[_Job]:
        """The jobs that may join a batch whose reads are ``busy``; the rest wait in ``_held``.

        One kind of log-probability read at a time: the first kind in line goes, generations always.
        """
        kinds = set(busy)
        admitted = []
        for job in jobs:
            if job.reads is not None and kinds - {job.reads}:
                self._held.append(job)
                continue
            if job.reads is not None:
                kinds.add(job.reads)
            admitted.append(job)
        return admitted

    def _admit(self, new: list[_Job], running: dict[str, _Job]) -> None:
        new = self._admissible(new, {j.reads for j in running.values() if j.reads is not None})
        if not new:
            return
        self.stats.extra["batches"] = self.stats.extra.get("batches", 0) + 1
        engine = self.llm.llm_engine
        for job in new:
            job.params.output_kind = self._final_only  # one output per request (all n samples), when it ends
            request_id = f"genprm-{next(self._ids)}"
            try:
                engine.add_request(request_id, {"prompt_token_ids": job.prompt}, job.params)
            except Exception as exc:  # a bad request (vLLM's validation): fail it alone; a dead engine fails step()
                self._finish(job, error=exc)
                continue
            running[request_id] = job
        self.stats.extra["max_running"] = max(self.stats.extra.get("max_running", 0), len(running))

    def _step(self, running: dict[str, _Job]) -> None:
        self.stats.extra["steps"] = self.stats.extra.get("steps", 0) + 1
        for out in self.llm.llm_engine.step():
            if out.finished and out.request_id in running:
                self._finish(running.pop(out.request_id), output=out)

    def _generate_batch(self, jobs: list[_Job]) -> None:
        """Micro-batching: everything pending as one ``LLM.generate`` call (one kind of read in it)."""
        jobs = self._admissible(jobs, set())
        self.stats.extra["batches"] = self.stats.extra.get("batches", 0) + 1
        self.stats.extra["max_running"] = max(self.stats.extra.get("max_running", 0), len(jobs))
        try:
            outputs = self.llm.generate(
                [{"prompt_token_ids": job.prompt} for job in jobs], [job.params for job in jobs], use_tqdm=False
            )
        except Exception as exc:  # a bad request fails its batch; a dead engine fails every later one too
            for job in jobs:
                self._finish(job, error=exc)
            return
        for job, out in zip(jobs, outputs):
            self._finish(job, output=out)

    def _finish(self, job: _Job, *, output: Any = None, error: BaseException | None = None) -> None:
        job.seconds = time.perf_counter() - job.submitted
        job.output, job.error = output, error
        if output is not None:
            self.stats.requests += 1
            self.stats.prompt_tokens += len(job.prompt)
            self.stats.cached_prompt_tokens += int(getattr(output, "num_cached_tokens", 0) or 0)
            self.stats.completion_tokens += sum(len(c.token_ids) for c in output.outputs)
        job.done.set()

    def close(self) -> None:
        """Stop the engine thread and shut vLLM's engine processes down; safe to call twice."""
        thread = getattr(self, "_thread", None)
        if thread is not None:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            thread.join()
            self._thread = None  # type: ignore[assignment]
        llm = getattr(self, "llm", None)
        if llm is not None:
            core = getattr(llm.llm_engine, "engine_core", None)
            shutdown = getattr(core, "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None
