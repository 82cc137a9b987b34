"""The served model's tokens: tokenizing through the server (or a local GGUF), and what to send as a prompt.

Servers tokenize through different endpoints and some (llama-cpp-python) write control tokens as
nothing when detokenizing; this module hides both, so that ``tokenize``/``detokenize`` follow the
engine rule and a token prompt reaches a text-only server exactly or not at all.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from genprm.engines.base import Prompt
from genprm.engines.openai_compat.capabilities import Capabilities
from genprm.engines.openai_compat.http import BODY_QUOTE, HttpClient
from genprm.errors import ConfigError, EngineError, MissingDependencyError
from genprm.tokens import with_bos

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


class PromptMismatch(Exception):
    """A token prompt cannot be sent exactly to a server that accepts only text."""


class LocalTokenizer:
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


def read_template(value: str | None) -> str | None:
    """``chat_template=`` is a file path or the template text itself."""
    if value is None:
        return None
    if "{" not in value and os.path.isfile(value):
        return Path(value).read_text(encoding="utf-8")
    if "{" not in value:
        raise ConfigError("chat_template", value, "is neither a file nor Jinja template text")
    return value


class Vocabulary:
    """Tokens as the served model has them, through the server's endpoints or the local tokenizer.

    Start-up probing fills in ``bos``, ``bos_text``/``eos_text``, ``local`` and whether special
    tokens' texts are learned from the texts tokenized (``learn_specials_on``).
    """

    def __init__(self, http: HttpClient, caps: Capabilities) -> None:
        self._http = http
        self._caps = caps
        self.local: LocalTokenizer | None = None
        self.bos: int | None = None
        self.bos_text: str | None = None
        self.eos_text: str | None = None
        self.specials: dict[int, str] = {}
        """Special tokens the server detokenizes as something else (nothing), with their text."""
        self.learn_specials_on = False
        self._special_checked: set[str] = set()
        self._candidate_texts: dict[int, str | None] = {}
        self._run_texts: OrderedDict[tuple[int, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        if self.local is not None:
            self.local.close()

    # -- the server's endpoints -----------------------------------------------------------------
    def server_tokenize(self, style: str, text: str, *, add_special: bool, retry: bool = True) -> list[int]:
        """Token ids from the tokenize endpoint of a server of ``style``."""
        model = self._caps.served_model
        if style == "vllm":
            path, body = "/tokenize", {"model": model, "prompt": text, "add_special_tokens": add_special}
        elif style == "llama-cpp-python":
            path, body = "/extras/tokenize", {"model": model, "input": text}
        else:
            path, body = "/tokenize", {"content": text, "add_special": add_special}
        data = self._http.json("POST", path, body, what="tokenize", retry=retry)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise EngineError(f"tokenize: unexpected answer {str(data)[:BODY_QUOTE]!r}", status=200)
        out = [t["id"] if isinstance(t, dict) else t for t in tokens]
        if not all(isinstance(t, int) for t in out):
            raise EngineError(f"tokenize: unexpected answer {str(data)[:BODY_QUOTE]!r}", status=200)
        return out

    def server_detokenize(self, tokens: Sequence[int], *, retry: bool = True) -> str:
        """The server's own text of ``tokens`` (special tokens as it writes them)."""
        style = self._caps.tokenize_style
        model = self._caps.served_model
        if style == "vllm":
            path, body, key = "/detokenize", {"model": model, "tokens": list(tokens)}, "prompt"
        elif style == "llama-cpp-python":
            path, body, key = "/extras/detokenize", {"model": model, "tokens": list(tokens)}, "text"
        else:
            path, body, key = "/detokenize", {"tokens": list(tokens)}, "content"
        data = self._http.json("POST", path, body, what="detokenize", retry=retry)
        text = data.get(key) if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise EngineError(f"detokenize: unexpected answer {str(data)[:BODY_QUOTE]!r}", status=200)
        return text

    # -- tokens ---------------------------------------------------------------------------------
    def raw_tokenize(self, text: str) -> list[int]:
        """Tokens of ``text`` with special tokens parsed and nothing added."""
        style = self._caps.tokenize_style
        if style is None:
            assert self.local is not None
            return self.local.tokenize_raw(text)
        ids = self.server_tokenize(style, text, add_special=False)
        prefix, suffix = self._caps.added_prefix, self._caps.added_suffix
        if prefix or suffix:
            if ids[: len(prefix)] != prefix or (suffix and ids[-len(suffix):] != suffix):
                raise EngineError(f"tokenize: the server did not add its usual {prefix}/{suffix} around {text[:40]!r}")
            ids = ids[len(prefix): len(ids) - len(suffix)]
        return ids

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a whole prompt: special tokens parsed, BOS added if the model wants one."""
        ids = self.raw_tokenize(text)
        with_bos(ids, self.bos)
        if self.learn_specials_on:
            self.learn_specials(text)
        return ids

    def learn_specials(self, text: str) -> None:
        """Remember the text of special tokens the server detokenizes as something else (nothing)."""
        for piece in set(_SPECIAL_CANDIDATE.findall(text)):
            with self._lock:
                if piece in self._special_checked or len(self._special_checked) >= _MAX_SPECIAL_CHECKS:
                    continue
                self._special_checked.add(piece)
            ids = self.raw_tokenize(piece)
            if len(ids) == 1 and self.server_detokenize(ids) != piece:
                with self._lock:
                    self.specials[ids[0]] = piece

    def learn_common_specials(self, template: str | None) -> None:
        """Learn the special tokens of common chat formats and of ``template`` (at start-up)."""
        self.learn_specials(" ".join(_COMMON_SPECIALS) + " " + (template or ""))

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``, special tokens written out."""
        if self.local is not None and self._caps.tokenize_style in (None, "llama-cpp-python"):
            return self.local.detokenize(tokens)
        if not self.specials:
            return self.server_detokenize(tokens) if tokens else ""
        parts: list[str] = []
        run: list[int] = []
        for token in tokens:
            special = self.specials.get(token)
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
        text = self.server_detokenize(run)
        with self._lock:
            self._run_texts[key] = text
            while len(self._run_texts) > _RUN_CACHE:
                self._run_texts.popitem(last=False)
        return text

    def candidate_text(self, token: int) -> str | None:
        """How the server writes ``token`` in its logprobs; ``None`` when that text is not usable."""
        with self._lock:
            if token in self._candidate_texts:
                return self._candidate_texts[token]
        try:
            text: str | None = self.server_detokenize([token], retry=False) if self._caps.tokenize_style else None
        except EngineError:
            text = None
        if not text or "\ufffd" in text:
            text = None
        with self._lock:
            self._candidate_texts[token] = text
        return text

    # -- prompts --------------------------------------------------------------------------------
    def _text_prompt(self, tokens: Sequence[int]) -> str:
        """The text that a text-only server turns back into exactly ``tokens``, or ``PromptMismatch``."""
        prefix, suffix = self._caps.added_prefix, self._caps.added_suffix
        ids = list(tokens)
        if suffix:
            raise PromptMismatch(f"the server appends {suffix} to every text prompt")
        if ids[: len(prefix)] != prefix:
            raise PromptMismatch(f"the server starts every text prompt with {prefix}, this prompt does not")
        body = ids[len(prefix):]
        text = self.detokenize(body)
        if self.raw_tokenize(text) != body:
            raise PromptMismatch("its text tokenizes to other ids (a special token of unknown text, or a split "
                                 "the tokenizer would not make); pass tokenizer=<the model's GGUF>")
        return text

    def payload(self, prompt: Prompt) -> tuple[str | list[int], int | None]:
        """What to send as ``prompt`` and its length in tokens, when known."""
        if self._caps.token_prompts:
            ids = list(prompt) if isinstance(prompt, list) else self.tokenize(prompt)
            return ids, len(ids)
        if isinstance(prompt, list):
            return self._text_prompt(prompt), len(prompt)
        bos_text = self.bos_text
        if self._caps.added_prefix and bos_text and prompt.startswith(bos_text):
            prompt = prompt[len(bos_text):]  # the server adds the BOS itself
        return prompt, None
