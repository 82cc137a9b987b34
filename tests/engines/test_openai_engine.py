"""OpenAIEngine specifics: probing a real llama_cpp.server, errors, retries, the concurrency bound.

Servers that misbehave (never answer, always 503) and the counting proxy are small real HTTP servers
on 127.0.0.1; nothing here replaces the HTTP client.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from genprm.engines import load_engine
from genprm.engines.base import GenerationRequest, LogprobRequest, SamplingParams
from genprm.errors import ConfigError, EngineError
from genprm.protocol import prompts as P
from genprm.protocol.verdict import verdict_probe

from .engine_suite import chat, greedy

httpx = pytest.importorskip("httpx", reason="the openai engine needs httpx: pip install 'genprm[openai]'")

from genprm.engines.openai_compat import API_KEY_ENV, OpenAIEngine  # noqa: E402

LOGGER = "genprm.engines.openai_compat"


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and "retry" in r.getMessage()]


# -- against the real server -------------------------------------------------------------------
@pytest.mark.e2e
def test_probing_finds_what_llama_cpp_python_offers(openai_engine, demo_gguf):
    assert openai_engine.capabilities == {
        "flavor": "llama-cpp-python",
        "tokenizer": "llama-cpp-python",
        "token_prompts": False,
        "stop_report": "client",
        "logprobs": "biased",
        "in_flight_limit": 1,
        "max_model_len": None,
        "raw_top_logprobs": True,  # its top logprobs come from the full logits, whatever the temperature
        "n_samples": False,  # stops are cut here while streaming, so n samples are n requests
    }
    assert openai_engine.max_batch == 16
    assert openai_engine.model_id == demo_gguf.name


@pytest.mark.e2e
def test_load_engine_by_name_with_the_key_from_the_environment(llama_server, monkeypatch, inprocess_engine):
    monkeypatch.setenv(API_KEY_ENV, llama_server.api_key)
    with load_engine("openai", "smollm2", base_url=llama_server.url + "/v1/", timeout_s=30) as engine:
        assert engine.model_id == "smollm2"
        assert engine.tokenize("Hello <|im_end|>") == inprocess_engine.tokenize("Hello <|im_end|>")
        assert engine.chat_template is None  # llama_cpp.server does not expose it; genprm asks for --chat-template


@pytest.mark.e2e
def test_local_gguf_tokenizer_gives_template_and_special_tokens(llama_server, demo_gguf, inprocess_engine):
    with OpenAIEngine(base_url=llama_server.url, api_key=llama_server.api_key, tokenizer=str(demo_gguf)) as engine:
        assert engine.chat_template == inprocess_engine.chat_template
        assert engine.special_tokens == inprocess_engine.special_tokens
        text = chat("What is 6 * 7?")
        ids = engine.tokenize(text)
        assert ids == inprocess_engine.tokenize(text) and engine.detokenize(ids) == text


@pytest.mark.e2e
def test_wrong_api_key_is_a_4xx_that_is_not_retried(llama_server, caplog):
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(EngineError) as info:
        OpenAIEngine(base_url=llama_server.url, api_key="wrong-key", max_retries=3, backoff_s=2.0)
    assert info.value.status == 401
    assert "Invalid API key" in info.value.body and "401" in str(info.value)
    assert retry_records(caplog) == []
    assert time.monotonic() - started < 3  # one retry alone would have slept >= 1 s


@pytest.mark.e2e
def test_prompt_longer_than_the_context_is_a_400_with_the_server_body(openai_engine):
    with pytest.raises(EngineError) as info:
        openai_engine.generate([GenerationRequest("word " * 5000, SamplingParams(max_tokens=4))])
    assert info.value.status == 400
    assert "context" in info.value.body


@pytest.mark.e2e
def test_unknown_served_model_is_refused(llama_server):
    with pytest.raises(ConfigError, match="served_model"):
        OpenAIEngine(base_url=llama_server.url, api_key=llama_server.api_key, served_model="no-such-model")


@pytest.mark.e2e
def test_a_token_prompt_that_text_cannot_reproduce_is_never_guessed(openai_engine, inprocess_engine):
    prompt = openai_engine.tokenize(chat("Say a word.")) + openai_engine.tokenize("Hel") + openai_engine.tokenize("lo")
    assert openai_engine.tokenize(openai_engine.detokenize(prompt)) != prompt  # not how the text tokenizes
    with pytest.raises(EngineError, match="accepts only text"):
        openai_engine.generate([GenerationRequest(prompt, greedy(4))])
    yes, no = inprocess_engine.tokenize("Yes")[-1], inprocess_engine.tokenize("No")[-1]
    [read] = openai_engine.next_token_logprobs([LogprobRequest(prompt, (yes, no))])
    assert read.logprobs == {yes: None, no: None}


# -- small loopback servers --------------------------------------------------------------------
@contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        done.set()
        thread.join(timeout=2)
        for conn in accepted:
            conn.close()
        listener.close()


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


def test_timeouts_raise_after_bounded_retries(caplog):
    started = time.monotonic()
    with silent_server() as (url, accepted), caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(EngineError) as info:
            OpenAIEngine(base_url=url, timeout_s=0.3, max_retries=2, backoff_s=0.05)
        attempts = len(accepted)
    assert info.value.status is None
    assert "no answer" in str(info.value) and "Timeout" in str(info.value) and "3 attempts" in str(info.value)
    assert attempts == 3
    assert len(retry_records(caplog)) == 2
    assert time.monotonic() - started < 5


def test_5xx_is_retried_then_raised_with_status_and_body(caplog):
    hits: list[str] = []

    class Overloaded(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'{"error": {"message": "overloaded, come back later"}}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Overloaded) as url, caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(EngineError) as info:
            OpenAIEngine(base_url=url, max_retries=2, backoff_s=0.05)
    assert info.value.status == 503 and "overloaded" in info.value.body
    assert hits == ["/v1/models"] * 3
    assert len(retry_records(caplog)) == 2


class CountingProxy:
    """Forwards every request to ``upstream`` after a short delay, counting requests in flight.

    ``rewrite(request_body, answer_body) -> answer_body`` may change what the server answered.
    """

    def __init__(self, upstream: str, delay_s: float = 0.02, rewrite=None) -> None:
        self.upstream = upstream
        self.rewrite = rewrite
        self.client = httpx.Client(timeout=60)
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = self.requests = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def forward(self) -> None:
                with proxy.lock:
                    proxy.in_flight += 1
                    proxy.requests += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    time.sleep(proxy.delay_s)
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else None
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                    answer = proxy.client.request(self.command, proxy.upstream + self.path, content=body,
                                                  headers=headers)
                finally:  # done before answering, so that the client cannot start its next request first
                    with proxy.lock:
                        proxy.in_flight -= 1
                content = answer.content
                if proxy.rewrite is not None and body and answer.status_code == 200:
                    content = proxy.rewrite(json.loads(body), content)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = forward

            def log_message(self, *args: object) -> None:
                pass

        return Forward


@pytest.mark.e2e
def test_requests_in_flight_stay_within_the_concurrency_bound(llama_server, inprocess_engine):
    proxy = CountingProxy(llama_server.url)
    questions = ("Is 7 prime?", "Is 1 odd?", "Is 4 even?", "Is 2+2=5?")
    requests = []
    for text in [chat(q) + P.OUTPUT_PREFIX for q in questions]:
        probe = verdict_probe(inprocess_engine.tokenize, text)
        requests.append(LogprobRequest(probe.prompt, (probe.yes_token, probe.no_token)))
    expected = inprocess_engine.next_token_logprobs(requests)
    with http_server(proxy.handler()) as url:
        common = {"base_url": url, "api_key": llama_server.api_key, "timeout_s": 60}
        with OpenAIEngine(concurrency=3, serialize=False, **common) as engine:
            proxy.reset()
            got = engine.next_token_logprobs(requests)
            assert proxy.max_in_flight == 3, proxy.max_in_flight
        with OpenAIEngine(concurrency=3, **common) as engine:  # llama_cpp.server: one at a time by default
            proxy.reset()
            engine.next_token_logprobs(requests[:2])
            assert proxy.max_in_flight == 1 and proxy.requests > 2
    proxy.client.close()
    for mine, theirs in zip(got, expected):
        assert mine.logprobs == pytest.approx(theirs.logprobs, abs=1e-2)


def post_sampling(request: dict, answer: bytes) -> bytes:
    """Rewrite a completion's top log-probabilities as a server reporting post-sampling values would:
    tempered by the request's temperature and renormalised over the listed tokens."""
    temperature = request.get("temperature", 1.0)
    if request.get("stream") or not temperature or temperature == 1.0:
        return answer
    data = json.loads(answer)
    for choice in data.get("choices", []):
        block = choice.get("logprobs") or {}
        for position in block.get("top_logprobs") or []:
            scaled = {k: v / temperature for k, v in position.items()}
            top = max(scaled.values())
            log_z = top + math.log(sum(math.exp(v - top) for v in scaled.values()))
            position.update({k: v - log_z for k, v in scaled.items()})
    return json.dumps(data).encode()


