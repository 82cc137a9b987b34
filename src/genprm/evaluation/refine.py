"""Critique-refine: the verifier's critique of the first wrong step makes the policy answer again.

The paper's loop (GenPRM as a critic), per problem, for R rounds (the paper uses 3):

0. the policy model answers the problem (or the input record carries its ``response``);
1. the verifier scores the latest answer, split into steps on blank lines (N paths per step);
2. the first step whose reward is below the threshold, and the verifier's analysis of it (the text
   inside ``<analyze>`` after the "Let's analyze the Paragraph k step by step:" lead-in), become a
   follow-up user turn (:func:`refine_turn`) and the policy answers again. When no step is below the
   threshold the answer is kept, and so it stays in every later round (re-checking it is a store hit);
3. accuracy (math-verify against the gold answer) is reported per round, every problem counting in
   every round, kept answers as they are.

Each problem's round r is one record in the run's store (``kind='refine'``, ``slot=str(r)``): the
verifier's finding on round r-1's answer and the answer it led to. The verification itself is stored
per path (:class:`StoreScorer`), keyed by the answer's content, so a killed run loses at most the
problem in flight and more rounds, problems or paths compute only what is missing. Round 0 is keyed
by the policy and its sampling alone, so another verifier, N or threshold reuses the first answers.

Run it with ``genprm refine --data PROBLEMS.jsonl --rounds 3``; figures go to ``RUN/refine.json``.
This module is the loop and its prompts; the problems are read in :mod:`genprm.evaluation.refine_data`
and the stored rounds become figures in :mod:`genprm.evaluation.refine_results`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from genprm.engines.base import SamplingParams
from genprm.errors import ConfigError
from genprm.evaluation.chat import ChatModel
from genprm.evaluation.metrics import step_rewards_at
from genprm.evaluation.refine_data import RefineProblem
from genprm.evaluation.scoring import StoreScorer, reward_matrix, turns_by_step
from genprm.io import SolutionInput
from genprm.protocol.chat import Message
from genprm.protocol.parse import analysis_of, split_paragraphs
from genprm.store import RunStore, settings_key
from genprm.verifier.path import derive_seed
from genprm.verifier.records import first_error_of

KIND = "refine"

# The released code's refinement turn (GenPRM repository, critique-refine script), byte for byte.
REFINE_PREFIX = (
    "There might be some problem in this paragraph of your reasoning, please rethink and refine your answer:\n>"
)
# The Qwen2.5-Math chain-of-thought instruction, appended to the problem on its own line.
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

History = Literal["full", "last"]
HISTORIES: tuple[str, ...] = ("full", "last")
"""full: the conversation keeps every answer and refinement turn (multi-turn, as the paper describes).
last: each round restarts from the problem, the latest answer and the new turn (the released code)."""

Source = Literal["policy", "input", "refined", "kept"]
ProgressFn = Callable[[str, int, int], None]


# -- the protocol pieces -------------------------------------------------------------------------


def critique_of(turn: str) -> str:
    """The verifier's analysis in one of its turns, without the lead-in; "" when it wrote none
    (no ``<analyze>``, as in ``direct`` mode).
    """
    return analysis_of(turn)


def refine_turn(step: str, critique: str) -> str:
    """The follow-up user turn: the suspect step quoted, a blank line, the critique.

    Without a critique the turn ends after the step (no dangling blank line).
    """
    return REFINE_PREFIX + step + ("\n\n" + critique if critique else "")


def first_user_turn(problem: str, instruction: str) -> str:
    """The policy's first turn: the problem, a blank line, then the instruction (as the released code)."""
    return f"{problem}\n\n{instruction}" if instruction else problem


def worst_path(rewards: Sequence[float | None]) -> int | None:
    """The path with the lowest readable reward at a step (the first on ties): its analysis argues the
    error most firmly. ``None`` if none is readable.
    """
    readable = [(reward, j) for j, reward in enumerate(rewards) if reward is not None]
    return min(readable)[1] if readable else None


CritiquePath = Literal["first", "worst"]
CRITIQUE_PATHS: tuple[str, ...] = ("first", "worst")
"""first: path 0's analysis, the history the released code keeps (its paths share path 0's turns).
worst: the path with the lowest reward at the step."""


def critique_path(rewards: Sequence[float | None], choice: CritiquePath) -> int | None:
    """Which path's analysis of the critiqued step the policy sees."""
    if choice == "worst":
        return worst_path(rewards)
    return 0 if rewards else None


# -- settings and records ------------------------------------------------------------------------


