"""The engine boundary: every backend (llama.cpp, vLLM, an OpenAI-compatible server) looks like this.

Shaped like vLLM's ``LLM.generate``: a batch of prompts plus one typed parameters record in, typed
outputs in input order out. Batching, KV/prefix caching and concurrency stay behind the call, so the
verifier never knows which backend it drives. Two operations are all the GenPRM protocol needs:

* ``generate``: continue prompts until a stop string, the token budget or end-of-sequence;
* ``next_token_logprobs``: the model's log-probabilities of chosen candidate tokens at the next
  position of a tokenized prompt (how the verdict's P(Yes) is read, never by a regex over text),
  and, when asked, the raw log-probabilities of the most likely tokens there (what the paper's
  reward needs: :func:`genprm.protocol.verdict.v0_nucleus`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from genprm.errors import ConfigError

Prompt = str | list[int]
"""A prompt is text (special tokens are parsed) or already a list of token ids."""

FinishReason = Literal["stop", "length", "eos"]


@dataclass(frozen=True)
class SamplingParams:
    """How to continue one prompt. Mirrors the subset of vLLM's SamplingParams the protocol uses."""

    max_tokens: int = 2048
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    """Samples of the same prompt (vLLM's ``n``): only :meth:`Engine.sample` honours more than one."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError("n", self.n, "must be at least 1")
        if self.max_tokens < 1:
            raise ConfigError("max_tokens", self.max_tokens, "must be at least 1")
        if self.temperature < 0:
            raise ConfigError("temperature", self.temperature, "must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", self.top_p, "must be in (0, 1]")
        if self.top_k < 0:
            raise ConfigError("top_k", self.top_k, "must be >= 0 (0 disables top-k)")


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue."""

    prompt: Prompt
    params: SamplingParams


@dataclass(frozen=True)
class Generation:
    """What an engine produced for one request.

    ``text`` includes the matched stop string (as vLLM's ``include_stop_str_in_output``), so that
    concatenating prompt and text always reproduces exactly what the model saw.
    """

    text: str
    finish_reason: FinishReason
    stop_string: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    seconds: float = 0.0


ALL_TOKENS = -1
"""``LogprobRequest.top`` asking for the whole vocabulary."""


def most_likely(logprobs: Mapping[int, float], count: int) -> dict[int, float]:
    """The ``count`` most likely of ``logprobs``, continued through ties with the last of them, plus
    the next less likely one when there is one, so that a reader sees where such a tie ends (vLLM's
    top-k keeps every token tied with the k-th). ``ALL_TOKENS``: all of them.
    """
    if count == ALL_TOKENS or count >= len(logprobs):
        return dict(logprobs)
    if count <= 0:
        return {}
    ranked = sorted(logprobs, key=lambda t: -logprobs[t])
    end = count
    while end < len(ranked) and logprobs[ranked[end]] == logprobs[ranked[count - 1]]:
        end += 1
    return {t: logprobs[t] for t in ranked[: end + 1]}


@dataclass(frozen=True)
class LogprobRequest:
    """Ask for the log-probability of each candidate token at the position after ``prompt``.

    ``top`` also asks for the raw log-probabilities of the ``top`` most likely tokens there
    (``ALL_TOKENS``: every token; 0: none), continued as :func:`most_likely` does where the engine
    sees more.
    """

    prompt: list[int]
    candidates: tuple[int, ...]
    top: int = 0

    def __post_init__(self) -> None:
        if self.top < ALL_TOKENS:
            raise ConfigError("top", self.top, "must be >= 0, or ALL_TOKENS (-1)")


@dataclass(frozen=True)
class TokenLogprobs:
    """Log-probabilities (natural log, full softmax at temperature 1) for the asked candidates.

    A candidate the engine could not report (e.g. outside a server's top-k) maps to ``None``; in
    paper mode that means "less likely than every token in ``top``". ``top`` holds the most likely
    tokens' raw log-probabilities when they were asked for: as many as asked where the engine can
    (fewer where it caps them), every token when ``whole_vocabulary``. ``approximate`` says why
    they may not be the raw distribution's (say, a server that reports post-sampling values).
    """

    logprobs: dict[int, float | None]
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    seconds: float = 0.0
    top: dict[int, float] = field(default_factory=dict)
    whole_vocabulary: bool = False
    approximate: str | None = None


@dataclass
class EngineStats:
    """Counters every engine keeps, for progress lines and benchmarks."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def _one_of_n(request: GenerationRequest, i: int) -> GenerationRequest:
    """Sample ``i`` of a request for ``n`` samples, as a request of its own (``n=1``, seed ``seed + i``)."""
    params = request.params
    seed = None if params.seed is None else params.seed + i
    return GenerationRequest(request.prompt, replace(params, n=1, seed=seed))


class Engine(ABC):
    """A language model behind the two operations the GenPRM protocol needs.

    Implementations must return outputs in input order and may process a batch in any order or
    concurrently. ``tokenize`` must agree with what the model sees (special tokens parsed, no BOS
    added: chat templates already render it).
    """

    name: str = "engine"
    max_batch: int = 1
    """How many requests one call handles at once; 1 means the driver should feed paths one by one
    (an embedded engine with one KV cache reuses more of it when a path's calls come back to back)."""
    shares_sample_prompt: bool = False
    """Whether :meth:`sample` computes a prompt once for its n samples (their ``cached_prompt_tokens``
    show it); engines that cannot tell, such as a remote server, leave this False."""

    def __init__(self) -> None:
        self.stats = EngineStats()

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Continue every prompt; outputs come back in input order."""

    def sample(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        """``params.n`` continuations of every prompt; one list per request, in input order.

        Monte-Carlo rollouts draw K samples of one prefix; engines that can share the prefix's
        computation among the K (vLLM's ``n``, a server's ``n``) override this. The default asks
        :meth:`generate` for the K as separate requests, back to back (an engine with a prefix
        cache computes the prompt once), sample ``i`` seeded ``seed + i`` when a seed is given.
        """
        flat: list[GenerationRequest] = []
        for request in requests:
            flat.extend(_one_of_n(request, i) for i in range(request.params.n))
        outputs = self.generate(flat) if flat else []
        grouped: list[list[Generation]] = []
        at = 0
        for request in requests:
            grouped.append(outputs[at : at + request.params.n])
            at += request.params.n
        return grouped

    @abstractmethod
    def next_token_logprobs(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        """Log-probabilities of candidate tokens after each prompt; outputs in input order."""

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as the model would see it inside a prompt."""

    @abstractmethod
    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``."""

    @property
    @abstractmethod
    def chat_template(self) -> str | None:
        """The model's Jinja chat template, if it ships one."""

    @property
    def special_tokens(self) -> dict[str, str]:
        """Template variables such as ``bos_token`` and ``eos_token``."""
        return {}

    @property
    def model_id(self) -> str:
        """A stable name of the loaded model (recorded in outputs)."""
        return self.name

    def close(self) -> None:
        """Release the model; safe to call twice."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
