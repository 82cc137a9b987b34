"""Read a step's verdict as a probability, tokenizer-aware, never by a regex over sampled text.

After the forced ``$\\boxed`` the model writes ``{Yes}$`` or ``{No}$``. Tokenizers split that
differently (Qwen2: ``{`` then ``Yes``; others may merge ``{Yes``), so we tokenize the prompt with
both endings and take the first token where they differ: the tokens before it are the prompt the
model must see, and the two differing tokens are the candidates whose probabilities we compare.
The reward is P(Yes) / (P(Yes) + P(No)) at that position, read one of two ways:

* **paper** (:func:`v0_nucleus`, :func:`paper_reading`): what GenPRM's released evaluation
  measured. It ran vLLM 0.7.1's V0 engine, whose log-probabilities come *after* the sampling
  transforms (temperature, then top-k and top-p set every token outside the nucleus to -inf), and
  read them at the sampled verdict token. A verdict token outside the nucleus counts as 0, so many
  rewards are exactly 0 or 1. With top-k on, only the top-k raw log-probabilities matter, so an
  engine that reports them gives this reading exactly. docs/rewards.md has the sources.
* **raw** (:func:`read_verdict`): the model's own distribution at temperature 1 (or
  ``reward_temperature``), renormalised over Yes and No.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from genprm.protocol.prompts import VERDICTS, verdict_close
from genprm.tokens import common_prefix_length

Tokenize = Callable[[str], list[int]]

SAMPLING_EPS = 1e-5
"""vLLM's ``_SAMPLING_EPS``: a temperature below it means greedy, and vLLM then reads the
log-probabilities at temperature 1 with top-k and top-p off."""
RELEASED_LOGPROBS = 20
"""How many log-probabilities the released evaluation asked vLLM for at each token (``logprobs=20``)."""
NEUTRAL_REWARD = 0.5
"""The released code's score for a verdict it cannot find (neither Yes nor No was sampled)."""


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
    """Why the verdict is unreadable."""
    exact: bool = True
    """Whether the engine reported enough of the distribution for this reading to be exact."""
    note: str | None = None
    """For a readable reading: why it is approximate, or that it is the paper mode's neutral 0.5."""

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


# -- the paper's reading: vLLM V0's processed distribution --------------------------------------


@dataclass(frozen=True)
class Nucleus:
    """vLLM V0's processed next-token distribution, as far as the paper's reward reads it."""

    p_yes: float
    """Processed P(Yes): 0 outside the nucleus."""
    p_no: float
    floor: float
    """The smallest of the ``RELEASED_LOGPROBS`` most likely processed probabilities, which the released
    code substitutes for a verdict token missing from the log-probabilities vLLM returned; 0 when fewer
    tokens survive (the rest of the returned list is then -inf)."""
    yes_returned: bool
    """Whether Yes is among the tokens the released code's vLLM call would have returned."""
    no_returned: bool
    exact: bool = True
    reason: str | None = None
    """Why the reading is only approximate, when it is."""

    @property
    def p_yes_given_verdict(self) -> float:
        """P(Yes | Yes or No) under the processed distribution; neutral when both are masked."""
        mass = self.p_yes + self.p_no
        return self.p_yes / mass if mass > 0 else NEUTRAL_REWARD

    def reward_at(self, verdict: str) -> float:
        """The released code's reward, read at the sampled ``verdict`` token (Yes or No).

        The other verdict token's probability is its processed one if vLLM returned it, else the
        smallest returned probability (the released code's ``KeyError`` fallback). With both
        outside the nucleus the model could have sampled neither, and the released code then
        scores the step 0.5 (no ``{Yes}``/``{No}`` found).
        """
        if self.p_yes == 0.0 and self.p_no == 0.0:
            return NEUTRAL_REWARD
        p_yes = self.p_yes if verdict == VERDICTS[0] or self.yes_returned else self.floor
        p_no = self.p_no if verdict == VERDICTS[1] or self.no_returned else self.floor
        mass = p_yes + p_no
        return p_yes / mass if mass > 0 else NEUTRAL_REWARD


def paper_logprobs_needed(temperature: float, top_k: int, top_p: float) -> int | None:
    """How many of the most likely raw log-probabilities :func:`v0_nucleus` needs; ``None``: all of them.

    With top-k on, the top-k decide everything (engines continue the list through a tie with its
    last token, which vLLM's top-k keeps), and at least ``RELEASED_LOGPROBS`` give the released
    code's fallback. Greedy, or temperature 1 with top-p off, leaves the raw distribution as it is.
    Otherwise the temperature's normaliser needs the whole vocabulary.
    """
    if temperature < SAMPLING_EPS or (temperature == 1.0 and top_k == 0 and top_p >= 1.0):
        return RELEASED_LOGPROBS
    if top_k > 0:
        return max(top_k, RELEASED_LOGPROBS)
    return None


