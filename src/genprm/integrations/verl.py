"""verl's custom reward function, calling ``genprm serve``: point verl at this file.

    custom_reward_function.path=$(python -c "import genprm.integrations.verl as m; print(m.__file__)")
    custom_reward_function.name=compute_score          # or compute_score_async (verl's reward loop)
    +custom_reward_function.reward_kwargs.url=http://127.0.0.1:8000

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` per response; the
question travels in ``extra_info["question"]`` (``question_key`` names another field). The answer is
``{"score": reward, ...}`` with the same extra keys for every sample, all numbers except
``step_rewards`` (a JSON string): verl aggregates every numeric extra over samples, and skips strings.
"""

from __future__ import annotations

import json
from typing import Any

from genprm.errors import InputError
from genprm.integrations.client import GenPRMClient

QUESTION_KEY = "question"


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None, *,
    url: str | None = None, api_key: str | None = None, question_key: str = QUESTION_KEY, **kwargs: Any,
) -> dict[str, Any]:
    """One response's reward from the server (blocking); see the module docstring."""
    client = GenPRMClient.from_env(url, api_key)
    return verl_result(client.verify(_payload(solution_str, ground_truth, extra_info, question_key)))


async def compute_score_async(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None, *,
    url: str | None = None, api_key: str | None = None, question_key: str = QUESTION_KEY, **kwargs: Any,
) -> dict[str, Any]:
    """:func:`compute_score` for verl's asynchronous reward loop."""
    client = GenPRMClient.from_env(url, api_key)
    return verl_result(await client.averify(_payload(solution_str, ground_truth, extra_info, question_key)))


def _payload(solution: str, ground_truth: Any, extra_info: dict[str, Any] | None, key: str) -> dict[str, Any]:
    question = (extra_info or {}).get(key)
    if not isinstance(question, str) or not question.strip():
        raise InputError("must hold the question (a non-empty string) for genprm to verify against",
                         field=f"extra_info.{key}")
    label = None if ground_truth is None else str(ground_truth)
    return {"problem": question, "response": solution, "label": label}


def verl_result(body: dict[str, Any]) -> dict[str, Any]:
    """The server's answer in verl's form: ``score`` first, then extras that are the same keys for every sample."""
    outcome = body.get("outcome")
    prm = body.get("solution_score")
    return {
        "score": float(body["reward"]),
        "prm_score": -1.0 if prm is None else float(prm),
        "scored": float(bool(body.get("scored"))),
        "outcome": -1.0 if outcome is None else float(outcome),
        "first_error": int(body.get("first_error", -1)),
        "num_steps": len(body.get("step_rewards", [])),
        "step_rewards": json.dumps(body.get("step_rewards", [])),
    }
