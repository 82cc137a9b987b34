"""The reward server: ``create_app(config) -> FastAPI``, with no state outside the app it builds.

The lifespan starts the engine, the run store and the shared :class:`VerificationService`, and on
shutdown lets every accepted solution finish before it closes them. Endpoints:

- ``POST /get_reward``: OpenRLHF's remote reward protocol (``--reward.remote_url``);
- ``POST /v1/verify``: one solution, genprm's own form (the verl and TRL clients use it);
- ``GET /health`` (never needs the key) and ``GET /metrics`` (Prometheus text).

Every response carries ``X-Request-ID``; errors are JSON naming the fields at fault, and an internal
error is logged with its traceback under that id while the client gets one line.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from genprm.engines import Engine, load_engine
from genprm.io import SolutionInput
from genprm.serving.config import ServeConfig
from genprm.serving.gate import Gate, authorized, request_id_of
from genprm.serving.metrics import CONTENT_TYPE, ServerMetrics
from genprm.serving.outcomes import OutcomeGrader
from genprm.serving.queries import QueryError
from genprm.serving.results import Reward, Scored, reward_of
from genprm.serving.schemas import ErrorResponse, RewardRequest, RewardResponse, VerifyRequest, VerifyResponse
from genprm.serving.service import Outcome, QueueFull, ServiceClosed, Stopped, Ticket, VerificationService
from genprm.store import RunStore
from genprm.verifier.records import SolutionFailure

log = logging.getLogger("genprm.serving")

POLL_S = 0.25
"""How often a waiting request checks whether its client is still there."""


class ApiError(Exception):
    """An error answer: status, one line, the fields at fault, extra headers."""

    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields or []
        self.headers = headers or {}


def _field_error(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", [{"field": field, "message": message}])


@dataclass
class _Runtime:
    """What the lifespan starts and the endpoints use."""

    config: ServeConfig
    engine: Engine
    service: VerificationService
    grader: OutcomeGrader
    metrics: ServerMetrics


@dataclass(frozen=True)
class _Solution:
    """One solution of a request, read and bounded, before verification."""

    item: SolutionInput
    response: str
    label: str | None


def _runtime(request: Request) -> _Runtime:
    value: _Runtime = request.app.state.runtime
    return value


Runtime = Annotated[_Runtime, Depends(_runtime)]


def _require_key(request: Request, rt: Runtime) -> None:
    key = rt.config.api_key
    if key is not None and not authorized(request.headers.get("authorization"), key):
        raise ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                       headers={"WWW-Authenticate": 'Bearer realm="genprm"'})


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The reward server for ``config``; ``engine``, when given, is used instead of loading one (and
    left open at shutdown).
    """
    metrics = ServerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = engine is None
        llm: Engine = engine if engine is not None else await asyncio.to_thread(
            load_engine, config.engine, config.model, **config.engine_options
        )
        run_dir = config.run_dir or Path(tempfile.mkdtemp(prefix="genprm-serve-"))
        store = RunStore(run_dir)
        concurrency = config.paths_in_flight(llm.name, llm.max_batch)
        service = VerificationService(
            llm, config.verify, store, chat_template=config.chat_template, concurrency=concurrency,
            max_queue=config.max_queue,
        )
        metrics.watch(service, llm)
        grader = OutcomeGrader()
        app.state.runtime = _Runtime(config, llm, service, grader, metrics)
        log.info("genprm serve: %s on %s (%d paths in flight, store %s)", llm.model_id, config.engine,
                 concurrency, run_dir)
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)
            grader.close()
            store.close()
            if owned:
                llm.close()
            if config.run_dir is None:
                shutil.rmtree(run_dir, ignore_errors=True)

    app = FastAPI(title="genprm reward server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(Gate, max_body_bytes=config.max_body_bytes, metrics=metrics)
    _install_error_handlers(app)

    guarded = [Depends(_require_key)]

    @app.get("/health")
    async def health(rt: Runtime) -> dict[str, Any]:
        return {"status": "ok", "model": rt.service.model_id, "queued": rt.service.queued,
                "running": rt.service.running}

    @app.get("/metrics", dependencies=guarded)
    async def metrics_text(rt: Runtime) -> Response:
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/get_reward", dependencies=guarded)
    async def get_reward(body: RewardRequest, request: Request, rt: Runtime) -> RewardResponse:
        deadline = time.monotonic() + rt.config.deadline_s
        if len(body.query) > rt.config.max_solutions:
            raise _field_error("query", f"{len(body.query)} items; at most {rt.config.max_solutions} per request")
        solutions = [_read_openrlhf(rt, body, i) for i in range(len(body.query))]
        rewards = await _score(rt, request, solutions, deadline)
        return RewardResponse(
            rewards=[r.reward for _, r in rewards],
            scores=[min(1.0, max(0.0, r.reward)) for _, r in rewards],
            extra_logs=_extra_logs(rewards, with_outcome=rt.config.outcome_weight > 0),
        )

    @app.post("/v1/verify", dependencies=guarded)
    async def verify_one(body: VerifyRequest, request: Request, rt: Runtime) -> VerifyResponse:
        deadline = time.monotonic() + rt.config.deadline_s
        solution = _read_verify(rt, body)
        ((scored, reward),) = await _score(rt, request, [solution], deadline)
        return VerifyResponse(
            reward=reward.reward, solution_score=reward.prm_score, scored=reward.scored, outcome=reward.outcome,
            step_rewards=scored.step_rewards, step_status=scored.step_status, first_error=scored.first_error,
            aggregate=rt.config.aggregate, cached=scored.cached, key=scored.key, model=rt.service.model_id,
            steps=solution.item.steps, problem=solution.item.problem,
            transcripts=scored.transcripts() if body.transcripts else None,
        )

    return app


# -- reading requests -----------------------------------------------------------------------------


def _read_openrlhf(rt: _Runtime, body: RewardRequest, i: int) -> _Solution:
    parser = rt.config.parser
    try:
        response = parser.response_of(body.query[i], body.prompts[i])
    except QueryError as exc:
        raise _field_error(f"query[{i}]", str(exc)) from None
    problem, matched = parser.problem_of(body.prompts[i])
    if not matched:
        rt.metrics.template_misses.inc()
    if not problem:
        raise _field_error(f"prompts[{i}]", "holds no problem text")
    label = body.labels[i] if body.labels is not None else None
    return _bounded(rt, problem, parser.steps_of(response), response, label, f"query[{i}]", i)


def _read_verify(rt: _Runtime, body: VerifyRequest) -> _Solution:
    parser = rt.config.parser
    if body.problem is not None:
        problem = body.problem.strip()
    else:
        problem, matched = parser.problem_of(body.prompt or "")
        if not matched:
            rt.metrics.template_misses.inc()
    if not problem:
        raise _field_error("problem" if body.problem is not None else "prompt", "holds no problem text")
    if body.steps is not None:
        steps, response, where = [s.strip() for s in body.steps], "\n\n".join(body.steps), "steps"
    else:
        response = parser.clean(body.response or "")
        steps, where = parser.steps_of(response), "response"
    return _bounded(rt, problem, steps, response, body.label, where, 0)


def _bounded(rt: _Runtime, problem: str, steps: list[str], response: str, label: Any, where: str,
             position: int) -> _Solution:
    """The solution, unless it breaks a limit (then a 422 naming ``where``)."""
    limits = rt.config
    if len(steps) > limits.max_steps:
        raise _field_error(where, f"{len(steps)} steps; at most {limits.max_steps} (--max-steps)")
    for k, step in enumerate(steps):
        if len(step) > limits.max_step_chars:
            raise _field_error(where, f"step {k} has {len(step)} characters; at most {limits.max_step_chars} "
                               "(--max-step-chars)")
        if not step:
            raise _field_error(f"{where}[{k}]" if where == "steps" else where, f"step {k} is empty")
    item = SolutionInput(problem=problem, steps=steps, record={"problem": problem, "steps": steps},
                         position=position)
    return _Solution(item, response, None if label is None else str(label))


# -- verifying ------------------------------------------------------------------------------------


async def _score(rt: _Runtime, request: Request, solutions: list[_Solution],
                 deadline: float) -> list[tuple[Scored, Reward]]:
    """Verify (or look up) every solution and grade its outcome, concurrently; rewards in input order."""
    grading = [_grade(rt, s) for s in solutions]
    tickets: list[Ticket | None] = []
    try:
        for s in solutions:
            tickets.append(rt.service.submit(s.item, deadline) if s.item.steps else None)
    except QueueFull as exc:
        _release(tickets)
        for task in grading:
            task.cancel()
        raise ApiError(503, "the server is at capacity; retry later",
                       headers={"Retry-After": str(max(1, round(exc.retry_after)))}) from None
    except ServiceClosed:
        _release(tickets)
        raise ApiError(503, "the server is shutting down", headers={"Retry-After": "5"}) from None
    try:
        outcomes = await _wait(rt, request, tickets, deadline)
        graded = await asyncio.gather(*grading)
    finally:
        _release(tickets)
        for task in grading:
            task.cancel()
    scored = [_scored_or_raise(o, s, i, len(solutions)) for i, (o, s) in enumerate(zip(outcomes, solutions))]
    return [
        (sc, reward_of(sc.step_rewards, rt.config.aggregate, outcome=g, outcome_weight=rt.config.outcome_weight,
                       unscored=rt.config.unscored_reward))
        for sc, g in zip(scored, graded)
    ]


def _grade(rt: _Runtime, solution: _Solution) -> asyncio.Future[bool | None]:
    async def grade() -> bool | None:
        if rt.config.outcome_weight <= 0 or solution.label is None:
            return None
        return await rt.grader.grade(solution.label, solution.response)

    return asyncio.ensure_future(grade())


def _release(tickets: list[Ticket | None]) -> None:
    for ticket in tickets:
        if ticket is not None:
            ticket.release()


async def _wait(rt: _Runtime, request: Request, tickets: list[Ticket | None],
                deadline: float) -> list[Outcome | None]:
    """Wait for every ticket, watching the deadline and the client (gone: the work is released)."""
    waiting = [asyncio.wrap_future(t.future) if t is not None else None for t in tickets]
    try:
        while True:
            pending = [f for f in waiting if f is not None and not f.done()]
            if not pending:
                return [f.result() if f is not None else None for f in waiting]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                rt.metrics.deadline_misses.inc()
                raise ApiError(504, f"not verified within the deadline of {rt.config.deadline_s:g} s (--deadline)")
            await asyncio.wait(pending, timeout=min(POLL_S, remaining))
            if await request.is_disconnected():
                rt.metrics.disconnects.inc()
                raise ApiError(499, "the client went away")
    finally:
        for f in waiting:
            if f is not None:
                f.cancel()


def _scored_or_raise(outcome: Outcome | None, solution: _Solution, i: int, count: int) -> Scored:
    where = f"query[{i}]" if count > 1 else "solution"
    if outcome is None:  # nothing to verify: no step
        return Scored(solution.item.key, [], [], -1, {}, cached=False)
    if isinstance(outcome, SolutionFailure):
        status = 503 if outcome.transient else 500
        raise ApiError(status, f"{where}: verification failed ({outcome.reason}); "
                       f"{'retry later' if outcome.transient else 'see the server log'}",
                       headers={"Retry-After": "5"} if outcome.transient else None)
    if isinstance(outcome, Stopped):
        raise ApiError(503, f"{where}: verification was stopped ({outcome.reason})", headers={"Retry-After": "5"})
    return outcome


def _extra_logs(rewards: list[tuple[Scored, Reward]], *, with_outcome: bool) -> dict[str, list[Any]]:
    """Per-sample numbers for OpenRLHF's logs (it makes a tensor of each: no nulls, -1 for "none")."""
    logs: dict[str, list[Any]] = {
        "prm_score": [r.prm_score if r.prm_score is not None else -1.0 for _, r in rewards],
        "scored": [float(r.scored) for _, r in rewards],
        "first_error": [s.first_error for s, _ in rewards],
        "num_steps": [len(s.step_rewards) for s, _ in rewards],
        "step_rewards": [[x if x is not None else -1.0 for x in s.step_rewards] for s, _ in rewards],
        "cached": [float(s.cached) for s, _ in rewards],
    }
    if with_outcome:
        logs["outcome"] = [-1.0 if r.outcome is None else float(r.outcome) for _, r in rewards]
    return logs


# -- errors ---------------------------------------------------------------------------------------


def _error(request: Request, status: int, message: str, fields: list[dict[str, str]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    rid = request_id_of(request.scope)
    body = ErrorResponse(error=message, fields=fields or [], request_id=rid)
    return JSONResponse(body.model_dump(), status_code=status, headers={**(headers or {}), "X-Request-ID": rid})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(request, exc.status, exc.message, exc.fields, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"field": _location(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in exc.errors()]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:3]) or "invalid request"
        return _error(request, 422, summary, fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(request, exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", request_id_of(request.scope))
        return _error(request, 500, "internal error; the server log has it under this request id")


def _location(loc: Any) -> str:
    """``('body', 'query', 0)`` -> ``query[0]``: the field as the client wrote it."""
    parts = [p for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"
