"""The three frameworks' clients against the real server on loopback: OpenRLHF, verl, TRL."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from genprm.errors import InputError
from genprm.integrations import GenPRMClient, RewardServerError, openrlhf_flags, reward_url
from genprm.integrations.trl import GenPRMReward
from genprm.integrations.verl import compute_score, compute_score_async
from genprm.serving import ServeConfig
from genprm.verifier import VerifyConfig

from .support import GatedEngine, chatml_prompt, running

KEY = "integration-key-123"
QUESTION = "What is 6 times 7?"
RIGHT = "We multiply 6 by 7.\n\n6 * 7 = 42.\n\nSo the answer is $\\boxed{42}$."
WRONG = "We multiply 6 by 7.\n\n6 * 7 = 48.\n\nSo the answer is $\\boxed{48}$."
WEIGHT = 0.5


@pytest.fixture(scope="module")
def url():
    pytest.importorskip("math_verify", reason="outcome grading needs math-verify (the eval extra)")
    config = ServeConfig(engine="scripted", verify=VerifyConfig(n=2, mode="analyze"), outcome_weight=WEIGHT,
                         api_key=KEY)
    with running(config, GatedEngine()) as base:
        yield base


def _direct(url, response, label="42"):
    answer = httpx.post(f"{url}/v1/verify", json={"problem": QUESTION, "response": response, "label": label},
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_openrlhf_posts_one_sample_to_the_flag_url_and_reads_tensors(url):
    torch = pytest.importorskip("torch")
    flags = openrlhf_flags(url, KEY, label_key="answer")
    assert flags[0] == "--reward.remote_url" and flags[2:] == ["--data.label_key", "answer"]
    assert openrlhf_flags(url, legacy=True)[0] == "--remote_rm_url"
    assert reward_url("http://h:1/", None) == "http://h:1/get_reward"
    prompt = chatml_prompt(QUESTION)
    # exactly what OpenRLHF's SingleTurnAgentExecutor sends: no headers, the key in the URL's credentials
    answer = httpx.post(flags[1], json={"query": [prompt + RIGHT + "<|im_end|>"], "prompts": [prompt],
                                        "labels": ["42"]}, timeout=120)
    assert answer.status_code == 200, answer.text
    info = answer.json()
    # ... and what it does with the answer (openrlhf/trainer/ppo_utils/samples_generator.py)
    reward = torch.tensor([info["rewards"]])
    score = torch.tensor([info["scores"] or info["rewards"]])
    logs = {key: torch.tensor([value]) for key, value in info["extra_logs"].items()}
    direct = _direct(url, RIGHT)
    assert reward.flatten().tolist() == pytest.approx([direct["reward"]])
    assert score.flatten().tolist() == pytest.approx([direct["reward"]])
    assert logs["outcome"].flatten().tolist() == [1.0]
    assert logs["step_rewards"].flatten().tolist() == pytest.approx(direct["step_rewards"])
    assert logs["first_error"].flatten().tolist() == [direct["first_error"]]


def test_the_outcome_is_mixed_in_by_the_configured_weight(url):
    right, wrong = _direct(url, RIGHT), _direct(url, WRONG)
    assert right["outcome"] is True and wrong["outcome"] is False
    for body, outcome in ((right, 1.0), (wrong, 0.0)):
        assert body["reward"] == pytest.approx((1 - WEIGHT) * body["solution_score"] + WEIGHT * outcome)
    unlabelled = _direct(url, RIGHT, label=None)
    assert unlabelled["outcome"] is None and unlabelled["reward"] == pytest.approx(unlabelled["solution_score"])


def test_verl_compute_score_sync_and_async(url):
    extra = {"question": QUESTION, "index": 3}
    sync = compute_score("math", RIGHT, "42", extra, url=url, api_key=KEY)
    asynchronous = asyncio.run(compute_score_async("math", WRONG, "42", extra, url=url, api_key=KEY,
                                                   reward_router_address=None))
    right, wrong = _direct(url, RIGHT), _direct(url, WRONG)
    assert sync["score"] == pytest.approx(right["reward"]) and asynchronous["score"] == pytest.approx(wrong["reward"])
    assert sync.keys() == asynchronous.keys()  # verl stacks every key over samples: the same keys always
    assert sync["outcome"] == 1.0 and asynchronous["outcome"] == 0.0
    assert json.loads(sync["step_rewards"]) == pytest.approx(right["step_rewards"])
    assert all(isinstance(v, (int, float)) for k, v in sync.items() if k != "step_rewards")
    with pytest.raises(InputError, match="extra_info.question"):
        compute_score("math", RIGHT, "42", {"prompt": QUESTION}, url=url, api_key=KEY)


def test_verl_reads_the_url_and_key_from_the_environment(url, monkeypatch):
    monkeypatch.setenv("GENPRM_URL", url)
    monkeypatch.setenv("GENPRM_API_KEY", KEY)
    assert compute_score("math", RIGHT, "42", {"question": QUESTION})["score"] == pytest.approx(
        _direct(url, RIGHT)["reward"])
    monkeypatch.setenv("GENPRM_API_KEY", "not-the-key-at-all")
    with pytest.raises(RewardServerError, match="401"):
        compute_score("math", RIGHT, "42", {"question": QUESTION})


def test_trl_reward_function_handles_conversational_and_text_batches(url):
    reward = GenPRMReward(url, KEY, label_key="answer")
    logged: dict[str, float] = {}
    conversational = asyncio.run(reward(
        prompts=[[{"role": "system", "content": "Be careful."}, {"role": "user", "content": QUESTION}]] * 2,
        completions=[[{"role": "assistant", "content": RIGHT}], [{"role": "assistant", "content": WRONG}]],
        answer=["42", "42"], log_metric=logged.__setitem__, trainer_state=None,
    ))
    text = asyncio.run(reward(prompts=[chatml_prompt(QUESTION)] * 2, completions=[RIGHT, WRONG + "<|im_end|>"],
                              answer=["42", "42"]))
    expected = [_direct(url, RIGHT)["reward"], _direct(url, WRONG)["reward"]]
    assert conversational == pytest.approx(expected) and text == pytest.approx(expected)
    assert all(isinstance(r, float) for r in conversational)
    assert set(logged) == {"genprm/error_rate", "genprm/unscored_rate", "genprm/steps"}
    assert logged["genprm/steps"] == 3.0


def test_the_client_retries_a_busy_server_and_gives_up_with_its_message():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(503, json={"error": "busy"}, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"reward": 0.25})

    client = GenPRMClient("http://genprm.test", attempts=4, max_wait_s=0.0)

    async def go(handler):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await client.averify({"problem": "p", "steps": ["s"]}, http)

    assert asyncio.run(go(handler)) == {"reward": 0.25} and len(calls) == 3
    refusing = GenPRMClient("http://genprm.test", attempts=2, max_wait_s=0.0)

    async def refuse(http_handler):
        async with httpx.AsyncClient(transport=httpx.MockTransport(http_handler)) as http:
            return await refusing.averify({"problem": "p"}, http)

    with pytest.raises(RewardServerError, match="busy"):
        asyncio.run(refuse(lambda r: httpx.Response(503, json={"error": "busy"}, headers={"Retry-After": "0"})))
    with pytest.raises(RewardServerError, match="steps: bad"):
        asyncio.run(refuse(lambda r: httpx.Response(422, json={"error": "steps: bad"})))
