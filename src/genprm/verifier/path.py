"""One verification path on one step, as a coroutine: the protocol without any I/O.

The coroutine yields what it needs (a generation, the verdict log-probabilities, a code run) and
receives the answer. Keeping the protocol free of engines and sandboxes is what lets a plain loop,
a batching driver and a concurrent scheduler all run *the same* path semantics.

Stages (exact strings in :mod:`genprm.protocol.prompts`):
1. ``<analyze>`` lead-in, generate to ``</analyze>\\n``.
2. ``<verify>`` lead-in with an open ```` ```python ```` fence; generate to the fence's end or to the
   judgement; run the last code block, splice ``[Code Output]``; repeat. Past ``max_code_rounds``
   requests or the token budget, the verify part is dropped and the turn closes after the analysis.
3. ``<output>\\n**Judgement**: $\\boxed``: read P(Yes) from the next-token distribution, then close
   the turn with the chosen verdict so it can stand in later steps' history.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from genprm.engines.base import (
    ALL_TOKENS,
    Generation,
    GenerationRequest,
    LogprobRequest,
    SamplingParams,
    TokenLogprobs,
)
from genprm.errors import ContextOverflowError
from genprm.protocol import prompts as P
from genprm.protocol.parse import last_code_block
from genprm.protocol.verdict import (
    choose_verdict,
    paper_logprobs_needed,
    read_paper_verdict,
    read_verdict,
    verdict_probe,
)
from genprm.sandbox.messages import NO_CODE_FOUND
from genprm.verifier.config import VerifyConfig
from genprm.verifier.records import CodeRun, PathStep


@dataclass(frozen=True)
class Generate:
    """Ask the driver to continue a prompt."""

    request: GenerationRequest


@dataclass(frozen=True)
class ScoreTokens:
    """Ask the driver for candidate-token log-probabilities."""

    request: LogprobRequest


@dataclass(frozen=True)
class ExecuteCode:
    """Ask the driver to run model-written code in this path's sandbox session."""

    code: str


Action = Generate | ScoreTokens | ExecuteCode
PathCoroutine = Generator[Action, Any, PathStep]


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts, so reruns sample the same paths."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


class _Turn:
    """Mutable state of one path's turn while its coroutine runs."""

    def __init__(self, path: int, conversation: str, tokenize: Callable[[str], list[int]]) -> None:
        self.text = ""
        self.step = PathStep(path=path, text="", verdict="", reward=None, readable=False)
        self.generated = 0
        self.started = time.perf_counter()
        self._conversation = conversation
        self._tokenize = tokenize
        self._base: int | None = None

    def used(self) -> int:
        """Tokens of the turn so far, forced text and spliced code output included: the step's token
        budget counts the whole step text, as the released code does, not only what was generated.
        """
        if self._base is None:
            self._base = len(self._tokenize(self._conversation))
        return len(self._tokenize(self._conversation + self.text)) - self._base

    def account(self, out: Generation) -> None:
        self.generated += out.completion_tokens
        self.step.prompt_tokens += out.prompt_tokens
        self.step.cached_prompt_tokens += out.cached_prompt_tokens
        self.step.completion_tokens += out.completion_tokens
        self.step.engine_calls += 1


class PathCancelled(Exception):
    """Thrown into a path coroutine by a driver to stop it: its result can no longer matter."""


def verify_step_path(
    config: VerifyConfig,
    conversation: str,
    step_number: int,
    path: int,
    tokenize: Callable[[str], list[int]],
    seed: int,
) -> PathCoroutine:
    """Verify step ``step_number`` (from 1) on one path; ``conversation`` ends with the assistant header.

    A driver may throw :class:`PathCancelled` in at any action: the path then returns at once, marked
    ``cancelled``, with what it generated so far (no reward) so its compute is still counted.
    """
    turn = _Turn(path, conversation, tokenize)
    try:
        return (yield from _judge(config, conversation, step_number, tokenize, seed, turn))
    except PathCancelled:
        turn.step.cancelled, turn.step.text = True, turn.text
        turn.step.seconds = time.perf_counter() - turn.started
        return turn.step
    except ContextOverflowError:
        # The history no longer fits: record the path as unreadable, keep what it wrote (the analysis,
        # closed) so its turn stays well-formed in later steps' history, and let the run go on.
        step = turn.step
        analysis = turn.text.split(P.ANALYZE_END)[0] if turn.text else ""
        step.text = (analysis + P.ANALYZE_END if analysis else "") + P.OUTPUT_PREFIX
        step.degraded, step.readable, step.reward, step.unreadable_reason = "context", False, None, "context"
        step.seconds = time.perf_counter() - turn.started
        return step


