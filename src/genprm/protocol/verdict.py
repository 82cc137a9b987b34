"""Read a step's verdict as a probability, tokenizer-aware, never by a regex over sampled text.

After the forced ``$\\boxed`` the model writes ``{Yes}$`` or ``{No}$``. Tokenizers split that
differently (Qwen2: ``{`` then ``Yes``; others may merge ``{Yes``), so we tokenize the prompt with
both endings and take the first token where they differ: the tokens before it are the prompt the
model must see, and the two differing tokens are the candidates whose probabilities we compare.
The reward is P(Yes) / (P(Yes) + P(No)) at that position.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from genprm.protocol.prompts import VERDICTS, verdict_close
from genprm.tokens import common_prefix_length

Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True)
class VerdictProbe:
    """The token prompt and the Yes/No candidate tokens at the verdict position."""

    prompt: list[int]
    yes_token: int
    no_token: int


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


@dataclass(frozen=True)
class VerdictReading:
    """What the model's distribution says at the verdict token."""

    reward: float | None
    """P(Yes) / (P(Yes) + P(No)); ``None`` when unreadable."""
    logprob_yes: float | None
    logprob_no: float | None
    readable: bool
    reason: str | None = None

    @property
    def p_yes(self) -> float | None:
        return None if self.logprob_yes is None else math.exp(self.logprob_yes)

    @property
    def p_no(self) -> float | None:
        return None if self.logprob_no is None else math.exp(self.logprob_no)


def read_verdict(
    logprob_yes: float | None,
    logprob_no: float | None,
    *,
    temperature: float = 1.0,
    min_mass: float = 1e-6,
) -> VerdictReading:
    """Turn the two candidates' log-probabilities into a reward.

    ``temperature`` rescales the two logits before normalising (1.0 reads the model's distribution
    as is; the paper's vLLM 0.7 returned logprobs after its 0.6 sampling temperature). A verdict
    is unreadable when a candidate's log-probability is unknown or when Yes and No together carry
    less than ``min_mass`` of the probability: the model was not answering Yes/No at all.
    """
    if logprob_yes is None or logprob_no is None:
        return VerdictReading(None, logprob_yes, logprob_no, False, "a verdict token's log-probability is missing")
    mass = math.exp(logprob_yes) + math.exp(logprob_no)
    if mass < min_mass:
        return VerdictReading(None, logprob_yes, logprob_no, False, f"P(Yes)+P(No)={mass:.2e} < {min_mass:g}")
    reward = _sigmoid((logprob_yes - logprob_no) / temperature)
    return VerdictReading(reward, logprob_yes, logprob_no, True)


def choose_verdict(reading: VerdictReading, sampling_temperature: float, rng: random.Random) -> str:
    """The verdict written into the transcript: sampled like the model would, argmax when greedy.

    An unreadable verdict still needs text to close the turn; it is written as ``No`` only so that
    the history stays well-formed, and the step keeps ``readable=False``.
    """
    if not reading.readable or reading.logprob_yes is None or reading.logprob_no is None:
        return VERDICTS[1]
    margin = reading.logprob_yes - reading.logprob_no
    if sampling_temperature == 0:
        return VERDICTS[0] if margin >= 0 else VERDICTS[1]
    return VERDICTS[0] if rng.random() < _sigmoid(margin / sampling_temperature) else VERDICTS[1]


def verdict_probe(tokenize: Tokenize, prompt_text: str) -> VerdictProbe:
    """Split the verdict tokens of ``prompt_text`` (which ends right before ``{Yes}``/``{No}``)."""
    yes_ids = tokenize(prompt_text + verdict_close(VERDICTS[0]))
    no_ids = tokenize(prompt_text + verdict_close(VERDICTS[1]))
    common = common_prefix_length(yes_ids, no_ids)
    if common >= min(len(yes_ids), len(no_ids)):
        raise ValueError("the tokenizer does not distinguish the Yes and No verdicts")
    return VerdictProbe(prompt=yes_ids[:common], yes_token=yes_ids[common], no_token=no_ids[common])
