"""Best-of-N evaluation: data, grading and scoring into the store, and accuracy per method and budget.

Each problem brings N sampled responses. A response is split into steps on blank lines and becomes
one :class:`SolutionInput` (its record carries the problem id and the response index), so the
verifier's paths are stored per response and a re-run with more problems, responses or paths
computes only what is missing. Answers are graded with math-verify (cached in the store under
kind ``grade``). The figures themselves are pure functions in :mod:`genprm.evaluation.bon_metrics`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from genprm.errors import ConfigError, InputError
from genprm.evaluation.bon_metrics import AGGREGATIONS, Outcome, aggregate, method_table
from genprm.evaluation.grade_cache import Grade, GradeCache
from genprm.evaluation.metrics import step_rewards_at
from genprm.evaluation.scoring import StoreScorer
from genprm.io import SolutionInput, read_objects, write_json_atomic
from genprm.protocol.parse import split_paragraphs
from genprm.store import RunStore
from genprm.verifier.config import VerifyConfig

DEFAULT_DATA = Path("../shared/data/bon/math_cot_100.jsonl")
RESULT_FILE = "bon.json"


Progress = Callable[[str, int, int], None]
"""``on_progress(phase, done, total)`` with phase "grade" or "verify"."""


# -- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    """Where one input format keeps each field."""

    problem: str
    answer: str
    responses: str
    id: str


GENERIC = _Format(problem="problem", answer="answer", responses="responses", id="id")
MATH_COT = _Format(problem="question", answer="gt", responses="response", id="idx")
SHIPPED_FIELD = "score"


@dataclass(frozen=True)
class BonProblem:
    """One problem, its gold answer and its responses (the first ``--responses`` of them)."""

    id: str
    problem: str
    gold: str
    responses: list[str]
    shipped: list[bool] | None
    """The data's own correctness labels (``score``), if it has them."""
    position: int
    line: int | None = None

    def item(self, index: int) -> SolutionInput | None:
        """The response as a solution to verify; ``None`` if it has no step (it is never scored)."""
        steps = split_paragraphs(self.responses[index])
        if not steps:
            return None
        record = {"id": f"{self.id}/{index}", "problem_id": self.id, "response": index}
        return SolutionInput(self.problem, steps, record, position=self.position, line=self.line)


def load_bon(path: str | Path, *, limit: int | None = None, responses: int | None = None) -> list[BonProblem]:
    """Read the first ``limit`` problems, keeping the first ``responses`` responses of each.

    Records are ``{problem, answer, responses: [str, ...], id?, score?}`` or the math_cot format
    ``{question, gt, response: [str, ...], idx, score: [bool, ...], ...}``. ``responses`` defaults to
    the first problem's count; a problem with fewer raises, since budgets need the same N everywhere.
    """
    for name, value in (("--limit", limit), ("--responses", responses)):
        if value is not None and value < 1:
            raise ConfigError(name, value, "must be at least 1")
    problems: list[BonProblem] = []
    seen: set[str] = set()
    keep = responses
    for obj, position, line in itertools.islice(read_objects(path, "pass --data with a Best-of-N JSONL file"), limit):
        where = _Where(str(path), line, position)
        fmt = _format_of(obj, where)
        problem = _parse_problem(obj, fmt, where)
        if problem.id in seen:
            raise where.error(f"duplicate problem id {problem.id!r}", fmt.id)
        seen.add(problem.id)
        keep = keep or len(problem.responses)
        problems.append(_truncate(problem, keep, fmt, where))
    if not problems:
        raise InputError("no problems to evaluate", path=str(path))
    return problems


@dataclass(frozen=True)
class _Where:
    """A record's place in its file, for errors that name it."""

    path: str
    line: int | None
    record: int

    def error(self, message: str, field: str | None = None) -> InputError:
        return InputError(message, path=self.path, line=self.line, record=self.record, field=field)


def _format_of(obj: Any, where: _Where) -> _Format:
    if not isinstance(obj, dict):
        raise where.error(f"expected an object with 'problem', 'answer' and 'responses', got {type(obj).__name__}")
    if GENERIC.responses in obj:
        return GENERIC
    if MATH_COT.responses in obj:
        return MATH_COT
    raise where.error("missing (or 'response' in the math_cot format)", GENERIC.responses)


def _parse_problem(obj: dict[str, Any], fmt: _Format, where: _Where) -> BonProblem:
    fail = where.error

    problem = obj.get(fmt.problem)
    if not isinstance(problem, str) or not problem.strip():
        raise fail("missing" if problem is None else "must be a non-empty string", fmt.problem)
    gold = obj.get(fmt.answer)
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)) or not str(gold).strip():
        raise fail("missing" if gold is None else "must be a non-empty string or a number", fmt.answer)
    responses = obj[fmt.responses]
    if not isinstance(responses, list) or not responses:
        raise fail("must be a non-empty list of strings", fmt.responses)
    for i, response in enumerate(responses):
        if not isinstance(response, str):
            raise fail(f"must be a string, got {type(response).__name__}", f"{fmt.responses}[{i}]")
    ident = obj.get(fmt.id, where.record)
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        raise fail(f"must be a string or an integer, got {type(ident).__name__}", fmt.id)
    shipped = obj.get(SHIPPED_FIELD)
    if shipped is not None and (
        not isinstance(shipped, list) or len(shipped) != len(responses) or not all(isinstance(s, bool) for s in shipped)
    ):
        raise fail(f"must be a list of {len(responses)} booleans, one per response", SHIPPED_FIELD)
    return BonProblem(str(ident), problem, str(gold).strip(), list(responses), shipped, where.record, where.line)