def _judge(
    config: VerifyConfig,
    conversation: str,
    step_number: int,
    tokenize: Callable[[str], list[int]],
    seed: int,
    turn: _Turn,
) -> PathCoroutine:
    """The stages of one turn (see the module docstring), filling ``turn``."""
    mode = config.mode
    calls = 0

    def generate(stops: tuple[str, ...]) -> Generator[Action, Any, Generation]:
        nonlocal calls
        calls += 1
        params = SamplingParams(
            max_tokens=max(1, config.max_step_tokens - turn.used()),
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            stop=stops,
            seed=derive_seed(seed, calls),
        )
        out: Generation = yield Generate(GenerationRequest(prompt=conversation + turn.text, params=params))
        turn.account(out)
        return out

    analysis = ""
    if mode.analyzes:
        turn.text = P.analyze_prefix(step_number)
        out = yield from generate((P.ANALYZE_END,))
        turn.text += out.text
        analysis = turn.text.split(P.ANALYZE_END.strip())[0]
        if out.finish_reason != "stop":
            # An end-of-sequence closes the analysis and verification goes on, as in the released code;
            # only the token budget drops the verify part.
            turn.text = analysis + P.ANALYZE_END
            if out.finish_reason == "length":
                turn.step.degraded = "token-budget"
        if mode.writes_code and not turn.step.degraded:
            yield from _verify_stage(config, turn, generate, analysis)
    if not turn.text.endswith(P.OUTPUT_PREFIX):
        turn.text += P.OUTPUT_PREFIX

    probe = verdict_probe(tokenize, conversation + turn.text)
    paper = config.reward == "paper"
    top = paper_logprobs_needed(config.temperature, config.top_k, config.top_p) if paper else 0
    request = LogprobRequest(probe.prompt, (probe.yes_token, probe.no_token), top=ALL_TOKENS if top is None else top)
    scored: TokenLogprobs = yield ScoreTokens(request)
    turn.step.prompt_tokens += scored.prompt_tokens
    turn.step.cached_prompt_tokens += scored.cached_prompt_tokens
    turn.step.engine_calls += 1
    rng = random.Random(derive_seed(seed, "verdict"))
    if paper:
        reading, verdict = read_paper_verdict(
            scored.logprobs, scored.top, probe, temperature=config.temperature, top_k=config.top_k,
            top_p=config.top_p, whole_vocabulary=scored.whole_vocabulary, rng=rng, approximate=scored.approximate,
        )
    else:
        reading = read_verdict(
            scored.logprobs.get(probe.yes_token),
            scored.logprobs.get(probe.no_token),
            temperature=config.reward_temperature,
            min_mass=config.min_verdict_mass,
        )
        verdict = choose_verdict(reading, config.temperature, rng)
    turn.step.reward_exact, turn.step.reward_note = reading.exact, reading.note
    turn.text += P.verdict_close(verdict)

    step = turn.step
    step.text, step.verdict, step.reward, step.readable = turn.text, verdict, reading.reward, reading.readable
    step.p_yes, step.p_no, step.unreadable_reason = reading.p_yes, reading.p_no, reading.reason
    step.seconds = time.perf_counter() - turn.started
    return step


def _verify_stage(
    config: VerifyConfig,
    turn: _Turn,
    generate: Callable[[tuple[str, ...]], Generator[Action, Any, Generation]],
    analysis: str,
) -> Generator[Action, Any, None]:
    """Stage 2: code rounds until the model reaches its judgement, or degrade to analysis only.

    As in the released code, every call that does not reach ``<output>`` is followed by running the
    last code block (if the text has one) and another call, whether the model closed its fence or
    ended its sequence; only the call and token budgets drop the verify part.
    """
    executes = config.mode.executes
    stops = (P.CODE_BLOCK_END, P.OUTPUT_END, P.OUTPUT_TAG) if executes else (P.OUTPUT_END, P.OUTPUT_TAG)
    turn.text += P.VERIFY_PREFIX
    requests = 0
    while True:
        if requests >= config.max_code_rounds:
            reason = "code-rounds"
            break
        if turn.used() >= config.max_step_tokens:
            reason = "token-budget"
            break
        before = len(turn.text)
        out = yield from generate(stops)
        requests += 1
        turn.text += out.text
        if out.stop_string in (P.OUTPUT_TAG, P.OUTPUT_END):
            # The model reached its judgement: replace whatever it wrote from <output> on with the
            # exact output lead-in, so the verdict is read at the trained position.
            cut = turn.text.rfind(P.OUTPUT_TAG, before)
            if cut < 0:
                cut = len(turn.text) - len(out.text) + out.text.rfind(P.OUTPUT_END)
            turn.text = turn.text[:cut] + P.OUTPUT_PREFIX
            return
        if out.finish_reason == "length":
            reason = "token-budget"
            break
        fenced = out.stop_string == P.CODE_BLOCK_END
        if not executes and not fenced:
            continue  # code-no-exec: nothing runs; the model writes on until its judgement
        code = last_code_block(turn.text)
        if code is None and not fenced:
            continue  # an end-of-sequence with no code block yet: call again
        if not turn.text.endswith("\n"):
            turn.text += "\n"
        started = time.perf_counter()
        output: str = NO_CODE_FOUND if code is None else (yield ExecuteCode(code))
        turn.step.code_runs.append(
            CodeRun(round=requests, code=code or "", output=output, seconds=time.perf_counter() - started)
        )
        turn.text += P.code_output_block(output)
    turn.step.degraded = reason
    turn.text = analysis + P.ANALYZE_END + P.OUTPUT_PREFIX