def v0_nucleus(
    logprobs: Mapping[int, float | None],
    yes_token: int,
    no_token: int,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    whole_vocabulary: bool = False,
    returned: int = RELEASED_LOGPROBS,
) -> Nucleus:
    """Apply vLLM V0's sampling transforms to raw log-probabilities; read Yes and No in the result.

    ``logprobs`` holds raw log-probabilities (natural log, temperature 1) of at least the most likely
    ``paper_logprobs_needed`` tokens, plus the candidates where known; a token missing from it is
    less likely than every token in it. ``whole_vocabulary`` says it holds every token.

    The transforms, as ``vllm/model_executor/layers/sampler.py`` of vLLM 0.7.1 applies them
    (penalties and min-p are off in GenPRM's settings):

    1. temperature below ``SAMPLING_EPS``: greedy; vLLM then uses temperature 1, top-k and top-p off;
    2. divide the logits by the temperature;
    3. top-k: mask every logit below the k-th largest (ties with the k-th are kept);
    4. top-p: sort ascending (ties in token-id order, as a stable sort leaves them), take the
       cumulative softmax, mask where it is <= 1 - top_p, but never the largest (the last);
    5. softmax over what is left.

    Arithmetic is float64; vLLM's float32 can put a token whose cumulative probability lies within
    about 1e-7 of 1 - top_p on the other side. Without the whole vocabulary, a list whose last
    value ties the k-th may hide more tied tokens (common: bf16 logits tie often); the reading is
    then marked approximate where it matters, when that tie survives top-p.
    """
    values = {t: lp for t, lp in logprobs.items() if lp is not None and not math.isnan(lp) and lp > -math.inf}
    if temperature < SAMPLING_EPS:
        temperature, top_k, top_p = 1.0, 0, 1.0
    problems: list[str] = []
    if top_k > 0 and whole_vocabulary and top_k >= len(values):
        top_k = 0
    tail = 0.0  # probability (after temperature) of the tokens we were not told about
    open_tie: float | None = None  # the k-th value, when unlisted tokens may tie it
    if top_k > 0:
        if len(values) >= top_k:
            kth = sorted(values.values(), reverse=True)[top_k - 1]
            kept = {t: v for t, v in values.items() if v >= kth}
            if not whole_vocabulary and min(values.values()) == kth:
                open_tie = kth
        else:
            problems.append(f"only {len(values)} log-probabilities for top-k {top_k}")
            kept = values
        probs = _softmax({t: v / temperature for t, v in kept.items()})
    elif whole_vocabulary:
        probs = _softmax({t: v / temperature for t, v in values.items()})
    elif temperature == 1.0:
        probs = {t: math.exp(v) for t, v in values.items()}  # already normalised over the vocabulary
        tail = max(0.0, 1.0 - sum(probs.values()))
    else:
        problems.append("temperature without top-k needs the whole vocabulary")
        probs = _softmax({t: v / temperature for t, v in values.items()})
    if top_p < 1.0:
        probs, tail = _top_p(probs, top_p, tail)
        if tail > 0:
            problems.append("top-p keeps tokens outside the reported log-probabilities")
    if open_tie is not None and any(values[t] == open_tie for t in probs):
        problems.append("unlisted tokens may tie the k-th logit, which top-p keeps")
    if tail > 0 and any(t not in values for t in (yes_token, no_token)):
        problems.append("a verdict token outside the reported log-probabilities may be in the nucleus")
    total = sum(probs.values()) + tail
    final = {t: p / total for t, p in probs.items()} if total > 0 else {}
    ranked = sorted(final.values(), reverse=True)
    floor = ranked[returned - 1] if len(ranked) >= returned else 0.0

    def returned_token(token: int) -> bool:
        return token in final and final[token] >= floor

    if tail > 0 and len(ranked) < returned and not (returned_token(yes_token) and returned_token(no_token)):
        problems.append(f"fewer than {returned} log-probabilities for the released code's fallback")

    return Nucleus(
        p_yes=final.get(yes_token, 0.0),
        p_no=final.get(no_token, 0.0),
        floor=floor,
        yes_returned=returned_token(yes_token),
        no_returned=returned_token(no_token),
        exact=not problems,
        reason="; ".join(problems) or None,
    )