@dataclass(frozen=True)
class RefineSettings:
    """The loop and the policy's sampling. Defaults: the paper's 3 rounds, the released code's sampling."""

    rounds: int = 3
    history: History = "full"
    instruction: str = DEFAULT_INSTRUCTION
    max_tokens: int = 16384
    """The released code's budget; every engine caps it at what the context leaves after the prompt."""
    critique: CritiquePath = "first"
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError("rounds", self.rounds, "must be 0 or more")
        if self.history not in HISTORIES:
            raise ConfigError("history", self.history, f"choose one of {', '.join(HISTORIES)}")
        if self.critique not in CRITIQUE_PATHS:
            raise ConfigError("critique", self.critique, f"choose one of {', '.join(CRITIQUE_PATHS)}")
        self.sampling(0)  # validates the sampling fields

    def sampling(self, round_: int) -> SamplingParams:
        """The policy's sampling in one round; the seed differs per round so refinements are fresh draws."""
        return SamplingParams(
            max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            seed=derive_seed(self.seed, KIND, round_),
        )

    def policy_dict(self) -> dict[str, Any]:
        """What shapes the policy's first answer (round 0's store key)."""
        shaping = asdict(self)
        del shaping["rounds"], shaping["history"], shaping["critique"]
        # version 2: the first turn puts a blank line between the problem and the instruction
        return {"method": "refine-policy", "version": 2, **shaping}


@dataclass(frozen=True)
class Finding:
    """What the verifier found in one answer."""

    first_error: int
    """0-based index of the first step below the threshold; -1 if none."""
    step_rewards: list[float | None] = field(default_factory=list)
    step: str | None = None
    critique: str | None = None

    @property
    def turn(self) -> str | None:
        """The refinement turn this finding asks for; ``None`` when no step fell below the threshold."""
        return refine_turn(self.step, self.critique or "") if self.step is not None else None


@dataclass(frozen=True)
class Round:
    """One problem's round as stored: the answer and, from round 1, the finding on the answer before it."""

    answer: str
    source: Source
    """policy/input (round 0), refined (the policy answered again), kept (no step below the threshold)."""
    first_error: int | None = None
    """The finding on the previous answer; ``None`` in round 0 and when there was nothing to verify."""
    step_rewards: list[float | None] | None = None
    step: str | None = None
    critique: str | None = None
    turn: str | None = None
    """The refinement turn sent to the policy (rounds whose source is 'refined')."""

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> Round:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in names})

    @classmethod
    def after(cls, previous: Round, finding: Finding | None, reply: str | None) -> Round:
        """Round r from round r-1's answer, the finding on it, and the policy's reply (if it was asked)."""
        if finding is None:
            return cls(previous.answer, "kept")
        if reply is None or finding.turn is None:
            return cls(previous.answer, "kept", finding.first_error, finding.step_rewards)
        return cls(reply, "refined", finding.first_error, finding.step_rewards, finding.step, finding.critique,
                   finding.turn)


def conversation(problem: str, instruction: str, rounds: Sequence[Round], turn: str, history: History) -> list[Message]:
    """The policy's messages for its next answer after ``rounds`` (0..r-1) and the new ``turn``.

    ``full`` replays every earlier refinement (answer, turn) in order; ``last`` keeps only the latest.
    """
    messages: list[Message] = [{"role": "user", "content": first_user_turn(problem, instruction)}]
    if history == "full":
        for before, current in zip(rounds, rounds[1:]):
            if current.source == "refined" and current.turn is not None:
                messages += [{"role": "assistant", "content": before.answer}, {"role": "user", "content": current.turn}]
    messages += [{"role": "assistant", "content": rounds[-1].answer}, {"role": "user", "content": turn}]
    return messages


# -- the loop ------------------------------------------------------------------------------------


