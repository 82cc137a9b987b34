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

from genprm.engines.openai_compat.engine import OpenAIEngine
from genprm.engines.openai_compat.http import API_KEY_ENV

__all__ = ["API_KEY_ENV", "OpenAIEngine"]
