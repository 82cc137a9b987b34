"""Verify one solution: every step, N paths each, with histories and code namespaces per path."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from genprm.engines.base import Engine
from genprm.errors import ConfigError
from genprm.protocol.chat import ChatTemplate, build_messages
from genprm.protocol.parse import analysis_of, one_line
from genprm.protocol.prompts import user_turn
from genprm.sandbox import CodeSession, SandboxConfig
from genprm.verifier.config import VerifyConfig
from genprm.verifier.driver import PathRunner, run_inline
from genprm.verifier.path import PathCoroutine, derive_seed, verify_step_path
from genprm.verifier.records import PathStep, SolutionResult, StepResult, StepStatus, first_error_of


class _LazySession:
    """A sandbox session started on its first code run: most analysis-only paths never need one."""

    def __init__(self, config: SandboxConfig, stack: ExitStack) -> None:
        self._config = config
        self._stack = stack
        self._session: CodeSession | None = None

    def run(self, code: str) -> str:
        if self._session is None:
            self._session = self._stack.enter_context(CodeSession(self._config))
        return self._session.run(code)


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
            timeout_s=self.config.code_timeout_s, max_output_chars=self.config.code_max_output_chars
        )

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
        on its own index, so a store can add paths 4..7 to a run that has 0..3 (independent mode only).
        """
        cfg = self.config
        started = time.perf_counter()
        ids = list(range(cfg.n)) if path_ids is None else list(path_ids)
        if path_ids is not None and cfg.paths != "independent":
            raise ConfigError("paths", cfg.paths, "running a subset of paths needs independent paths")
        if not ids:
            raise ConfigError("path_ids", ids, "give at least one path")
        users = [user_turn(problem, s, i, cfg.first_turn) for i, s in enumerate(steps)]
        n_histories = len(ids) if cfg.paths == "independent" else 1
        histories: list[list[str]] = [[] for _ in range(n_histories)]
        results: list[StepResult] = []
        with ExitStack() as stack:
            sessions = [_LazySession(self.sandbox, stack) for _ in range(n_histories)]
            for k in range(len(steps)):
                paths = self._verify_step(users[: k + 1], histories, sessions, k, key, ids)
                if cfg.paths == "independent":
                    for history, path in zip(histories, paths):
                        history.append(path.text)
                else:
                    histories[0].append(paths[0].text)
                results.append(_summarise(k, paths))
                reward = results[-1].reward
                if cfg.stop_at_first_error and reward is not None and reward < cfg.threshold:
                    break
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
        )

    def _verify_step(
        self,
        users: list[str],
        histories: list[list[str]],
        sessions: list[_LazySession],
        k: int,
        key: str,
        ids: list[int],
    ) -> list[PathStep]:
        cfg = self.config
        system = cfg.mode.system_prompt

        def coroutine(slot: int) -> PathCoroutine:
            history = histories[slot if cfg.paths == "independent" else 0]
            prompt = self.chat.prompt_for(build_messages(system, users, history), cfg.assistant_header)
            path = ids[slot]
            seed = derive_seed(cfg.seed, key, k, path)
            return verify_step_path(cfg, prompt, k + 1, path, self.engine.tokenize, seed)

        if cfg.paths == "shared":
            # The released code runs paths one after another against one code namespace: keep that
            # order, since code of path j can change what path j+1's code sees.
            return [self.run_paths(self.engine, [coroutine(j)], [sessions[0].run])[0] for j in range(cfg.n)]
        return self.run_paths(self.engine, [coroutine(j) for j in range(len(ids))], [s.run for s in sessions])


def _summarise(index: int, paths: list[PathStep]) -> StepResult:
    readable = [p.reward for p in paths if p.readable and p.reward is not None]
    reward = sum(readable) / len(readable) if readable else None
    first = paths[0]
    critique = one_line(analysis_of(first.text)) if first.text else ""
    return StepResult(
        index=index,
        reward=reward,
        status="scored" if reward is not None else "unreadable",
        paths=paths,
        critique=critique,
    )
