"""Start-up probing: a few requests find what the server offers, once, and record it.

Servers share only the completions endpoint; which model name, tokenizer, prompt form, stop report
and log-probability strategy work is learned here by trying them, so that requests later never
depend on guesses about the server.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from genprm.engines.base import Prompt
from genprm.engines.openai_compat.capabilities import Capabilities
from genprm.engines.openai_compat.http import BODY_KEEP, HttpClient
from genprm.engines.openai_compat.vocabulary import Vocabulary
from genprm.engines.openai_compat.wire import (
    NO_LOGPROBS,
    Json,
    first_position_top,
    forced_value,
    forcing_body,
    logprob_body,
    sampled,
    token_text,
)
from genprm.errors import ConfigError, EngineError

# The package's logger, not this module's: its records keep the name they are filtered by.
log = logging.getLogger(__package__)

_PROBE_TEXT = "Hello world"


class Prober:
    """Fills ``caps`` and ``vocabulary`` in from what the server at ``http`` answers."""

    def __init__(self, http: HttpClient, caps: Capabilities, vocabulary: Vocabulary) -> None:
        self._http = http
        self._caps = caps
        self._vocab = vocabulary

    def run(self, label: str | None, served_model: str | None, template: str | None) -> str | None:
        """Probe everything; returns the chat template (``template`` if given, else the server's, if any)."""
        caps = self._caps
        self._pick_model(label, served_model)
        self._probe_tokenizer()
        self._probe_completions()
        template = self._find_template_and_specials(template)
        log.info(
            "%s at %s: tokenizer=%s, prompts=%s, stops=%s, logprobs=%s",
            caps.flavor, self._http.base_url, caps.tokenize_style or "local",
            "tokens" if caps.token_prompts else "text", caps.stop_report, caps.logprobs,
        )
        return template

    def _pick_model(self, label: str | None, served_model: str | None) -> None:
        """The served name to use, and what ``GET /v1/models`` tells about the server (flavor, context)."""
        base_url = self._http.base_url
        listing = self._http.json("GET", "/v1/models", what="list the served models")
        data = listing.get("data") if isinstance(listing, dict) else None
        entries = [m for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        ids = [m["id"] for m in entries]
        if served_model is not None:
            if ids and served_model not in ids:
                raise ConfigError("served_model", served_model, f"{base_url} serves only {', '.join(ids)}")
            served = served_model
        elif label is not None and label in ids:
            served = label
        elif ids:
            served = ids[0]
        else:
            raise EngineError(f"{base_url}/v1/models lists no model; pass served_model=")
        caps = self._caps
        caps.served_model = served
        entry = next((m for m in entries if m["id"] == served), {})
        caps.flavor = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llama-server"}.get(
            str(entry.get("owned_by", "")), "openai-compatible"
        )
        if isinstance(entry.get("max_model_len"), int):
            caps.max_model_len = entry["max_model_len"]

    def _probe_tokenizer(self) -> None:
        caps, vocab = self._caps, self._vocab
        for candidate in ("vllm", "llama-cpp-python", "llama-server"):
            try:
                found = vocab.server_tokenize(candidate, _PROBE_TEXT, add_special=False, retry=False)
            except EngineError as exc:
                if exc.status is None:
                    raise
                continue
            if found:
                caps.tokenize_style = candidate
                break
        style = caps.tokenize_style
        if style is None:
            if vocab.local is None:
                raise EngineError(
                    f"{self._http.base_url} has no tokenize endpoint (vLLM /tokenize, llama.cpp /tokenize or "
                    "/extras/tokenize); GenPRM needs the model's tokenizer: pass tokenizer=<the model's GGUF>"
                )
            vocab.bos = vocab.local.bos
            return
        if style == "llama-cpp-python":
            caps.flavor = "llama-cpp-python"
        elif style == "vllm" and caps.flavor == "openai-compatible":
            caps.flavor = "vllm"
        empty = vocab.server_tokenize(style, "", add_special=True)
        full = vocab.server_tokenize(style, _PROBE_TEXT, add_special=True)
        common = 0
        while common < min(len(empty), len(full)) and empty[common] == full[common]:
            common += 1
        prefix, suffix = empty[:common], empty[common:]
        if suffix and full[-len(suffix):] != suffix:
            prefix, suffix = [], []
        if style == "llama-cpp-python":  # its tokenize endpoint always adds them
            caps.added_prefix, caps.added_suffix = prefix, suffix
            vocab.learn_specials_on = vocab.local is None
        vocab.bos = prefix[0] if len(prefix) == 1 else None
        if vocab.local is not None:
            check = "<|im_start|>user\n" + _PROBE_TEXT + " 3 + 4 = 7\n"
            if vocab.local.tokenize_raw(check) != vocab.raw_tokenize(check):
                reason = f"does not tokenize like the model served at {self._http.base_url}"
                raise ConfigError("tokenizer", vocab.local.name, reason)

    def _probe_completions(self) -> None:
        caps, http = self._caps, self._http
        body: dict[str, Any] = {"model": caps.served_model, "max_tokens": 1, "temperature": 0.0, "logprobs": 3}
        choice: dict[str, Any] | None = None
        logprob_error: EngineError | None = None
        ids = self._vocab.tokenize(_PROBE_TEXT)
        vllm = caps.flavor == "vllm"  # always takes token prompts: a failure here is a real error
        try:
            extra = {"prompt_logprobs": 1} if vllm else {}
            choice, _ = http.complete({**body, **extra, "prompt": ids}, what="probe token prompts", retry=vllm)
            caps.token_prompts = True
        except EngineError as exc:
            if exc.status is None or vllm:
                raise
        if choice is None:
            try:
                choice, _ = http.complete({**body, "prompt": _PROBE_TEXT}, what="probe logprobs", retry=False)
            except EngineError as exc:
                if exc.status is None:
                    raise
                logprob_error = exc
                plain = {k: v for k, v in body.items() if k != "logprobs"}
                choice, _ = http.complete({**plain, "prompt": _PROBE_TEXT}, what="probe completions")
        prompt_lps = choice.get("prompt_logprobs")
        if caps.token_prompts and caps.flavor == "vllm" and self._ids_are_scored(ids):
            caps.logprobs = "ids"
        elif caps.token_prompts and isinstance(prompt_lps, list) and prompt_lps and isinstance(prompt_lps[-1], dict):
            caps.logprobs = "prompt"
        elif first_position_top(choice) is not None:
            exact = self._bias_reads_exactly(choice, ids if caps.token_prompts else _PROBE_TEXT)
            caps.logprobs = "biased" if exact else "top"
        else:
            raise EngineError(
                NO_LOGPROBS,
                status=logprob_error.status if logprob_error else None,
                body=logprob_error.body if logprob_error else json.dumps(choice)[:BODY_KEEP],
            )
        if caps.logprobs in ("biased", "top"):
            caps.raw_top_logprobs = self._top_logprobs_are_raw(ids if caps.token_prompts else _PROBE_TEXT)
        if "stop_reason" in choice:
            caps.stop_report = "stop_reason"
        elif "matched_stop" in choice:
            caps.stop_report = "matched_stop"
        else:
            caps.stop_report = "client"
            prompt: Prompt = ids if caps.token_prompts else _PROBE_TEXT
            try:
                http.stream({"model": caps.served_model, "prompt": prompt, "max_tokens": 2, "temperature": 0.0},
                            (), what="probe streaming", retry=False)
            except EngineError as exc:
                raise EngineError(
                    "this server reports neither which stop string ended a completion (vLLM's stop_reason) nor "
                    f"streams completions, so stop strings and end-of-sequence cannot be told apart: {exc}",
                    status=exc.status, body=exc.body,
                ) from exc
        if caps.stop_report != "client":  # n samples come back as choices only where stops are the server's
            caps.n_samples = self._answers_n(ids if caps.token_prompts else _PROBE_TEXT)

    def _answers_n(self, prompt: Prompt) -> bool:
        """Does the server answer ``n=2`` with two choices?"""
        body = {"model": self._caps.served_model, "prompt": prompt, "max_tokens": 1, "temperature": 1.0, "n": 2}
        try:
            answer = self._http.json("POST", "/v1/completions", body, what="probe n", retry=False)
        except EngineError as exc:
            if exc.status is None:
                raise
            return False
        choices = answer.get("choices") if isinstance(answer, dict) else None
        return isinstance(choices, list) and len(choices) == 2

    def _top_logprobs_are_raw(self, prompt: Prompt) -> bool:
        """Are a sampled request's top log-probabilities the raw distribution's (the same at another
        temperature), or post-sampling values (llama.cpp's server can report those)?
        """
        caps = self._caps
        found: list[dict[int | str, float]] = []
        for temperature in (1.0, 0.5):
            body = {**logprob_body(caps.served_model, prompt, flavor=caps.flavor), "temperature": temperature,
                    "logprobs": 5}
            choice, _ = self._http.complete(body, what="probe raw logprobs", retry=False)
            top = first_position_top(choice)
            by_id, by_text = top if top is not None else ({}, {})
            values: dict[int | str, float] = {**{i: v for i, v in by_id.items()}, **{t: v for t, v in by_text.items()}}
            found.append(values)
        shared = set(found[0]) & set(found[1])
        return bool(shared) and all(abs(found[0][k] - found[1][k]) < 1e-3 for k in shared)

    def _optional(self, body: Json, what: str) -> Json | None:
        """A probe of an optional feature: the answer's choice, or ``None`` when the server refuses it
        (an HTTP error). No answer at all is still an error.
        """
        try:
            choice, _ = self._http.complete(body, what=what, retry=False)
        except EngineError as exc:
            if exc.status is None:
                raise
            return None
        return choice

    def _ids_are_scored(self, ids: list[int]) -> bool:
        """Does the server honour vLLM's ``logprob_token_ids`` (log-probabilities of chosen tokens)?"""
        caps = self._caps
        wanted = ids[-1]
        body = {**logprob_body(caps.served_model, ids, flavor=caps.flavor), "logprobs": 1,
                "logprob_token_ids": [wanted], "return_tokens_as_token_ids": True}
        choice = self._optional(body, "probe logprob_token_ids")
        if choice is None:
            return False
        top = first_position_top(choice)
        return top is not None and wanted in top[0]

    def _bias_reads_exactly(self, choice: Json, prompt: Prompt) -> bool:
        """Does forcing a token with ``logit_bias`` report its unbiased log-probability?"""
        caps, vocab = self._caps, self._vocab
        top = first_position_top(choice)
        if top is None:
            return False
        by_id, by_text = top
        sampled_id, sampled_text, _ = sampled(choice)
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
            ids = vocab.raw_tokenize(text)
            if len(ids) == 1 and vocab.candidate_text(ids[0]) == text:
                target, expected = ids[0], value
        if target is None or expected is None:
            return False
        body = forcing_body(caps.served_model, prompt, target, 1, flavor=caps.flavor)
        forced = self._optional(body, "probe logit_bias")
        if forced is None:
            return False
        reported = forced_value(forced, target, vocab.candidate_text)
        return reported is not None and abs(reported - expected) < 1e-3

    def _find_template_and_specials(self, template: str | None) -> str | None:
        vocab = self._vocab
        local = vocab.local
        props = self._server_properties() if template is None or local is None else {}
        if template is None:
            served = props.get("chat_template")
            if isinstance(served, str) and served:
                template = served
            elif local is not None:
                template = local.chat_template
        if vocab.learn_specials_on:
            vocab.learn_common_specials(template)
        if local is not None:
            vocab.bos_text, vocab.eos_text = local.bos_text or None, local.eos_text or None
            return template
        vocab.bos_text, vocab.eos_text = token_text(props.get("bos_token")), token_text(props.get("eos_token"))
        if vocab.bos_text is None and vocab.bos is not None:
            vocab.bos_text = vocab.specials.get(vocab.bos) or vocab.server_detokenize([vocab.bos]) or None
        for key, known in (("bos_token", vocab.bos_text), ("eos_token", vocab.eos_text)):
            if template and key in template and known is None:
                log.warning(
                    "the chat template uses %s but %s does not tell its text; pass tokenizer=<the model's GGUF> "
                    "if prompts need it", key, self._http.base_url,
                )
        return template

    def _server_properties(self) -> Json:
        """Chat template and BOS/EOS texts where the server tells them.

        llama-server has ``/props``; vLLM has ``/tokenizer_info`` if run with
        ``--enable-tokenizer-info-endpoint``.
        """
        for path in ("/props", "/tokenizer_info"):
            try:
                found = self._http.json("GET", path, what="read the server's tokenizer properties", retry=False)
            except EngineError as exc:
                if exc.status is None:
                    raise
                continue
            if isinstance(found, dict) and found.get("chat_template"):
                return found
        return {}