def _chunks(items: Sequence[RefineProblem], size: int) -> Iterator[Sequence[RefineProblem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Refiner:
    """Runs the critique-refine loop over problems, storing each problem's round as it finishes."""

    def __init__(
        self, store: RunStore, policy: ChatModel, scorer: StoreScorer, settings: RefineSettings | None = None
    ) -> None:
        self.store = store
        self.policy = policy
        self.scorer = scorer
        self.settings = settings or RefineSettings()
        policy_id = policy.engine.model_id
        shaping = {**self.settings.policy_dict(), **policy.template_fields()}
        self.policy_key = settings_key(policy_id, shaping, ignore=())
        loop = {"method": KIND, "policy": self.policy_key, "verifier": scorer.settings, "n": scorer.config.n,
                "history": self.settings.history, "critique": self.settings.critique}
        self.key = settings_key(policy_id, loop, ignore=())

    def _settings(self, round_: int) -> str:
        return self.policy_key if round_ == 0 else self.key

    def stored(self, problem: RefineProblem, round_: int) -> Round | None:
        value = self.store.item(KIND, problem.key, self._settings(round_), str(round_))
        return Round.from_value(value) if isinstance(value, dict) else None

    def rounds(self, problem: RefineProblem, last: int) -> list[Round]:
        """Stored rounds 0..``last`` (fewer when one is missing)."""
        found: list[Round] = []
        for r in range(last + 1):
            stored = self.stored(problem, r)
            if stored is None:
                break
            found.append(stored)
        return found

    def run(self, problems: Sequence[RefineProblem], on_progress: ProgressFn | None = None) -> None:
        """Compute every missing round 0..R of ``problems``, round by round (so batches span problems).

        ``on_progress(phase, done, total)`` hears "answer" (round 0) and "round r".
        """
        unique = list({p.key: p for p in problems}.values())
        for r in range(self.settings.rounds + 1):
            self._run_round(unique, r, on_progress)

    def _run_round(self, problems: Sequence[RefineProblem], r: int, on_progress: ProgressFn | None) -> None:
        phase = "answer" if r == 0 else f"round {r}"
        todo = [p for p in problems if self.stored(p, r) is None]
        done = len(problems) - len(todo)
        if on_progress:
            on_progress(phase, done, len(problems))
        # A chunk is verified together (``concurrency`` paths in flight) and refined in one policy batch.
        for chunk in _chunks(todo, max(1, self.policy.engine.max_batch, self.scorer.concurrency)):
            made = self._first_answers(chunk) if r == 0 else self._refine(chunk, r)
            for problem, record in zip(chunk, made):
                sample = {"id": problem.id, "problem": problem.problem, "answer": problem.gold}
                self.store.put_item(KIND, problem.key, self._settings(r), asdict(record), slot=str(r), record=sample)
                done += 1
                if on_progress:
                    on_progress(phase, done, len(problems))

    def _first_answers(self, chunk: Sequence[RefineProblem]) -> list[Round]:
        asked = [p for p in chunk if p.response is None]
        messages = [[{"role": "user", "content": first_user_turn(p.problem, self.settings.instruction)}] for p in asked]
        replies = dict(zip([p.key for p in asked], self.policy.complete(messages, self.settings.sampling(0))))
        return [Round(replies[p.key], "policy") if p.response is None else Round(p.response, "input") for p in chunk]

    def _refine(self, chunk: Sequence[RefineProblem], r: int) -> list[Round]:
        """Verify each problem's round r-1 answer, ask the policy again where a step fell below the threshold."""
        history = {p.key: self.rounds(p, r - 1) for p in chunk}
        missing = [p.id for p in chunk if len(history[p.key]) < r]
        if missing:
            raise RuntimeError(f"round {r} needs round {r - 1} of problems {missing}")
        items = {p.key: self._solution(p, history[p.key][-1].answer) for p in chunk}
        verifiable = [item for item in items.values() if item is not None]
        self.scorer.score(verifiable)
        findings = {key: self._finding(item) if item is not None else None for key, item in items.items()}
        turns = {key: f.turn for key, f in findings.items() if f is not None and f.turn is not None}
        asked = [p for p in chunk if p.key in turns]
        conversations = [
            conversation(p.problem, self.settings.instruction, history[p.key], turns[p.key], self.settings.history)
            for p in asked
        ]
        replies = dict(zip([p.key for p in asked], self.policy.complete(conversations, self.settings.sampling(r))))
        return [Round.after(history[p.key][-1], findings[p.key], replies.get(p.key)) for p in chunk]

    @staticmethod
    def _solution(problem: RefineProblem, answer: str) -> SolutionInput | None:
        """The answer as a solution to verify (keyed by its content); ``None`` if it has no steps."""
        steps = split_paragraphs(answer)
        if not steps:
            return None
        record = {"id": problem.key, "problem": problem.problem, "steps": steps}
        return SolutionInput(problem=problem.problem, steps=steps, record=record, position=0)

    def _finding(self, item: SolutionInput) -> Finding:
        """First step below the threshold (Maj@N rewards) and the chosen path's analysis of it."""
        n, threshold = self.scorer.config.n, self.scorer.config.threshold
        turns = self.store.paths(item.key, self.scorer.settings, n)
        matrix = reward_matrix(turns, len(item.steps), n)
        rewards = step_rewards_at(matrix, n)
        first = first_error_of(rewards, threshold)
        if first < 0:
            return Finding(-1, rewards)
        path = critique_path(matrix[first], self.settings.critique)
        turn = turns_by_step(turns[path]).get(first, {}) if path is not None and path in turns else {}
        text = str(turn.get("text", ""))
        return Finding(first, rewards, item.steps[first], critique_of(text))
