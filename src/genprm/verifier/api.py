"""The public entry point: verify records from a file or memory, streaming results to JSONL.

    from genprm import verify, VerifyConfig
    results = verify("examples/one.json", model="smollm2-135m-instruct", config=VerifyConfig(n=4),
                     out="verdicts.jsonl")

Each finished record is appended to ``out`` at once; a re-run with the same ``out`` skips records
already there, so an interrupted run loses at most the record in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genprm.engines import Engine, load_engine
from genprm.errors import InputError
from genprm.io import ResultWriter, SolutionInput, read_solutions, validate_record
from genprm.verifier.config import VerifyConfig
from genprm.verifier.records import SolutionFailure, SolutionResult
from genprm.verifier.scheduler import Scheduler, attempt
from genprm.verifier.solution import SolutionVerifier


@dataclass(frozen=True)
class Progress:
    """What a progress callback hears: one event per record handled."""

    done: int
    skipped: int
    result: SolutionResult | None
    """The record just finished, or ``None`` for a record skipped because ``out`` had it or that failed."""
    failure: SolutionFailure | None = None
    """The record that just failed (recorded with its reason; the run goes on)."""
    failed: int = 0
    """Records failed so far in this call."""


def _inputs(source: str | Path | Iterable[dict[str, Any]]) -> Iterator[SolutionInput]:
    if isinstance(source, (str, Path)):
        yield from read_solutions(source)
        return
    for i, obj in enumerate(source):
        yield validate_record(obj, position=i)


def verify(
    source: str | Path | Iterable[dict[str, Any]],
    *,
    model: str | Engine = "smollm2-135m-instruct",
    config: VerifyConfig | None = None,
    out: str | Path | None = None,
    engine: str = "llamacpp",
    engine_options: dict[str, Any] | None = None,
    chat_template: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    concurrency: int = 1,
    retry_failed: bool = False,
) -> list[SolutionResult]:
    """Verify every record of ``source`` step by step; returns the results computed in this call.

    ``model`` is a model name/path for ``engine`` or an already started :class:`Engine` (which is
    then left open). ``concurrency`` > 1 keeps that many paths in flight across solutions (results
    then arrive in completion order). Records must have ``problem`` (str) and ``steps`` (non-empty list of str);
    other fields pass through to the output.

    A record whose verification fails is written with a ``failed`` field (reason, error, transient)
    and the run goes on; re-running with the same ``out`` retries transient failures (a server down),
    and the others only with ``retry_failed``.
    """
    cfg = config or VerifyConfig()
    owned = not isinstance(model, Engine)
    llm = load_engine(engine, model, **(engine_options or {})) if isinstance(model, str) else model
    writer = ResultWriter(out) if out is not None else None
    results: list[SolutionResult] = []
    failures: list[SolutionFailure] = []
    skipped = 0

    def todo() -> Iterator[SolutionInput]:
        nonlocal skipped
        settings = cfg.model_dump(mode="json")
        for item in _inputs(source):
            if writer is not None and item.key in writer.done and not _retry(writer.done[item.key], retry_failed):
                _check_same_settings(writer, item, settings, llm.model_id)
                skipped += 1
                if on_progress:
                    on_progress(Progress(len(results), skipped, None, failed=len(failures)))
                continue
            yield item

    def finished(result: SolutionResult) -> None:
        if writer is not None:
            writer.write(result.to_dict())
        results.append(result)
        if on_progress:
            on_progress(Progress(len(results), skipped, result, failed=len(failures)))

    def failed(failure: SolutionFailure) -> None:
        if writer is not None:
            writer.write({**failure.to_dict(), "model": llm.model_id, "config": cfg.model_dump(mode="json")})
        failures.append(failure)
        if on_progress:
            on_progress(Progress(len(results), skipped, None, failure, len(failures)))

    try:
        verifier = SolutionVerifier(llm, cfg, chat_template=chat_template)
        if concurrency <= 1:
            for item in todo():
                outcome = attempt(verifier, item)
                if isinstance(outcome, SolutionFailure):
                    failed(outcome)
                else:
                    finished(outcome)
        else:
            scheduler = Scheduler(verifier, concurrency=concurrency)
            try:
                scheduler.run(todo(), finished, on_failure=failed)
            finally:
                scheduler.close()
    finally:
        if writer is not None:
            writer.close()
        if owned:
            llm.close()
    return results


def _retry(previous: dict[str, Any], retry_failed: bool) -> bool:
    """Whether a record already in the output is verified again: a failure that may not recur
    (transient), or any failure when asked.
    """
    failure = previous.get("failed")
    return isinstance(failure, dict) and (retry_failed or bool(failure.get("transient")))


def _check_same_settings(writer: ResultWriter, item: SolutionInput, settings: dict[str, Any], model: str) -> None:
    """Refuse to mix results of different settings in one output file."""
    previous = writer.done[item.key]
    # Settings added since that record was written read as their defaults, which is what it ran with.
    recorded = {**VerifyConfig().model_dump(mode="json"), **(previous.get("config") or {})}
    if recorded != settings or previous.get("model") != model:
        raise InputError(
            "already holds this record verified with other settings or another model; "
            "write to a new --out file (or delete it) to verify again",
            path=str(writer.path),
            record=item.position,
        )
