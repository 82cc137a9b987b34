"""Verify one solution: every step, N paths each, with histories and code namespaces per path.

Per step, each level of the cascade (just ``mode`` without one) runs the step's paths, in batches
when ``adaptive_n`` is on; the first level whose reward is not uncertain decides the step, and only
its turns enter the paths' histories. The rules live in :mod:`genprm.verifier.adaptive`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from genprm.engines.base import Engine
from genprm.errors import ConfigError
from genprm.protocol.chat import ChatTemplate, build_messages
from genprm.protocol.parse import analysis_of, one_line
from genprm.protocol.prompts import VERDICTS, Mode, user_turn, verdict_close
from genprm.sandbox import CodeSession, SandboxConfig
from genprm.sandbox import check as check_sandbox
from genprm.verifier.adaptive import Tally, decisive, uncertain
from genprm.verifier.config import VerifyConfig
from genprm.verifier.driver import PathRunner, run_inline
from genprm.verifier.path import derive_seed, verify_step_path
from genprm.verifier.records import (
    ComputeUsage,
    PathStep,
    SolutionResult,
    StepResult,
    StepStatus,
    first_error_of,
)


@dataclass
class _PathState:
    """One path's history: its assistant turns, the code that ran in its namespace, the namespace.

    The session starts its sandbox worker on its first code run (most analysis-only paths never need
    one); a path that took over another's history (``adaptive_n``) gets that path's code as the
    session's ``replay``, run silently into the fresh namespace first.
    """

    session: CodeSession
    turns: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    branched_from: int | None = None


class _Histories:
    """Every path's state. A path asked to verify step ``k`` without turns for all earlier steps
    (``adaptive_n`` drew it late, or skipped it at some step) takes over a copy of the history of
    live path ``j mod m`` (the ``m`` paths that verified every earlier step themselves, by index) and
    replays its code. In shared mode every path uses path 0's state.
    """

    def __init__(self, sandbox: SandboxConfig, shared: bool) -> None:
        self._sandbox = sandbox
        self._shared = shared
        self._states: dict[int, _PathState] = {}

    def state(self, path: int, k: int) -> _PathState:
        """The state ``path`` verifies step ``k`` (from 0) in, branching it when it has none."""
        key = 0 if self._shared else path
        own = self._states.get(key)
        if own is not None and len(own.turns) == k:
            return own
        if own is not None:
            own.session.close()
        if k == 0:
            state = _PathState(CodeSession(self._sandbox))
        else:
            # The first path of every step is always drawn, so at least one path is live.
            live = sorted(j for j, s in self._states.items() if len(s.turns) == k and s.branched_from is None)
            source = live[path % len(live)]
            origin = self._states[source]
            state = _PathState(
                CodeSession(self._sandbox, replay=origin.code), list(origin.turns), list(origin.code), source
            )
        self._states[key] = state
        return state

    def commit(self, path: PathStep) -> None:
        """Append ``path``'s turn (and the code it ran) to its history."""
        state = self._states[0 if self._shared else path.path]
        state.turns.append(path.text)
        state.code.extend(run.code for run in path.code_runs if run.executed and run.code)
        state.branched_from = None

    def close(self) -> None:
        for state in self._states.values():
            state.session.close()


