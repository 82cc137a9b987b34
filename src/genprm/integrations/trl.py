"""A TRL ``GRPOTrainer`` reward function that asks ``genprm serve`` for each completion's reward.

    from genprm.integrations.trl import GenPRMReward
    trainer = GRPOTrainer(model=..., reward_funcs=[GenPRMReward("http://127.0.0.1:8000")], ...)

It is async (TRL awaits it on its event loop), sends every completion of a batch concurrently so the
server batches them on its engine, and returns one float per completion. Conversational prompts and
completions (message lists) give the problem as the last user message and the response as the
assistant messages; plain-text prompts go to the server, which takes the problem from the prompt as
it does for OpenRLHF (its user turn, or ``--problem-template``). A dataset column can name the
problem instead (``problem_key``), and another the reference answer (``label_key``) for servers that
mix in the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from genprm.integrations.client import GenPRMClient

Completion = str | list[dict[str, Any]]


class GenPRMReward:
    """An async reward function for TRL's ``reward_funcs``; see the module docstring."""

    __name__ = "genprm"  # what TRL logs the reward under (rewards/genprm/mean)

    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, problem_key: str | None = None,
        label_key: str | None = None, max_concurrency: int = 64, timeout_s: float = 180.0,
    ) -> None:
        self.client = GenPRMClient.from_env(url, api_key, timeout_s=timeout_s)
        self.problem_key = problem_key
        self.label_key = label_key
        self.max_concurrency = max_concurrency

    async def __call__(self, prompts: Sequence[Completion], completions: Sequence[Completion],
                       **kwargs: Any) -> list[float]:
        payloads = [self._payload(i, p, c, kwargs) for i, (p, c) in enumerate(zip(prompts, completions))]
        limit = asyncio.Semaphore(self.max_concurrency)
        async with self.client.session(self.max_concurrency) as http:

            async def one(payload: dict[str, Any]) -> dict[str, Any]:
                async with limit:
                    return await self.client.averify(payload, http)

            bodies = await asyncio.gather(*(one(p) for p in payloads))
        _log(kwargs.get("log_metric"), bodies)
        return [float(b["reward"]) for b in bodies]

    def _payload(self, i: int, prompt: Completion, completion: Completion, columns: dict[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {"response": _text_of(completion)}
        if self.problem_key is not None and self.problem_key in columns:
            payload["problem"] = str(columns[self.problem_key][i])
        elif isinstance(prompt, list):
            users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
            payload["problem"] = _content_text(users[-1]) if users else ""
        else:
            payload["prompt"] = prompt
        if self.label_key is not None and self.label_key in columns:
            label = columns[self.label_key][i]
            payload["label"] = None if label is None else str(label)
        return payload


def _text_of(completion: Completion) -> str:
    """A completion's text: the string, or its assistant messages' contents joined."""
    if isinstance(completion, str):
        return completion
    replies = [m for m in completion if m.get("role", "assistant") == "assistant"]
    return "\n\n".join(_content_text(m.get("content", "")) for m in replies)


def _content_text(content: Any) -> str:
    """Message content as text (multimodal content is a list of parts; the text parts are kept)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _log(log_metric: Callable[[str, float], None] | None, bodies: list[dict[str, Any]]) -> None:
    """Batch means for TRL's logs: how often the verifier found an error, and how many steps it read."""
    if log_metric is None or not bodies:
        return
    log_metric("genprm/error_rate", sum(b.get("first_error", -1) >= 0 for b in bodies) / len(bodies))
    log_metric("genprm/unscored_rate", sum(not b.get("scored") for b in bodies) / len(bodies))
    log_metric("genprm/steps", sum(len(b.get("step_rewards", [])) for b in bodies) / len(bodies))