@pytest.mark.e2e
def test_a_server_reporting_post_sampling_logprobs_makes_paper_reads_approximate(llama_server, inprocess_engine,
                                                                                caplog):
    proxy = CountingProxy(llama_server.url, delay_s=0.0, rewrite=post_sampling)
    text = chat("Is 7 prime?") + P.OUTPUT_PREFIX
    probe = verdict_probe(inprocess_engine.tokenize, text)
    request = LogprobRequest(probe.prompt, (probe.yes_token, probe.no_token), top=20)
    with http_server(proxy.handler()) as url, caplog.at_level(logging.WARNING, logger=LOGGER):
        with OpenAIEngine(base_url=url, api_key=llama_server.api_key, timeout_s=60) as engine:
            assert engine.capabilities["raw_top_logprobs"] is False
            first, second = engine.next_token_logprobs([request]), engine.next_token_logprobs([request])
        with OpenAIEngine(base_url=llama_server.url, api_key=llama_server.api_key, timeout_s=60) as direct:
            assert direct.capabilities["raw_top_logprobs"] is True
            exact = direct.next_token_logprobs([request])[0]
    for read in (first[0], second[0]):
        assert read.approximate and "after its sampling settings" in read.approximate
        assert len(read.top) >= 20
    assert exact.approximate is None and len(exact.top) >= 20
    warned = [r for r in caplog.records if r.name == LOGGER and "approximate" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    proxy.client.close()
