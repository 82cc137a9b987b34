"""Run path coroutines against an engine and sandbox sessions.

``drive`` advances a group of coroutines in lock-step and hands all their pending generations to
the engine as one batch (then all their verdict reads as another), so batch engines see N paths at
once. Code runs go to each coroutine's own runner. Results come back in input order.

Every driver takes an optional :class:`~genprm.verifier.adaptive.Tally`: each finished path is
recorded in it, and once it says ``cancelled`` every unfinished path is stopped before its next
action is carried out and returns marked ``cancelled``. An engine call already in flight finishes
and is handed to its path first, so the path's partial turn and token counts include it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from genprm.engines.base import Engine
from genprm.errors import ContextOverflowError
from genprm.verifier.adaptive import Tally
from genprm.verifier.path import Action, ExecuteCode, Generate, PathCancelled, PathCoroutine, ScoreTokens
from genprm.verifier.records import PathStep

CodeRunner = Callable[[str], str]


def drive(
    engine: Engine,
    coroutines: Sequence[PathCoroutine],
    runners: Sequence[CodeRunner],
    tally: Tally | None = None,
) -> list[PathStep]:
    """Run every coroutine to completion; ``runners[i]`` executes code for coroutine ``i``."""
    results: list[PathStep | None] = [None] * len(coroutines)
    pending: dict[int, Action] = {}

    def advance(i: int, value: Any, cancel: bool = False) -> None:
        try:
            if cancel:
                pending[i] = coroutines[i].throw(PathCancelled())
            elif isinstance(value, ContextOverflowError):
                pending[i] = coroutines[i].throw(value)
            else:
                pending[i] = coroutines[i].send(value)
        except StopIteration as done:
            pending.pop(i, None)
            results[i] = done.value
            if tally is not None:
                tally.record(done.value)

    for i in range(len(coroutines)):
        advance(i, None)  # builds the first request only: no engine call yet
    while pending:
        round_ = list(pending.items())
        if tally is not None and tally.cancelled:
            for i, _ in round_:
                advance(i, None, cancel=True)
            continue
        answers = _answer(engine, round_, runners)
        for i, _ in round_:
            advance(i, answers[i])
    return [r for r in results if r is not None]


def _answer(engine: Engine, round_: list[tuple[int, Action]], runners: Sequence[CodeRunner]) -> dict[int, Any]:
    """One round's answers: generations as one batch, verdict reads as another, then code runs.

    A request whose prompt does not fit the context is answered with the :class:`ContextOverflowError`
    itself (thrown into its path, which records it as unreadable); the rest of its batch is answered.
    """
    answers: dict[int, Any] = {}
    gens = [(i, a.request) for i, a in round_ if isinstance(a, Generate)]
    if gens:
        answers.update(_batch(engine.generate, gens))
    scores = [(i, a.request) for i, a in round_ if isinstance(a, ScoreTokens)]
    if scores:
        answers.update(_batch(engine.next_token_logprobs, scores))
    for i, action in round_:
        if isinstance(action, ExecuteCode):
            answers[i] = runners[i](action.code)
    return answers


def _batch(call: Callable[[list[Any]], list[Any]], pairs: list[tuple[int, Any]]) -> dict[int, Any]:
    """``call`` on every request at once; if one overflows the context, each alone to find which."""
    try:
        return dict(zip([i for i, _ in pairs], call([r for _, r in pairs])))
    except ContextOverflowError as exc:
        if len(pairs) == 1:
            return {pairs[0][0]: exc}
    answers: dict[int, Any] = {}
    for i, request in pairs:
        try:
            answers[i] = call([request])[0]
        except ContextOverflowError as exc:
            answers[i] = exc
    return answers


class PathRunner(Protocol):
    """Runs one step's path coroutines and returns their results in input order."""

    def __call__(
        self,
        engine: Engine,
        coroutines: Sequence[PathCoroutine],
        runners: Sequence[CodeRunner],
        tally: Tally | None = None,
    ) -> list[PathStep]: ...


def run_inline(
    engine: Engine,
    coroutines: Sequence[PathCoroutine],
    runners: Sequence[CodeRunner],
    tally: Tally | None = None,
) -> list[PathStep]:
    """The plain loop: in this thread, all paths as one batch, or one after another for engines that
    do not batch (their KV cache is reused best when a path's calls come back to back).
    """
    if engine.max_batch <= 1:
        return [drive(engine, [c], [r], tally)[0] for c, r in zip(coroutines, runners)]
    return drive(engine, coroutines, runners, tally)


class ThreadedRunner:
    """Runs every path on its own worker thread, so engine calls from many paths and solutions are
    in flight together (the engine batches them) and code runs overlap with generation.

    A path still queued for a thread when its step is cancelled starts, sees the cancellation before
    its first engine call and returns at once.
    """

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool

    def __call__(
        self,
        engine: Engine,
        coroutines: Sequence[PathCoroutine],
        runners: Sequence[CodeRunner],
        tally: Tally | None = None,
    ) -> list[PathStep]:
        futures = [self.pool.submit(drive, engine, [c], [r], tally) for c, r in zip(coroutines, runners)]
        return [f.result()[0] for f in futures]