class SolutionVerifier:
    """Verifies solutions step by step with one engine and one settings record."""

    def __init__(
        self,
        engine: Engine,
        config: VerifyConfig | None = None,
        *,
        chat_template: str | None = None,
        sandbox: SandboxConfig | None = None,
        runner: PathRunner = run_inline,
    ) -> None:
        self.engine = engine
        self.run_paths = runner
        self.config = config or VerifyConfig()
        source = chat_template or engine.chat_template
        if not source:
            raise ConfigError("chat_template", None, f"model {engine.model_id} ships none; pass one explicitly")
        self.chat = ChatTemplate(source, engine.special_tokens)
        self.sandbox = sandbox or SandboxConfig(
            timeout_s=self.config.code_timeout_s, max_output_chars=self.config.code_max_output_chars,
            isolation=self.config.sandbox,
        )
        self._level_configs = {m: self.config.model_copy(update={"mode": m}) for m in self.config.levels}
        if any(mode.executes for mode in self.config.levels):
            check_sandbox(self.sandbox)  # a refusal stops here, once, not in every sample

    def verify(
        self,
        problem: str,
        steps: Sequence[str],
        *,
        record: dict[str, Any] | None = None,
        key: str = "",
        path_ids: Sequence[int] | None = None,
    ) -> SolutionResult:
        """Score every step of one solution; ``record`` is carried into the result unchanged.

        ``path_ids`` runs only those paths (default ``range(n)``): an independent path depends only
        on its own index, so a store can add paths 4..7 to a run that has 0..3 (independent mode with
        fixed N and one mode only: with a cascade or ``adaptive_n`` a path's work depends on the others).
        """
        cfg = self.config
        started = time.perf_counter()
        ids = self._path_ids(path_ids)
        users = [user_turn(problem, s, i, cfg.first_turn) for i, s in enumerate(steps)]
        results: list[StepResult] = []
        usage = ComputeUsage()
        with ExitStack() as stack:
            histories = _Histories(self.sandbox, shared=cfg.paths == "shared")
            stack.callback(histories.close)
            for k in range(len(steps)):
                results.append(self._verify_step(users[: k + 1], histories, k, key, ids, usage))
                reward = results[-1].reward
                if cfg.stop_at_first_error and reward is not None and reward < cfg.threshold:
                    break
        usage.path_steps_fixed = len(ids) * len(results)
        rewards: list[float | None] = [r.reward for r in results]
        status: list[StepStatus] = [r.status for r in results]
        skipped = len(steps) - len(results)
        return SolutionResult(
            record=dict(record or {"problem": problem, "steps": list(steps)}),
            step_rewards=rewards + [None] * skipped,
            step_status=status + ["skipped"] * skipped,
            first_error=first_error_of(rewards, cfg.threshold),
            steps=results,
            threshold=cfg.threshold,
            model=self.engine.model_id,
            config=cfg.model_dump(mode="json"),
            stopped_early=skipped > 0,
            seconds=time.perf_counter() - started,
            key=key,
            compute=usage,
        )

    def _path_ids(self, path_ids: Sequence[int] | None) -> list[int]:
        cfg = self.config
        if path_ids is None:
            return list(range(cfg.n))
        if cfg.paths != "independent":
            raise ConfigError("paths", cfg.paths, "running a subset of paths needs independent paths")
        if cfg.adaptive:
            raise ConfigError("path_ids", list(path_ids), "a subset of paths needs fixed n and one mode "
                              "(no cascade, no adaptive_n): otherwise a path's work depends on the others")
        if not path_ids:
            raise ConfigError("path_ids", list(path_ids), "give at least one path")
        return list(path_ids)

    def _verify_step(
        self, users: list[str], histories: _Histories, k: int, key: str, ids: list[int], usage: ComputeUsage
    ) -> StepResult:
        """Run the cascade's levels until one decides the step; commit that level's turns."""
        cfg = self.config
        levels = cfg.levels
        level_rewards: list[float | None] = []
        for level, mode in enumerate(levels):
            band = cfg.cascade_band if level < len(levels) - 1 else 0.0
            paths, cancelled = self._run_level(mode, band, users, histories, k, key, ids)
            usage.add(mode.value, paths)
            level_rewards.append(_mean(paths))
            if cancelled or not uncertain(level_rewards[-1], cfg.threshold, band):
                break
        decided = _step_verdict(_mean(paths), cfg.threshold)
        for path in paths:
            if not path.cancelled and not path.readable:
                _close_with(path, decided)
        for path in paths[: 1 if cfg.paths == "shared" else len(paths)]:
            if not path.cancelled:
                histories.commit(path)
        return _summarise(k, paths, mode, level, level_rewards)

    def _run_level(
        self, mode: Mode, band: float, users: list[str], histories: _Histories, k: int, key: str, ids: list[int]
    ) -> tuple[list[PathStep], bool]:
        """One level's paths, drawn batch by batch until decisive (``adaptive_n``) or cancelled."""
        cfg = self.config
        tally = Tally(len(ids), cfg.threshold, band, cancel=cfg.stop_at_first_error)
        paths: list[PathStep] = []
        for batch in self._batches(ids):
            paths += self._run_batch(self._level_configs[mode], batch, users, histories, k, key, tally)
            if tally.cancelled or (cfg.adaptive_n and decisive(_mean(paths), cfg.threshold, cfg.adaptive_margin)):
                break
        return paths, tally.cancelled

    def _batches(self, ids: list[int]) -> Iterator[list[int]]:
        """All paths at once; with ``adaptive_n``, ``min_paths`` first, then ``adaptive_batch`` at a time."""
        cfg = self.config
        if not cfg.adaptive_n:
            yield ids
            return
        yield ids[: cfg.min_paths]
        for start in range(cfg.min_paths, len(ids), cfg.adaptive_batch):
            yield ids[start : start + cfg.adaptive_batch]

    def _run_batch(
        self,
        config: VerifyConfig,
        batch: list[int],
        users: list[str],
        histories: _Histories,
        k: int,
        key: str,
        tally: Tally,
    ) -> list[PathStep]:
        states = [histories.state(j, k) for j in batch]
        system = config.mode.system_prompt
        coroutines = [
            verify_step_path(
                config,
                self.chat.prompt_for(build_messages(system, users, s.turns), config.assistant_header),
                k + 1,
                j,
                self.engine.tokenize,
                derive_seed(config.seed, key, k, j),
            )
            for j, s in zip(batch, states)
        ]
        runners = [s.session.run for s in states]
        if config.paths == "shared":
            # The released code runs paths one after another against one code namespace: keep that
            # order, since code of path j can change what path j+1's code sees.
            paths = [self.run_paths(self.engine, [c], [r], tally)[0] for c, r in zip(coroutines, runners)]
        else:
            paths = self.run_paths(self.engine, coroutines, runners, tally)
        for path, state in zip(paths, states):
            path.branched_from = state.branched_from
        return paths