def _truncate(problem: BonProblem, keep: int, fmt: _Format, where: _Where) -> BonProblem:
    if len(problem.responses) < keep:
        raise where.error(
            f"has {len(problem.responses)} responses, fewer than the {keep} asked for (every problem needs "
            "the same number; pass --responses)", fmt.responses,
        )
    shipped = problem.shipped[:keep] if problem.shipped is not None else None
    return replace(problem, responses=problem.responses[:keep], shipped=shipped)


# -- grading ------------------------------------------------------------------------------------


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How often our grade equals the data's shipped ``score`` label."""

    matches: int
    total: int

    @property
    def rate(self) -> float | None:
        return self.matches / self.total if self.total else None

    def to_json(self) -> dict[str, Any]:
        return {"matches": self.matches, "total": self.total, "rate": self.rate}


def agreement(problems: Sequence[BonProblem], grades: Sequence[Sequence[Grade]]) -> Agreement:
    pairs = [
        (grade.correct, label)
        for problem, per in zip(problems, grades)
        if problem.shipped is not None
        for grade, label in zip(per, problem.shipped)
    ]
    return Agreement(sum(ours == label for ours, label in pairs), len(pairs))


@dataclass
class BonResults:
    """Every figure of one evaluation; ``to_json`` is what ``RUN/bon.json`` holds."""

    model: str
    n: int
    responses: int
    settings: str
    methods: dict[str, dict[int, float | None]]
    """Method ("min/argmax", ..., "Pass@1", "Maj@N", "Pass@N") -> budget -> accuracy."""
    agreement: Agreement
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.samples)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "bon",
            "model": self.model,
            "n": self.n,
            "responses": self.responses,
            "problems": self.problems,
            "settings": self.settings,
            "methods": {m: {str(b): acc for b, acc in per.items()} for m, per in self.methods.items()},
            "agreement": self.agreement.to_json(),
            "samples": self.samples,
        }


def solution_scores(step_rewards: Sequence[float | None] | None) -> dict[str, float | None]:
    """Every aggregation of one response's step rewards (``None`` rewards: a response with no step)."""
    return {how: aggregate(step_rewards or [], how) for how in AGGREGATIONS}


def outcome_of(grades: Sequence[Grade], scores: Sequence[dict[str, float | None]]) -> Outcome:
    return Outcome(
        answers=[g.answer for g in grades],
        correct=[g.correct for g in grades],
        scores={how: [s[how] for s in scores] for how in AGGREGATIONS},
    )


def sample_json(
    problem: BonProblem,
    grades: Sequence[Grade],
    scores: Sequence[dict[str, float | None]],
    items: Sequence[SolutionInput | None],
) -> dict[str, Any]:
    """One problem's entry in ``samples``: per response its answer, grade and solution scores."""
    return {
        "id": problem.id,
        "gold": problem.gold,
        "responses": [
            {
                "key": item.key if item else None,
                "steps": len(item.steps) if item else 0,
                "answer": grade.answer,
                "correct": grade.correct,
                "shipped": problem.shipped[r] if problem.shipped is not None else None,
                "scores": score,
            }
            for r, (grade, score, item) in enumerate(zip(grades, scores, items))
        ],
    }


def check_config(config: VerifyConfig) -> None:
    """Refuse settings under which the solution scores would not be what they say.

    Early stopping skips every step after a response's first error, so its last, min, mean and
    product would rest on part of the response (and none of them is decided by the first error
    alone): a Best-of-N figure from them would be wrong, not just noisier.
    """
    if config.stop_at_first_error:
        raise ConfigError(
            "--stop-at-first-error", True,
            "Best-of-N scores every step of a response (last/min/mean/product), so it cannot skip the steps "
            "after a first error; drop the option",
        )


def evaluate_bon(
    problems: Sequence[BonProblem], scorer: StoreScorer, *, on_progress: Progress | None = None
) -> BonResults:
    """Grade and verify what the store lacks, compute every figure and save ``RUN/bon.json``."""
    check_config(scorer.config)
    responses = len(problems[0].responses) if problems else 0
    grades = grade_problems(problems, GradeCache(scorer.store), on_progress)
    items = [[p.item(r) for r in range(len(p.responses))] for p in problems]
    todo = [item for per in items for item in per if item is not None]
    scorer.score(todo, lambda p: on_progress("verify", p.done, p.total) if on_progress else None)
    n = scorer.config.n
    scores = [
        [solution_scores(step_rewards_at(scorer.matrix(item, n), n) if item else None) for item in per]
        for per in items
    ]
    outcomes = [outcome_of(g, s) for g, s in zip(grades, scores)]
    results = BonResults(
        model=scorer.engine.model_id, n=n, responses=responses, settings=scorer.settings,
        methods=method_table(outcomes, responses), agreement=agreement(problems, grades),
        samples=[sample_json(p, g, s, i) for p, g, s, i in zip(problems, grades, scores, items)],
    )
    write_results(scorer.store, results)
    return results


def grade_problems(
    problems: Sequence[BonProblem], cache: GradeCache, on_progress: Progress | None = None
) -> list[list[Grade]]:
    """Every response's grade, per problem (cached ones read from the store)."""
    pairs = [(p.gold, response) for p in problems for response in p.responses]
    flat = cache.grade(pairs, lambda done, total: on_progress("grade", done, total) if on_progress else None)
    grades: list[list[Grade]] = []
    for p in problems:
        grades.append(flat[: len(p.responses)])
        flat = flat[len(p.responses) :]
    return grades


def write_results(store: RunStore, results: BonResults) -> Path:
    """Save the figures beside the store, for ``genprm report`` and for people."""
    return write_json_atomic(store.run_dir / RESULT_FILE, results.to_json())
