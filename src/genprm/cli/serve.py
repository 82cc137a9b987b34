"""``genprm serve``: the reward server for RL, a thin layer over :func:`genprm.serving.serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from genprm.cli.common import describe, fail, fail_on_errors
from genprm.cli.options import (
    AdaptiveBatch,
    AdaptiveMargin,
    AdaptiveN,
    BaseUrl,
    Cascade,
    CascadeBand,
    ChatTemplateFile,
    EngineName,
    MaxStepTokens,
    MinPaths,
    Model,
    NCtx,
    Parallel,
    Reward,
    Sandbox,
    Seed,
    ServedModel,
    StopAtFirstError,
    Temperature,
    Threads,
    Tokenizer,
    VerifierMode,
    compute_fields,
    engine_options,
    read_template,
)
from genprm.errors import GenPRMError
from genprm.evaluation.bon_metrics import AGGREGATIONS
from genprm.serving import API_KEY_ENV, DEFAULT_SPECIAL_TOKENS, QueryParser, ServeConfig
from genprm.verifier import VerifyConfig

# Options only this command has (declared here; shared ones come from cli.options).
ServeRun = Annotated[
    Path | None,
    typer.Option("--run", help="Run folder whose store keeps every verified solution across restarts "
                 "(default: a temporary folder removed at exit)."),
]


def serve_command(
    model: Model = "smollm2-135m-instruct",
    engine: EngineName = "llamacpp",
    base_url: BaseUrl = None,
    served_model: ServedModel = None,
    tokenizer: Tokenizer = None,
    n_ctx: NCtx = None,
    threads: Threads = None,
    parallel: Parallel = 1,
    chat_template: ChatTemplateFile = None,
    n: Annotated[int, typer.Option("--n", "-n", help="Verification paths per step; rewards are averaged.")] = 4,
    aggregate: Annotated[
        str, typer.Option(help=f"Solution score from the step rewards: {', '.join(AGGREGATIONS)}.")
    ] = "min",
    outcome_weight: Annotated[
        float, typer.Option(help="Mix in the final answer graded against the request's label by math-verify: "
                            "reward = (1 - w) * PRM score + w * outcome.")
    ] = 0.0,
    unscored_reward: Annotated[
        float, typer.Option(help="PRM score of a solution with no readable step (flagged scored=false).")
    ] = 0.0,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar=API_KEY_ENV, help="Bearer token required on every endpoint but /health.")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help="Verification paths in flight at once across all requests. Default: vLLM's batch; 32 "
                     "for --engine openai; 2 x N on llama.cpp, which runs one call at a time (more paths would only "
                     "make each solution wait on all the others)."),
    ] = None,
    max_queue: Annotated[int, typer.Option(help="Solutions waiting for a worker; beyond it: 503 + Retry-After.")] = 256,
    deadline: Annotated[float, typer.Option(help="Seconds a request may take before it gets 504.")] = 150.0,
    drain: Annotated[float, typer.Option(help="On SIGTERM, seconds to let requests in flight finish.")] = 120.0,
    max_body_bytes: Annotated[int, typer.Option(help="Larger request bodies get 413.")] = 4 << 20,
    max_steps: Annotated[int, typer.Option(help="Steps per solution (more: 422).")] = 64,
    max_step_chars: Annotated[int, typer.Option(help="Characters per step (more: 422).")] = 16_000,
    split: Annotated[
        str, typer.Option(help="How a response becomes steps: paragraphs (blank lines) or steps ('Step N' lines).")
    ] = "paragraphs",
    step_pattern: Annotated[str | None, typer.Option(help="A regular expression to split steps on instead.")] = None,
    problem_template: Annotated[
        str | None,
        typer.Option(help="The prompt's user turn around the problem, '{problem}' marking it, e.g. "
                     "'{problem}\\nPlease reason step by step, and put your final answer within \\boxed{}.'"),
    ] = None,
    strip_token: Annotated[
        list[str] | None,
        typer.Option(help="A policy special token to remove from responses (repeat; replaces the default list: "
                     f"{' '.join(DEFAULT_SPECIAL_TOKENS)})."),
    ] = None,
    run: ServeRun = None,
    mode: VerifierMode = None,
    threshold: Annotated[float, typer.Option(help="A step whose reward is below this is an error.")] = 0.5,
    stop_at_first_error: StopAtFirstError = False,
    cascade: Cascade = None,
    cascade_band: CascadeBand = 0.2,
    adaptive_n: AdaptiveN = False,
    min_paths: MinPaths = 2,
    adaptive_batch: AdaptiveBatch = 1,
    adaptive_margin: AdaptiveMargin = 0.2,
    reward: Reward = "paper",
    sandbox: Sandbox = "auto",
    temperature: Temperature = 0.6,
    max_step_tokens: MaxStepTokens = 2048,
    seed: Seed = 0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve GenPRM step rewards over HTTP for OpenRLHF, verl and TRL (see docs/serving.md)."""
    with fail_on_errors():
        compute = compute_fields(
            mode, stop_at_first_error=stop_at_first_error, cascade=cascade, cascade_band=cascade_band,
            adaptive_n=adaptive_n, min_paths=min_paths, adaptive_batch=adaptive_batch, adaptive_margin=adaptive_margin,
        )
        options = engine_options(
            engine, base_url=base_url, served_model=served_model, tokenizer=tokenizer, n_ctx=n_ctx, threads=threads,
            parallel=parallel,
        )
    try:
        verify = VerifyConfig(n=n, threshold=threshold, temperature=temperature, max_step_tokens=max_step_tokens,
                              seed=seed, reward=reward, sandbox=sandbox, **compute)
        parser = QueryParser(
            strip_tokens=tuple(strip_token) if strip_token else DEFAULT_SPECIAL_TOKENS,
            problem_template=problem_template, split=split, step_pattern=step_pattern,
        )
        config = ServeConfig(
            model=model, engine=engine, engine_options=options, chat_template=read_template(chat_template),
            verify=verify, aggregate=aggregate, outcome_weight=outcome_weight,
            unscored_reward=unscored_reward, host=host, port=port, api_key=api_key, concurrency=concurrency,
            max_queue=max_queue, deadline_s=deadline, drain_s=drain, max_body_bytes=max_body_bytes,
            max_steps=max_steps, max_step_chars=max_step_chars, parser=parser, run_dir=run,
        )
    except ValidationError as exc:
        fail(_settings_error(exc))
    except (ValueError, GenPRMError) as exc:
        fail(describe(exc))
    with fail_on_errors():
        from genprm.serving import serve

        serve(config, log_level=log_level.lower())


def _settings_error(exc: ValidationError) -> str:
    """Field errors as ``--option value: reason``; whole-record ones (such as the bind rule) as their message."""
    whole = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors() if not e["loc"]]
    return "; ".join(whole) if whole else describe(exc)