def _softmax(scaled: Mapping[int, float]) -> dict[int, float]:
    if not scaled:
        return {}
    top = max(scaled.values())
    weights = {t: math.exp(v - top) for t, v in scaled.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def _top_p(probs: Mapping[int, float], top_p: float, tail: float) -> tuple[dict[int, float], float]:
    """The top-p mask of vLLM V0 on ``probs``, which sum to 1 with ``tail``, the unlisted tokens' mass.

    The unlisted tokens are all less likely than the listed ones, so they come first in the
    ascending order: all of them are masked when ``tail <= 1 - top_p``. The second value is the
    unlisted mass that may survive (0, or all of ``tail``: an upper bound, so the reading is then
    approximate).
    """
    order = sorted(probs, key=lambda t: (probs[t], t))
    limit = 1.0 - top_p
    cumulative = tail
    kept: dict[int, float] = {}
    for i, token in enumerate(order):
        cumulative += probs[token]
        if cumulative > limit or i == len(order) - 1:
            kept[token] = probs[token]
    return kept, (tail if tail > limit else 0.0)


def paper_reading(nucleus: Nucleus, verdict: str) -> VerdictReading:
    """The paper's reading as a :class:`VerdictReading`, at the sampled ``verdict``.

    ``logprob_yes``/``logprob_no`` are the *processed* log-probabilities (-inf outside the nucleus).
    Always readable: with Yes and No both outside the nucleus the reward is the released code's
    neutral 0.5, and ``note`` says so.
    """
    note = None
    if nucleus.p_yes == 0.0 and nucleus.p_no == 0.0:
        note = f"Yes and No are both outside the sampling nucleus: neutral {NEUTRAL_REWARD}, as the released code"
    if not nucleus.exact:
        note = _joined(note, f"approximate: {nucleus.reason}")
    return VerdictReading(
        reward=nucleus.reward_at(verdict),
        logprob_yes=math.log(nucleus.p_yes) if nucleus.p_yes > 0 else -math.inf,
        logprob_no=math.log(nucleus.p_no) if nucleus.p_no > 0 else -math.inf,
        readable=True,
        exact=nucleus.exact,
        note=note,
    )


def _joined(*parts: str | None) -> str | None:
    return "; ".join(p for p in parts if p) or None


def read_paper_verdict(
    candidates: Mapping[int, float | None],
    top: Mapping[int, float],
    probe: VerdictProbe,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    whole_vocabulary: bool,
    rng: random.Random,
    approximate: str | None = None,
) -> tuple[VerdictReading, str]:
    """The paper's reading and the verdict sampled with it, from an engine's raw log-probabilities.

    ``candidates`` are the Yes/No tokens' log-probabilities (``None``: less likely than all of
    ``top``), ``top`` the most likely tokens'. A missing candidate with no ``top`` to rank it
    against is unreadable (the engine reported nothing usable). ``approximate`` is the engine's
    reason why its log-probabilities may not be the raw ones; the reading is then inexact too.
    """
    if not top and any(candidates.get(t) is None for t in (probe.yes_token, probe.no_token)):
        missing = VerdictReading(None, candidates.get(probe.yes_token), candidates.get(probe.no_token), False,
                                 "a verdict token's log-probability is missing")
        return missing, choose_verdict(missing, temperature, rng)
    nucleus = v0_nucleus(
        {**candidates, **top}, probe.yes_token, probe.no_token,
        temperature=temperature, top_k=top_k, top_p=top_p, whole_vocabulary=whole_vocabulary,
    )
    verdict = choose_paper_verdict(nucleus, temperature, rng)
    reading = paper_reading(nucleus, verdict)
    if approximate:
        reading = replace(reading, exact=False, note=_joined(reading.note, f"approximate: {approximate}"))
    return reading, verdict


def choose_paper_verdict(nucleus: Nucleus, sampling_temperature: float, rng: random.Random) -> str:
    """The verdict written into the transcript in paper mode: sampled from the processed distribution.

    Conditioned on the model writing Yes or No (the turn needs one of them), so Yes has the chance
    ``p_yes_given_verdict``; greedy takes the likelier, as vLLM's argmax would.
    """
    share = nucleus.p_yes_given_verdict
    if sampling_temperature < SAMPLING_EPS:
        return VERDICTS[0] if nucleus.p_yes >= nucleus.p_no else VERDICTS[1]
    return VERDICTS[0] if rng.random() < share else VERDICTS[1]
