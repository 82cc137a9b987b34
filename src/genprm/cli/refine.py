"""``genprm refine``: the critique-refine loop, a thin layer over :mod:`genprm.evaluation.refine`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from genprm.cli.cluster import cluster_of, verifier_models
from genprm.cli.common import err, fail_on_errors, phase_bar, phase_updater, print_table
from genprm.cli.options import (
    AdaptiveBatch,
    AdaptiveMargin,
    AdaptiveN,
    BaseUrl,
    Cascade,
    CascadeBand,
    ChatTemplateFile,
    Concurrency,
    EngineName,
    GpusPerReplica,
    MinPaths,
    Model,
    NCtx,
    RayAddress,
    Replicas,
    RetryFailed,
    Reward,
    RunDir,
    Sandbox,
    ServedModel,
    StopAtFirstError,
    Threads,
    Tokenizer,
    VerifierMode,
    compute_fields,
    engine_options,
    read_template,
)
from genprm.cli.tables import pct
from genprm.evaluation.chat import ChatModel
from genprm.evaluation.refine import DEFAULT_INSTRUCTION, Refiner, RefineSettings
from genprm.evaluation.refine_data import DEFAULT_DATA, load_problems
from genprm.evaluation.refine_results import RESULT_FILE, RefineResults, evaluate_refine
from genprm.evaluation.scoring import StoreScorer
from genprm.executor import RoleSpec
from genprm.store import RunStore
from genprm.verifier import VerifyConfig
from genprm.verifier.scheduler import solutions_for


def refine_command(
    data: Annotated[
        Path,
        typer.Option(help="JSON/JSONL problems: {problem|question, answer|gt[, response][, id]}; GSM8K's "
                     "'#### answer' is understood. A 'response' is used as the round-0 answer."),
    ] = DEFAULT_DATA,
    run: RunDir = Path("runs/refine"),
    limit: Annotated[int | None, typer.Option(help="Only the first K problems of the file.")] = None,
    rounds: Annotated[int, typer.Option(help="Critique-refine rounds after the first answer (the paper: 3).")] = 3,
    n: Annotated[int, typer.Option("--n", "-n", help="Verification paths per step (rewards averaged).")] = 1,
    threshold: Annotated[float, typer.Option(help="The first step whose reward is below this is critiqued.")] = 0.5,
    history: Annotated[
        str, typer.Option(help="full: later rounds keep the whole conversation (multi-turn); last: only the "
                          "problem, the latest answer and the new critique (the released code).")
    ] = "full",
    instruction: Annotated[
        str, typer.Option(help="Appended to the problem after a blank line in the policy's first turn ('' for none).")
    ] = DEFAULT_INSTRUCTION,
    policy_model: Annotated[
        str | None, typer.Option(help="The policy model (same forms as --model); default: --model, loaded once.")
    ] = None,
    policy_engine: Annotated[str | None, typer.Option(help="The policy's engine; default: --engine.")] = None,
    policy_base_url: Annotated[
        str | None, typer.Option(help="openai policy engine: its server (default: --base-url).")
    ] = None,
    policy_served_model: Annotated[str | None, typer.Option(help="openai policy engine: the served name.")] = None,
    policy_chat_template: Annotated[Path | None, typer.Option(help="A Jinja chat template for the policy.")] = None,
    policy_max_tokens: Annotated[
        int, typer.Option(help="Token budget of one policy answer (the released code's 16384; capped by what the "
                          "policy's context leaves after the prompt).")
    ] = 16384,
    critique_from: Annotated[
        str, typer.Option(help="Whose analysis of the critiqued step the policy sees: first (path 0, the history "
                          "the released code keeps) or worst (the path with the lowest reward there).")
    ] = "first",
    policy_temperature: Annotated[float, typer.Option(help="Policy sampling temperature.")] = 0.7,
    policy_top_p: Annotated[float, typer.Option(help="Policy nucleus sampling mass.")] = 0.8,
    policy_top_k: Annotated[int, typer.Option(help="Policy top-k (0 disables).")] = 20,
    mode: VerifierMode = None,
    stop_at_first_error: StopAtFirstError = False,
    cascade: Cascade = None,
    cascade_band: CascadeBand = 0.2,
    adaptive_n: AdaptiveN = False,
    min_paths: MinPaths = 2,
    adaptive_batch: AdaptiveBatch = 1,
    adaptive_margin: AdaptiveMargin = 0.2,
    max_step_tokens: Annotated[int, typer.Option(help="Verifier's generated-token budget per step and path.")] = 2048,
    temperature: Annotated[float, typer.Option(help="Verifier sampling temperature.")] = 0.6,
    seed: Annotated[int, typer.Option(help="Base random seed (policy and verifier).")] = 0,
    model: Model = "smollm2-135m-instruct",
    engine: EngineName = "llamacpp",
    concurrency: Concurrency = 1,
    base_url: BaseUrl = None,
    served_model: ServedModel = None,
    tokenizer: Tokenizer = None,
    n_ctx: NCtx = None,
    threads: Threads = None,
    chat_template: ChatTemplateFile = None,
    reward: Reward = "paper",
    sandbox: Sandbox = "auto",
    retry_failed: RetryFailed = False,
    ray: RayAddress = None,
    replicas: Replicas = 1,
    gpus_per_replica: GpusPerReplica = 0.0,
) -> None:
    """Critique-refine: the verifier critiques the first wrong step, the policy answers again; accuracy per round."""
    with fail_on_errors():
        settings = RefineSettings(
            rounds=rounds,
            history=history,  # type: ignore[arg-type]  # checked by RefineSettings, named in its error
            instruction=instruction, max_tokens=policy_max_tokens, temperature=policy_temperature,
            top_p=policy_top_p, top_k=policy_top_k, seed=seed,
            critique=critique_from,  # type: ignore[arg-type]  # checked by RefineSettings, named in its error
        )
        compute = compute_fields(
            mode, stop_at_first_error=stop_at_first_error, cascade=cascade, cascade_band=cascade_band,
            adaptive_n=adaptive_n, min_paths=min_paths, adaptive_batch=adaptive_batch, adaptive_margin=adaptive_margin,
        )
        config = VerifyConfig(
            n=n, threshold=threshold, max_step_tokens=max_step_tokens, temperature=temperature, seed=seed,
            reward=reward, sandbox=sandbox, **compute,
        )
        problems = load_problems(data, limit)
        verifier_options = engine_options(
            engine, base_url=base_url, served_model=served_model, tokenizer=tokenizer, n_ctx=n_ctx, threads=threads
        )
        chosen_engine = policy_engine or engine
        policy_options = engine_options(
            chosen_engine, base_url=policy_base_url or base_url, served_model=policy_served_model or served_model,
            tokenizer=tokenizer, n_ctx=n_ctx, threads=threads,
        )
        err.print(f"{len(problems)} problems, {rounds} round(s); results in {run}/", highlight=False)
        cluster = cluster_of(ray, replicas, gpus_per_replica, threads)
        template, policy_template = read_template(chat_template), read_template(policy_chat_template)
        specs = {  # the same model on the same engine loads once
            "verifier": RoleSpec(engine, model, tuple(sorted(verifier_options.items())), template),
            "policy": RoleSpec(chosen_engine, policy_model or model, tuple(sorted(policy_options.items())),
                               policy_template),
        }
        units = solutions_for(config, concurrency)
        with RunStore(run) as store, verifier_models(cluster, specs, units) as (engines, executor), \
                phase_bar() as bar:
            scorer = StoreScorer(store, engines["verifier"], config, chat_template=template, concurrency=concurrency,
                                 retry_failed=retry_failed, executor=executor)
            refiner = Refiner(store, ChatModel(engines["policy"], policy_template), scorer, settings)
            results = evaluate_refine(problems, refiner, phase_updater(bar))
        print_refine(err, results)
        err.print(f"figures saved to {run / RESULT_FILE}", highlight=False)


def print_refine(console: Console, results: RefineResults) -> None:
    """Accuracy per round, how many answers were refined, and how many flipped each way."""
    table = Table()
    for name in ("round", "accuracy %", "refined", "wrong→right", "right→wrong"):
        table.add_column(name, justify="right")
    for r, accuracy in results.accuracy.items():
        moved = results.transitions.get(r, {})
        table.add_row(
            str(r), pct(accuracy), str(results.refined.get(r, "–")),
            str(moved.get("wrong_to_right", "–")), str(moved.get("right_to_wrong", "–")),
        )
    title = f"Critique-refine — policy {results.policy}, verifier {results.verifier}, {len(results.samples)} problems"
    print_table(console, table, title)
