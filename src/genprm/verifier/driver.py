"""Run path coroutines against an engine and sandbox sessions.

``drive`` advances a group of coroutines in lock-step and hands all their pending generations to
the engine as one batch (then all their verdict reads as another), so batch engines see N paths at
once. Code runs go to each coroutine's own runner. Results come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from genprm.engines.base import Engine
from genprm.verifier.path import Action, ExecuteCode, Generate, PathCoroutine, ScoreTokens
from genprm.verifier.records import PathStep

CodeRunner = Callable[[str], str]


def drive(engine: Engine, coroutines: Sequence[PathCoroutine], runners: Sequence[CodeRunner]) -> list[PathStep]:
    """Run every coroutine to completion; ``runners[i]`` executes code for coroutine ``i``."""
    results: list[PathStep | None] = [None] * len(coroutines)
    pending: dict[int, Action] = {}

    def advance(i: int, value: Any) -> None:
        try:
            pending[i] = coroutines[i].send(value)
        except StopIteration as done:
            pending.pop(i, None)
            results[i] = done.value

    for i in range(len(coroutines)):
        advance(i, None)
    while pending:
        round_ = list(pending.items())
        answers: dict[int, Any] = {}
        gens = [(i, a.request) for i, a in round_ if isinstance(a, Generate)]
        if gens:
            answers.update(zip([i for i, _ in gens], engine.generate([r for _, r in gens])))
        scores = [(i, a.request) for i, a in round_ if isinstance(a, ScoreTokens)]
        if scores:
            answers.update(zip([i for i, _ in scores], engine.next_token_logprobs([r for _, r in scores])))
        for i, action in round_:
            if isinstance(action, ExecuteCode):
                answers[i] = runners[i](action.code)
        for i, _ in round_:
            advance(i, answers[i])
    return [r for r in results if r is not None]


class PathRunner(Protocol):
    """Runs one step's path coroutines and returns their results in input order."""

    def __call__(
        self, engine: Engine, coroutines: Sequence[PathCoroutine], runners: Sequence[CodeRunner]
    ) -> list[PathStep]: ...


def run_inline(engine: Engine, coroutines: Sequence[PathCoroutine], runners: Sequence[CodeRunner]) -> list[PathStep]:
    """The plain loop: in this thread, all paths as one batch, or one after another for engines that
    do not batch (their KV cache is reused best when a path's calls come back to back).
    """
    if engine.max_batch <= 1:
        return [drive(engine, [c], [r])[0] for c, r in zip(coroutines, runners)]
    return drive(engine, coroutines, runners)


class ThreadedRunner:
    """Runs every path on its own worker thread, so engine calls from many paths and solutions are
    in flight together (the engine batches them) and code runs overlap with generation.
    """

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool

    def __call__(
        self, engine: Engine, coroutines: Sequence[PathCoroutine], runners: Sequence[CodeRunner]
    ) -> list[PathStep]:
        futures = [self.pool.submit(drive, engine, [c], [r]) for c, r in zip(coroutines, runners)]
        return [f.result()[0] for f in futures]
