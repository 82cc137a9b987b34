"""``genprm eval ...``: benchmark commands, thin layers over :mod:`genprm.evaluation`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genprm.cli.cluster import cluster_of, verifier_models
from genprm.cli.common import err, fail_on_errors, phase_bar, phase_updater
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
    MaxStepTokens,
    MinPaths,
    Model,
    NCtx,
    Parallel,
    RayAddress,
    Replicas,
    RetryFailed,
    Reward,
    RunDir,
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
from genprm.cli.tables import print_bon, print_processbench
from genprm.errors import ConfigError
from genprm.evaluation import bon as bon_eval
from genprm.evaluation.chat import ChatModel
from genprm.evaluation.critic import Critic, CriticSettings
from genprm.evaluation.processbench import (
    DEFAULT_DATA,
    SUBSETS,
    ProcessBenchSample,
    Shard,
    StoredFigures,
    evaluate_processbench,
    load_processbench,
    stored_figures,
)
from genprm.evaluation.scoring import StoreScorer, stored_model
from genprm.executor import RoleSpec
from genprm.protocol.chat import template_fields
from genprm.store import STORE_FILE, RunStore
from genprm.verifier import VerifyConfig
from genprm.verifier.scheduler import solutions_for

eval_app = typer.Typer(help="Benchmarks as the paper reports them; runs resume from their --run folder.",
                       no_args_is_help=True)


@eval_app.command("processbench")
def processbench_command(
    run: RunDir = Path("runs/processbench"),
    data: Annotated[Path, typer.Option(help="Folder with ProcessBench's <subset>.json files.")] = DEFAULT_DATA,
    subsets: Annotated[str, typer.Option(help=f"Comma-separated: {','.join(SUBSETS)}.")] = ",".join(SUBSETS),
    limit: Annotated[
        int | None, typer.Option(help="K samples per subset: the first K/2 with an error and K/2 without.")
    ] = None,
    n: Annotated[
        int, typer.Option("--n", "-n", help="Paths per step; Pass@1 and Maj@k for every k<=N are reported.")
    ] = 1,
    threshold: Annotated[float, typer.Option(help="A step whose reward is below this is an error.")] = 0.5,
    critic: Annotated[
        bool, typer.Option(help="Also run the ProcessBench critic baseline with the same model.")
    ] = False,
    critic_max_tokens: Annotated[int, typer.Option(help="Token budget of one critic answer.")] = 2048,
    shard: Annotated[
        str | None,
        typer.Option(metavar="I/K", help="Score only every K-th sample from the I-th (1-based): K processes "
                     "with the same --run split the work; the last to finish writes the figures."),
    ] = None,
    stored_only: Annotated[
        bool,
        typer.Option(help="Compute nothing and load no model: figures over the samples already in --run with these "
                     "settings (to watch a long run from another terminal, or read a stopped one)."),
    ] = False,
    mode: VerifierMode = None,
    stop_at_first_error: StopAtFirstError = False,
    cascade: Cascade = None,
    cascade_band: CascadeBand = 0.2,
    adaptive_n: AdaptiveN = False,
    min_paths: MinPaths = 2,
    adaptive_batch: AdaptiveBatch = 1,
    adaptive_margin: AdaptiveMargin = 0.2,
    max_step_tokens: MaxStepTokens = 2048,
    temperature: Temperature = 0.6,
    seed: Seed = 0,
    model: Model = "smollm2-135m-instruct",
    engine: EngineName = "llamacpp",
    concurrency: Concurrency = 1,
    base_url: BaseUrl = None,
    served_model: ServedModel = None,
    tokenizer: Tokenizer = None,
    n_ctx: NCtx = None,
    threads: Threads = None,
    parallel: Parallel = 1,
    chat_template: ChatTemplateFile = None,
    reward: Reward = "paper",
    sandbox: Sandbox = "auto",
    retry_failed: RetryFailed = False,
    ray: RayAddress = None,
    replicas: Replicas = 1,
    gpus_per_replica: GpusPerReplica = 0.0,
) -> None:
    """ProcessBench: F1 per subset and Avg for Pass@1 and Maj@k, a threshold sweep, and optionally the critic."""
    with fail_on_errors():
        samples = load_processbench(data, [s.strip() for s in subsets.split(",") if s.strip()], limit)
        compute = compute_fields(
            mode, stop_at_first_error=stop_at_first_error, cascade=cascade, cascade_band=cascade_band,
            adaptive_n=adaptive_n, min_paths=min_paths, adaptive_batch=adaptive_batch, adaptive_margin=adaptive_margin,
        )
        config = VerifyConfig(
            n=n, threshold=threshold, max_step_tokens=max_step_tokens, temperature=temperature, seed=seed,
            reward=reward, sandbox=sandbox, **compute,
        )
        options = engine_options(
            engine, base_url=base_url, served_model=served_model, tokenizer=tokenizer, n_ctx=n_ctx, threads=threads,
            parallel=parallel,
        )
        template = read_template(chat_template)
        if stored_only:
            judged = CriticSettings(max_tokens=critic_max_tokens) if critic else None
            _print_stored(run, samples, config, model, judged, template_fields(template, None) if template else None)
            return
        part = Shard.parse(shard) if shard else None
        mine = f" (shard {part.index}/{part.count}: {len(part.pick(samples))} of them)" if part else ""
        err.print(f"{len(samples)} samples{mine}; results in {run}/", highlight=False)
        cluster = cluster_of(ray, replicas, gpus_per_replica, threads)
        spec = RoleSpec(engine, model, tuple(sorted(options.items())), template)
        units = solutions_for(config, concurrency)
        with RunStore(run) as store, verifier_models(cluster, {"verifier": spec}, units) as (engines, executor), \
                phase_bar() as bar:
            llm = engines["verifier"]
            scorer = StoreScorer(store, llm, config, chat_template=template, concurrency=concurrency,
                                 retry_failed=retry_failed, executor=executor)
            judge = None
            if critic:
                judge = Critic(store, ChatModel(llm, template), CriticSettings(max_tokens=critic_max_tokens))
            figures = evaluate_processbench(samples, scorer, critic=judge, on_progress=phase_updater(bar), shard=part)
        if figures.complete:
            print_processbench(err, figures.results)
            err.print(f"figures saved to {run / 'processbench.json'}", highlight=False)
        else:
            _print_partial(figures, "this shard is done; the other shards' samples are not all stored yet, so "
                           "processbench.json is written by the shard that finishes last")


def _print_stored(
    run: Path, samples: list[ProcessBenchSample], config: VerifyConfig, model: str, critic: CriticSettings | None,
    template: dict[str, str] | None,
) -> None:
    """``--stored-only``: figures from the store alone (a ``--chat-template`` given is the run's override)."""
    if not (run / STORE_FILE).is_file() and not run.is_file():
        raise ConfigError("--run", str(run), "holds no store yet")
    with RunStore(run) as store:
        chosen = stored_model(store, config, model, template)
        figures = stored_figures(store, samples, config, chosen, critic=critic, template=template)
    _print_partial(figures, "from the store alone; nothing computed")


def _print_partial(figures: StoredFigures, why: str) -> None:
    print_processbench(err, figures.results)
    note = f"{figures.stored} of {figures.total} samples have every path ({why})"
    if figures.failed:
        note += f"; {figures.failed} failed (counted as wrong)"
    if figures.critic_missing:
        note += f"; critic row left out ({figures.critic_missing} of them not judged yet)"
    err.print(note, highlight=False)


@eval_app.command("bon")
def bon_command(
    run: RunDir = Path("runs/bon"),
    data: Annotated[
        Path, typer.Option(help="JSONL of {problem, answer, responses: [...]} or the math_cot format.")
    ] = bon_eval.DEFAULT_DATA,
    limit: Annotated[int | None, typer.Option(help="Only the first K problems.")] = None,
    responses: Annotated[
        int | None, typer.Option(help="Use the first K responses of each problem (default: all; budgets 1..K).")
    ] = None,
    n: Annotated[int, typer.Option("--n", "-n", help="Verification paths per step; step rewards average them.")] = 1,
    mode: VerifierMode = None,
    stop_at_first_error: StopAtFirstError = False,
    cascade: Cascade = None,
    cascade_band: CascadeBand = 0.2,
    adaptive_n: AdaptiveN = False,
    min_paths: MinPaths = 2,
    adaptive_batch: AdaptiveBatch = 1,
    adaptive_margin: AdaptiveMargin = 0.2,
    max_step_tokens: MaxStepTokens = 2048,
    temperature: Temperature = 0.6,
    seed: Seed = 0,
    model: Model = "smollm2-135m-instruct",
    engine: EngineName = "llamacpp",
    concurrency: Concurrency = 1,
    base_url: BaseUrl = None,
    served_model: ServedModel = None,
    tokenizer: Tokenizer = None,
    n_ctx: NCtx = None,
    threads: Threads = None,
    parallel: Parallel = 1,
    chat_template: ChatTemplateFile = None,
    reward: Reward = "paper",
    sandbox: Sandbox = "auto",
    retry_failed: RetryFailed = False,
    ray: RayAddress = None,
    replicas: Replicas = 1,
    gpus_per_replica: GpusPerReplica = 0.0,
) -> None:
    """Best-of-N: accuracy per budget of argmax and reward-weighted votes over last/min/mean/product scores,
    beside Pass@1, Maj@N and Pass@N.
    """
    with fail_on_errors():
        problems = bon_eval.load_bon(data, limit=limit, responses=responses)
        compute = compute_fields(
            mode, stop_at_first_error=stop_at_first_error, cascade=cascade, cascade_band=cascade_band,
            adaptive_n=adaptive_n, min_paths=min_paths, adaptive_batch=adaptive_batch, adaptive_margin=adaptive_margin,
        )
        config = VerifyConfig(
            n=n, max_step_tokens=max_step_tokens, temperature=temperature, seed=seed, reward=reward, sandbox=sandbox,
            **compute,
        )
        bon_eval.check_config(config)
        options = engine_options(
            engine, base_url=base_url, served_model=served_model, tokenizer=tokenizer, n_ctx=n_ctx, threads=threads,
            parallel=parallel,
        )
        template = read_template(chat_template)
        err.print(
            f"{len(problems)} problems x {len(problems[0].responses)} responses; results in {run}/", highlight=False
        )
        cluster = cluster_of(ray, replicas, gpus_per_replica, threads)
        spec = RoleSpec(engine, model, tuple(sorted(options.items())), template)
        units = solutions_for(config, concurrency)
        with RunStore(run) as store, verifier_models(cluster, {"verifier": spec}, units) as (engines, executor), \
                phase_bar() as bar:
            scorer = StoreScorer(store, engines["verifier"], config, chat_template=template, concurrency=concurrency,
                                 retry_failed=retry_failed, executor=executor)
            results = bon_eval.evaluate_bon(problems, scorer, on_progress=phase_updater(bar))
        print_bon(err, results)
        err.print(f"figures saved to {run / bon_eval.RESULT_FILE}", highlight=False)
