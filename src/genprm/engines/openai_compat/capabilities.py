"""What a server offers, as start-up probing found it; read by the engine, the vocabulary and the probe."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Capabilities:
    """What the server offers, probed once at start-up."""

    served_model: str = ""
    """The model name sent in requests."""
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
    raw_top_logprobs: bool = True
    """Whether a sampled request's top log-probabilities are the raw distribution's: they do not
    change with the request's temperature (probed for the ``biased`` and ``top`` strategies)."""
    n_samples: bool = False
    """Whether the server answers ``n`` > 1 with that many choices (probed where it reports stops)."""
