"""The server over real HTTP on loopback: both endpoints, the error statuses, limits, ids and metrics."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from genprm.serving import ServeConfig
from genprm.verifier import VerifyConfig

from .support import GatedEngine, chatml_prompt, running

QUESTION = "What is 3 + 4?"
RESPONSE = "We add 3 and 4.\n\n3 + 4 = 7.\n\nThe answer is $\\boxed{7}$."


def _config(**options) -> ServeConfig:
    return ServeConfig(engine="scripted", verify=options.pop("verify", VerifyConfig(n=2, mode="analyze")), **options)


def _openrlhf_body(question=QUESTION, response=RESPONSE, **extra):
    prompt = chatml_prompt(question)
    return {"query": [prompt + response + "<|im_end|>"], "prompts": [prompt], "labels": ["7"], **extra}


@pytest.fixture(scope="module")
def server():
    engine = GatedEngine()
    with running(_config(max_steps=8, max_step_chars=400, max_body_bytes=4096), engine) as url:
        yield url, engine


def test_get_reward_answers_in_openrlhfs_form(server):
    url, _ = server
    answer = httpx.post(f"{url}/get_reward", json=_openrlhf_body(), timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"rewards", "scores", "extra_logs"}
    assert len(body["rewards"]) == len(body["scores"]) == 1
    assert 0.0 <= body["scores"][0] <= 1.0
    logs = body["extra_logs"]
    assert logs["num_steps"] == [3]
    assert len(logs["step_rewards"][0]) == 3 and all(0 <= r <= 1 for r in logs["step_rewards"][0])
    assert body["rewards"][0] == pytest.approx(min(logs["step_rewards"][0]))  # --aggregate min
    assert logs["first_error"][0] in (-1, 0, 1, 2)
    assert answer.headers["x-request-id"]


def test_v1_verify_takes_steps_or_a_response_and_agrees_with_get_reward(server):
    url, _ = server
    by_steps = httpx.post(f"{url}/v1/verify", json={"problem": QUESTION, "steps": RESPONSE.split("\n\n"),
                                                    "transcripts": True}, timeout=60).json()
    by_text = httpx.post(f"{url}/v1/verify", json={"prompt": chatml_prompt(QUESTION), "response": RESPONSE},
                         timeout=60).json()
    openrlhf = httpx.post(f"{url}/get_reward", json=_openrlhf_body(), timeout=60).json()
    assert by_steps["steps"] == by_text["steps"] == RESPONSE.split("\n\n")
    assert by_steps["problem"] == by_text["problem"] == QUESTION
    assert by_steps["step_rewards"] == by_text["step_rewards"] == openrlhf["extra_logs"]["step_rewards"][0]
    assert by_text["cached"] and by_text["key"] == by_steps["key"]
    assert by_steps["reward"] == by_steps["solution_score"] == min(by_steps["step_rewards"])
    transcripts = by_steps["transcripts"]
    assert [len(step["paths"]) for step in transcripts] == [2, 2, 2]
    assert transcripts[0]["paths"][0]["text"].endswith("</output>\n")
    assert by_text["transcripts"] is None


def test_malformed_json_and_missing_fields_get_422_naming_the_field(server):
    url, _ = server
    broken = httpx.post(f"{url}/get_reward", content=b'{"query": ["x"', headers={"content-type": "application/json"})
    assert broken.status_code == 422
    missing = httpx.post(f"{url}/get_reward", json={"query": ["x"]})
    assert missing.status_code == 422 and missing.json()["fields"][0]["field"] == "prompts"
    wrong_type = httpx.post(f"{url}/v1/verify", json={"problem": QUESTION, "steps": "not a list"})
    assert wrong_type.status_code == 422 and wrong_type.json()["fields"][0]["field"] == "steps"
    unknown = httpx.post(f"{url}/v1/verify", json={"problem": QUESTION, "steps": ["a"], "stepz": []})
    assert unknown.status_code == 422 and unknown.json()["fields"][0]["field"] == "stepz"
    neither = httpx.post(f"{url}/v1/verify", json={"problem": QUESTION})
    assert neither.status_code == 422 and "steps and response" in neither.json()["error"]
    for answer in (broken, missing, wrong_type, unknown, neither):
        assert answer.json()["request_id"] == answer.headers["x-request-id"]


def test_lists_of_different_lengths_are_refused_never_misaligned(server):
    url, _ = server
    body = _openrlhf_body()
    body["prompts"] = body["prompts"] * 2
    answer = httpx.post(f"{url}/get_reward", json=body)
    assert answer.status_code == 422 and "align" in answer.json()["error"]
    body = _openrlhf_body(labels=["7", "8"])
    assert httpx.post(f"{url}/get_reward", json=body).status_code == 422


def test_a_query_that_does_not_hold_its_prompt_is_refused(server):
    url, _ = server
    body = _openrlhf_body()
    body["query"] = ["something else entirely"]
    answer = httpx.post(f"{url}/get_reward", json=body)
    assert answer.status_code == 422 and answer.json()["fields"][0]["field"] == "query[0]"


def test_too_many_steps_or_too_long_a_step_is_422(server):
    url, _ = server
    many = httpx.post(f"{url}/v1/verify", json={"problem": QUESTION, "steps": ["x"] * 9})
    assert many.status_code == 422 and "at most 8" in many.json()["error"]
    long = httpx.post(f"{url}/v1/verify", json={"problem": QUESTION, "steps": ["x" * 401]})
    assert long.status_code == 422 and "at most 400" in long.json()["error"]


def test_a_body_over_the_bound_gets_413_by_length_and_when_chunked(server):
    url, _ = server
    big = json.dumps({"problem": QUESTION, "steps": ["x" * 5000]}).encode()
    by_length = httpx.post(f"{url}/v1/verify", content=big, headers={"content-type": "application/json"})
    assert by_length.status_code == 413 and "4096" in by_length.json()["error"]

    def chunks():
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    chunked = httpx.post(f"{url}/v1/verify", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert httpx.get(f"{url}/health").status_code == 200  # the server is fine afterwards


def test_a_failing_solution_gets_a_one_line_error_without_traceback_or_path(tmp_path):
    engine = GatedEngine(fail_on="KABOOM")
    with running(_config(), engine) as url:
        answer = httpx.post(f"{url}/v1/verify", json={"problem": "KABOOM", "steps": ["a"]}, timeout=60)
    assert answer.status_code == 500
    body = answer.json()
    assert "verification failed (error)" in body["error"]
    assert "Traceback" not in answer.text and "/secret/path" not in answer.text and "RuntimeError" not in answer.text
    assert body["request_id"] == answer.headers["x-request-id"]


def test_a_full_queue_gets_503_with_retry_after():
    engine = GatedEngine()
    engine.gate.clear()
    config = _config(verify=VerifyConfig(n=1, mode="analyze"), concurrency=1, max_queue=1)
    with running(config, engine) as url:
        results: list[httpx.Response] = []

        def send(i):
            results.append(httpx.post(f"{url}/v1/verify", json={"problem": f"Q{i}", "steps": ["a"]}, timeout=60))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]  # 2 workers + 1 queued
        for t in threads:
            t.start()
            time.sleep(0.3)
        refused = httpx.post(f"{url}/v1/verify", json={"problem": "one too many", "steps": ["a"]}, timeout=60)
        engine.gate.set()
        for t in threads:
            t.join(60)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert sorted(r.status_code for r in results) == [200, 200, 200]


def test_a_request_past_its_deadline_gets_504_and_its_work_is_stopped():
    engine = GatedEngine()
    engine.gate.clear()
    with running(_config(verify=VerifyConfig(n=1, mode="analyze"), deadline_s=1.0), engine) as url:
        answer = httpx.post(f"{url}/v1/verify", json={"problem": QUESTION, "steps": ["a", "b", "c"]}, timeout=60)
        engine.gate.set()
        time.sleep(0.5)
        metrics = httpx.get(f"{url}/metrics").text
    assert answer.status_code == 504 and "deadline" in answer.json()["error"]
    assert engine.generations <= 1  # the call that was held finished; no later step ran
    assert "genprm_deadline_misses_total 1.0" in metrics
    assert 'genprm_solutions_total{outcome="cancelled"} 1.0' in metrics


def test_a_client_that_disconnects_cancels_its_work():
    engine = GatedEngine()
    engine.gate.clear()
    with running(_config(verify=VerifyConfig(n=1, mode="analyze")), engine) as url:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"problem": QUESTION, "steps": ["a", "b", "c", "d"]}).encode()
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            assert engine.entered.wait(10)
        time.sleep(0.6)  # the request sees its client gone within a poll or two
        engine.gate.set()
        time.sleep(0.5)
        metrics = httpx.get(f"{url}/metrics").text
    assert "genprm_disconnects_total 1.0" in metrics
    assert 'genprm_solutions_total{outcome="cancelled"} 1.0' in metrics
    assert engine.generations == 1


def test_metrics_count_requests_latency_queue_tokens_and_cache_hits(server):
    url, _ = server
    httpx.post(f"{url}/get_reward", json=_openrlhf_body(question="What is 5 + 5?"), timeout=60)
    httpx.post(f"{url}/get_reward", json=_openrlhf_body(question="What is 5 + 5?"), timeout=60)
    text = httpx.get(f"{url}/metrics").text
    assert 'genprm_requests_total{endpoint="/get_reward",status="200"}' in text
    assert 'genprm_request_seconds_bucket{endpoint="/get_reward",le="0.05"}' in text
    assert "genprm_queue_depth 0.0" in text
    assert 'genprm_tokens_total{kind="generated"}' in text
    hits = [line for line in text.splitlines() if line.startswith("genprm_cache_hits_total")]
    assert hits and float(hits[0].split()[-1]) >= 1
