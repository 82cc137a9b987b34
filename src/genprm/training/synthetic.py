"""Synthetic GenPRM conversations for smoke tests and benchmarks (not training data).

Small arithmetic word problems whose steps are right or wrong by construction, each judged by a
verifier turn built from :mod:`genprm.protocol.prompts` (never retyped): analysis, a python check
with its output (computed here from the numbers we chose, not by running code), and the verdict.
They exercise ``genprm train`` end to end in seconds; a model trained on them learns the format and
nothing about mathematics. For real data use ``genprm synth export`` or GenPRM-MATH-Data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from genprm.protocol import prompts as P
from genprm.protocol.turns import CodeRound, TurnParts, compose_turn

Message = dict[str, str]

_FILLER = (
    "Each quantity is restated from the problem before it is used, so nothing is carried over wrongly.",
    "The operation matches the wording: buying more adds to the total and sharing divides it.",
    "Units stay consistent throughout, so the numbers can be combined directly.",
    "The result feeds the next paragraph, so an error here would propagate to the final answer.",
    "A quick estimate gives the same order of magnitude, which is a useful sanity check.",
    "No rounding is involved, so the computation should be exact.",
)


@dataclass(frozen=True)
class _Step:
    text: str
    expression: str
    value: int
    claimed: int
    correct: bool


def _steps(rng: random.Random, wrong_at: int | None) -> tuple[str, list[_Step]]:
    a, b, c, d = rng.randint(3, 40), rng.randint(2, 9), rng.randint(2, 12), rng.randint(2, 5)
    name = rng.choice(["Tom", "Ana", "Liu", "Sara", "Omar", "Mia"])
    item = rng.choice(["apples", "stickers", "marbles", "books", "coins"])
    problem = (f"{name} has {a} {item} and buys {b} bags with {c} {item} each. Then {name} shares all the {item} "
               f"equally among {d} friends, keeping the remainder. How many {item} does each friend get?")
    bought = b * c
    total = a + bought
    plan = [
        (f"{name} buys {b} bags of {c}, so {b} * {c} = {{v}} {item} are bought.", f"{b} * {c}", bought),
        (f"Together with the {a} {item} from before, {name} has {a} + {bought} = {{v}} {item}.",
         f"{a} + {bought}", total),
        (f"Shared among {d} friends, each friend gets {total} // {d} = {{v}} {item}.", f"{total} // {d}", total // d),
    ]
    steps = []
    for i, (template, expression, value) in enumerate(plan):
        wrong = wrong_at == i
        claimed = value + rng.choice([-3, -2, -1, 1, 2, 3]) if wrong else value
        steps.append(_Step(template.format(v=claimed), expression, value, claimed, not wrong))
    return problem, steps


def synthetic_conversation(rng: random.Random, *, detail: int = 0, wrong: bool | None = None) -> list[Message]:
    """One conversation; ``detail`` extra analysis sentences per turn make it longer.

    ``wrong``: whether one step is wrong (random when ``None``). The conversation ends after the
    first ``No`` turn, as ``genprm synth export`` does by default.
    """
    has_error = rng.random() < 0.5 if wrong is None else wrong
    problem, steps = _steps(rng, rng.randrange(3) if has_error else None)
    messages: list[Message] = [{"role": "system", "content": P.SYSTEM_PROMPT}]
    for i, step in enumerate(steps):
        messages.append({"role": "user", "content": P.user_turn(problem, step.text, i)})
        value = step.value
        extra = " ".join(rng.choice(_FILLER) for _ in range(detail))
        judgement = "correct" if step.correct else f"incorrect: the right value is {value}, not {step.claimed}"
        analysis = (f"The paragraph computes {step.expression} and claims {step.claimed}. "
                    f"{extra + ' ' if extra else ''}The computation is {judgement}.\n")
        code = (f"result = {step.expression}\nprint(f\"{step.expression} = {{result}}\")\n"
                f"print(result == {step.claimed})")
        output = f"{step.expression} = {value}\n{value == step.claimed}"
        interpretation = f"The code confirms that the claimed value {step.claimed} is {judgement.split(':')[0]}.\n"
        verdict = "Yes" if step.correct else "No"
        parts = TurnParts(i + 1, analysis, (CodeRound("", code, output),), interpretation, verdict)
        messages.append({"role": "assistant", "content": compose_turn(parts)})
        if not step.correct:
            break
    return messages


def synthetic_conversations(count: int, *, seed: int = 0, detail: int = 0) -> list[list[Message]]:
    """``count`` conversations, half with an error, reproducible from ``seed``."""
    rng = random.Random(seed)
    return [synthetic_conversation(rng, detail=detail, wrong=i % 2 == 1) for i in range(count)]