def _step_verdict(reward: float | None, threshold: float) -> str:
    """The step's own verdict: No below the threshold, else Yes (also when no path was readable,
    which ``first_error`` does not count as an error either).
    """
    return VERDICTS[1] if reward is not None and reward < threshold else VERDICTS[0]


def _close_with(path: PathStep, verdict: str) -> None:
    """Close an unreadable path's turn with the step's verdict.

    Its own verdict could not be read, so writing "No" into later steps' history would invent a
    judgement the model never made; the step's verdict (from the readable paths) is what the
    verifier decided at that step. ``path.readable`` stays false and the reward stays ``None``.
    """
    for candidate in VERDICTS:
        tail = verdict_close(candidate)
        if path.text.endswith(tail):
            path.text = path.text[: -len(tail)]
            break
    path.text += verdict_close(verdict)
    path.verdict = verdict


def _mean(paths: Sequence[PathStep]) -> float | None:
    """The mean reward of the readable paths, in path order (so it is the same however they ran)."""
    readable = [p.reward for p in paths if p.readable and p.reward is not None]
    return sum(readable) / len(readable) if readable else None


def _summarise(
    index: int, paths: list[PathStep], mode: Mode, level: int, level_rewards: list[float | None]
) -> StepResult:
    reward = _mean(paths)
    first = next((p for p in paths if p.text and not p.cancelled), None)
    return StepResult(
        index=index,
        reward=reward,
        status="scored" if reward is not None else "unreadable",
        paths=paths,
        critique=one_line(analysis_of(first.text)) if first else "",
        mode=mode.value,
        level=level,
        level_rewards=level_rewards,
        cancelled_paths=sum(p.cancelled for p in paths),
    )
