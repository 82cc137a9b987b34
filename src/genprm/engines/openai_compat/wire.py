"""The completions wire format: log-probability request bodies, and reading servers' JSON answers.

Pure functions: servers write the same facts in different shapes (vLLM, SGLang, llama.cpp), and
everything that tells the shapes apart lives here, so that the engine and the start-up probe read
answers the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from genprm.engines.base import Prompt

Json = dict[str, Any]
Scores = tuple[dict[int, float | None], Json]
"""Candidates' log-probabilities (``None`` where unknown) and the usage block of the last answer."""

NO_LOGPROBS = (
    "this server returns no logprobs; GenPRM needs them to read the verdict: start llama.cpp's "
    "server with logits_all (llama_cpp.server --logits_all true), vLLM with --max-logprobs >= 2"
)


def token_text(value: Any) -> str | None:
    """A special token as tokenizer configs write it: a string or ``{"content": string, ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def int_or_zero(value: Any) -> int:
    """A token count from a usage block; 0 where the server wrote none (or not an integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def cached_tokens(usage: Json) -> int:
    """Prompt tokens the server took from its prefix cache, where it reports them."""
    details = usage.get("prompt_tokens_details")
    return int_or_zero(details.get("cached_tokens")) if isinstance(details, dict) else 0


def logprob_value(value: Any) -> float | None:
    """A logprob entry as servers write it: a number, or ``{"logprob": number, ...}``."""
    if isinstance(value, dict):
        value = value.get("logprob")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


def sampled(choice: Json) -> tuple[int | None, str | None, float | None]:
    """The id (if given), text and log-probability of a choice's first generated token."""
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        return None, None, None
    content = block.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        token_id = first.get("id") if isinstance(first.get("id"), int) else None
        text = first.get("token") if isinstance(first.get("token"), str) else None
        return token_id, text, logprob_value(first)
    tokens, values = block.get("tokens"), block.get("token_logprobs")
    text = tokens[0] if isinstance(tokens, list) and tokens and isinstance(tokens[0], str) else None
    value = logprob_value(values[0]) if isinstance(values, list) and values else None
    if text is not None and text.startswith("token_id:") and text[9:].isdigit():
        return int(text[9:]), None, value
    return None, text, value


def first_position_top(choice: Json) -> tuple[dict[int, float], dict[str, float]] | None:
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
            value = logprob_value(entry)
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
        value = logprob_value(raw)
        if value is None:
            continue
        if key.startswith("token_id:") and key[9:].isdigit():
            by_id[int(key[9:])] = value
        else:
            by_text[key] = value
    return (by_id, by_text) if by_id or by_text else None


def logprob_body(model: str, prompt: Prompt, *, flavor: str) -> Json:
    """A one-token request whose logprobs are the full softmax: temperature 1, top-p 1."""
    body: Json = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 1.0, "top_p": 1.0, "seed": 0}
    if flavor == "vllm":
        body["return_tokens_as_token_ids"] = True  # logprobs keyed by id, not by text
    return body


def forcing_body(model: str, prompt: Prompt, token: int, k: int, *, flavor: str) -> Json:
    """A one-token request that ``logit_bias`` forces to generate ``token``, with the top ``k`` logprobs."""
    return {**logprob_body(model, prompt, flavor=flavor), "temperature": 0.0, "logprobs": k,
            "logit_bias": {str(token): 100.0}}


def forced_value(choice: Json, token: int, text_of: Callable[[int], str | None]) -> float | None:
    """The log-probability of the generated token if it is ``token``, else ``None``.

    Servers that give no ids are matched by ``text_of(token)``, the server's own text of the token;
    it is asked for only then (it may cost a request).
    """
    sampled_id, sampled_text, value = sampled(choice)
    if sampled_id is not None:
        return value if sampled_id == token else None
    text = text_of(token)
    return value if text is not None and sampled_text == text else None
