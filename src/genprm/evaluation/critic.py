"""The ProcessBench critic baseline: an LLM reads the whole solution and names the earliest wrong
paragraph (or -1). Same data, same engine as the PRM, so users can compare methods.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from genprm.engines.base import SamplingParams
from genprm.evaluation.chat import ChatModel
from genprm.io import SolutionInput
from genprm.store import RunStore, settings_key

# ProcessBench's critique template (QwenLM/ProcessBench, code/templates/critique_template.txt).
CRITIQUE_TEMPLATE = (
    "The following is a math problem and a solution (split into paragraphs, enclosed with tags and indexed from 0):"
    "\n\n[Math Problem]\n\n{problem}\n\n[Solution]\n\n{tagged_response}\n\n"
    "Your task is to review and critique the solution paragraph by paragraph. Once you identify an error in a "
    "paragraph, return the index of the paragraph where the earliest error occurs. Otherwise, return the index "
    'of -1 (which typically denotes "not found").\n\nPlease put your final answer (i.e., the index) in \\boxed{{}}.'
)

_BOXED = re.compile(r"\\boxed\{\s*([^{}]*?)\s*\}")
_INTEGER = re.compile(r"-?\d+")


def critique_prompt(problem: str, steps: Sequence[str]) -> str:
    tagged = "\n\n".join(f"<paragraph_{i}>\n{step}\n</paragraph_{i}>" for i, step in enumerate(steps))
    return CRITIQUE_TEMPLATE.format(problem=problem, tagged_response=tagged)


def parse_critic_answer(text: str) -> int | None:
    """The index in the last ``\\boxed{...}``; ``None`` when there is none or it is not an integer."""
    boxes = _BOXED.findall(text)
    if not boxes:
        return None
    number = _INTEGER.search(boxes[-1])
    return int(number.group()) if number else None


@dataclass(frozen=True)
class CriticSettings:
    max_tokens: int = 2048
    temperature: float = 0.0
    seed: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"method": "processbench-critic", "max_tokens": self.max_tokens, "temperature": self.temperature,
                "seed": self.seed}


class Critic:
    """Runs the critic over samples, storing each judgement (``kind='critic'``) as it finishes."""

    kind = "critic"

    def __init__(
        self, store: RunStore, chat: ChatModel | None, settings: CriticSettings | None = None, *,
        model_id: str | None = None, template: dict[str, str] | None = None,
    ) -> None:
        """``chat`` runs the critic; without it (``model_id`` given, and the ``template`` fields of the
        run's chat template override, if any) the critic only reads stored judgements.
        """
        if model_id is None:
            if chat is None:
                raise ValueError("give the chat model, or the model id to read stored judgements of")
            model_id = chat.engine.model_id
        self.store = store
        self.chat = chat
        self.settings = settings or CriticSettings()
        template = chat.template_fields() if chat is not None else (template or {})
        self.key = settings_key(model_id, {**self.settings.as_dict(), **template})

    def judged(self, item: SolutionInput) -> dict[str, object] | None:
        value = self.store.item(self.kind, item.key, self.key)
        return value if isinstance(value, dict) else None

    def run(self, items: Sequence[SolutionInput], on_progress: Callable[[int, int], None] | None = None) -> None:
        todo = [item for item in items if self.judged(item) is None]
        done = len(items) - len(todo)
        if on_progress:
            on_progress(done, len(items))
        if not todo:
            return
        chat = self.chat
        if chat is None:
            raise ValueError("this critic only reads stored judgements (no chat model)")
        params = SamplingParams(
            max_tokens=self.settings.max_tokens, temperature=self.settings.temperature, seed=self.settings.seed
        )
        chunk = max(1, chat.engine.max_batch)
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            conversations = [[{"role": "user", "content": critique_prompt(i.problem, i.steps)}] for i in batch]
            for item, reply in zip(batch, chat.complete(conversations, params)):
                value = {"prediction": parse_critic_answer(reply), "text": reply}
                self.store.put_item(self.kind, item.key, self.key, value, record=item.record)
                done += 1
                if on_progress:
                    on_progress(done, len(items))

    def stored_predictions(self, items: Sequence[SolutionInput]) -> dict[str, int | None]:
        """Predictions of the items judged so far (each store record read once)."""
        judged = {item.key: self.judged(item) for item in items}
        return {key: _prediction(value) for key, value in judged.items() if value is not None}


def _prediction(judged: dict[str, object]) -> int | None:
    """The stored paragraph index; ``None`` for an answer that could not be parsed."""
    value = judged.get("prediction")
    return value if isinstance(value, int) else None
