"""``genprm synth``: make GenPRM training data (the paper's synthesis pipeline), a thin layer over
:mod:`genprm.synthesis`. ``run`` does every stage; each stage is also a command of its own that reads
what the earlier ones stored in the run folder.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from genprm.cli.cluster import cluster_of, role_models
from genprm.cli.common import err, fail_on_errors, phase_bar, phase_updater
from genprm.cli.options import (
    GpusPerReplica,
    NCtx,
    Parallel,
    RayAddress,
    Replicas,
    RunDir,
    Seed,
    Threads,
    engine_options,
    read_template,
)
from genprm.errors import ConfigError
from genprm.synthesis.consensus import VOTES, FilterSettings
from genprm.synthesis.conversation import ExportSettings
from genprm.synthesis.critique import AGREEMENT_RULES, CritiqueSettings
from genprm.synthesis.labels import METHODS, LabelSettings
from genprm.synthesis.pipeline import RoleSpec, SynthSettings, run_pipeline
from genprm.synthesis.problems import read_problems
from genprm.synthesis.rollouts import MC1_SOURCES, RolloutSettings
from genprm.synthesis.solutions import SolutionSettings
from genprm.synthesis.stages import StageReport, run_labels, run_rollouts, run_solutions
from genprm.synthesis.stats import funnel, funnel_values
from genprm.synthesis.store import SynthStore
from genprm.synthesis.teacher_stages import run_critiques, run_export, run_filter

synth_app = typer.Typer(
    help="Make GenPRM training data: step-forced solutions, Monte-Carlo rollouts, RPE labels, a code-executing "
    "teacher, the consensus filter and per-step conversations (see docs/synthesis.md).",
    no_args_is_help=True,
)
DEFAULT_OUT = "conversations.jsonl"


# -- options, declared once ------------------------------------------------------------------------


def _role(role: str, name: str, help: str) -> Any:
    return typer.Option(f"--{role}-{name}", help=help, rich_help_panel=f"{role} model")


_MODEL = "A .gguf path, a built-in name, owner/repo:file.gguf, or for vllm a Hugging Face folder."
PolicyModel = Annotated[str | None, _role("policy", "model", "The policy that writes solutions. " + _MODEL)]
PolicyEngine = Annotated[str, _role("policy", "engine", "The policy's engine: llamacpp, openai, vllm.")]
PolicyBaseUrl = Annotated[str | None, _role("policy", "base-url", "openai engine: the policy's server.")]
PolicyServed = Annotated[str | None, _role("policy", "served-model", "openai engine: the served name.")]
PolicyTokenizer = Annotated[str | None, _role("policy", "tokenizer", "openai engine: tokenizer/template GGUF.")]
PolicyTemplate = Annotated[Path | None, _role("policy", "chat-template", "A Jinja chat template file.")]
CompleterModel = Annotated[str | None, _role("completer", "model", "The rollout model (default: the policy).")]
CompleterEngine = Annotated[str | None, _role("completer", "engine", "Its engine (default: the policy's).")]
CompleterBaseUrl = Annotated[str | None, _role("completer", "base-url", "openai engine: its server.")]
CompleterServed = Annotated[str | None, _role("completer", "served-model", "openai engine: the served name.")]
CompleterTokenizer = Annotated[str | None, _role("completer", "tokenizer", "openai engine: tokenizer GGUF.")]
CompleterTemplate = Annotated[Path | None, _role("completer", "chat-template", "A Jinja chat template file.")]
TeacherModel = Annotated[str | None, _role("teacher", "model", "The teacher that critiques with code. " + _MODEL)]
TeacherEngine = Annotated[str | None, _role("teacher", "engine", "Its engine (default: the policy's).")]
TeacherBaseUrl = Annotated[str | None, _role("teacher", "base-url", "openai engine: its server.")]
TeacherServed = Annotated[str | None, _role("teacher", "served-model", "openai engine: the served name.")]
TeacherTokenizer = Annotated[str | None, _role("teacher", "tokenizer", "openai engine: tokenizer GGUF.")]
TeacherTemplate = Annotated[Path | None, _role("teacher", "chat-template", "A Jinja chat template file.")]

Problems = Annotated[Path | None, typer.Option(
    help="JSONL problems: {problem|question, answer} (GSM8K's '#### 18' is read) or MATH-style \\boxed{} in "
    "'solution'. Records without a gradable answer are skipped and counted.")]
Limit = Annotated[int | None, typer.Option(help="Only the first K records of --problems.")]
Concurrency = Annotated[int, typer.Option(
    help="Units (a problem's draws, a prefix's rollouts, a critique) in flight at once on a batching engine "
    "(vLLM, a server); llama.cpp runs one request at a time, so there 2 (1 for critiques).")]
NumPaths = Annotated[int, typer.Option(help="Solutions kept per problem, half correct and half wrong.")]
NumTry = Annotated[int, typer.Option(help="Extra rounds of --draws-per-try draws while a half is short.")]
FirstDraws = Annotated[int, typer.Option(help="Draws in a problem's first round (the paper: 2 x 16).")]
DrawsPerTry = Annotated[int, typer.Option(help="Draws per extra round.")]
SystemPrompt = Annotated[str | None, typer.Option(
    help="The policy's system prompt (default: the released chain-of-thought instruction; '' for none).")]
PolicyMaxTokens = Annotated[int, typer.Option(help="Token budget of one policy solution.")]
PolicyTemperature = Annotated[float, typer.Option(help="Policy sampling temperature.")]
Ks = Annotated[str, typer.Option("--k", help="Dynamic K: rollouts per prefix when MC(s_1) is below, between "
                                 "and above --k-edges, e.g. 128,64,32 (one number: K for all).")]
KEdges = Annotated[str, typer.Option(help="The two MC(s_1) edges of dynamic K.")]
Mc1Source = Annotated[str, typer.Option(help=f"MC(s_1) from: {', '.join(MC1_SOURCES)} (completer: rollouts "
                                        "of the empty prefix).")]
AllSteps = Annotated[bool, typer.Option("--all-steps", help="Roll out every step, also after one scoring 0 "
                                        "(zero propagation makes those 0 anyway).")]
CompleterMaxTokens = Annotated[int, typer.Option(help="Token budget of one rollout.")]
CompleterTemperature = Annotated[float, typer.Option(help="Rollout sampling temperature.")]
LabelMethod = Annotated[str, typer.Option(help=f"Step labels: {', '.join(METHODS)} (ratio: the paper's RPE).")]
LabelThreshold = Annotated[float, typer.Option(help="ratio: epsilon (0.8); difference: the drop allowed.")]
Critiques = Annotated[int, typer.Option(help="Teacher critiques per solution (the released code: 16).")]
Vote = Annotated[str, typer.Option(help=f"How N critiques make the teacher's index: {', '.join(VOTES)}.")]
TeacherMaxTokens = Annotated[int, typer.Option(help="Generated-token budget of one critique.")]
TeacherTemperature = Annotated[float, typer.Option(help="Teacher sampling temperature.")]
MaxCodeRounds = Annotated[int, typer.Option(help="Code blocks run per critique.")]
IndexSamples = Annotated[int, typer.Option(help="Completions drawn to read a critique's earliest-error index.")]
Agreement = Annotated[str, typer.Option(help=f"Which index samples must agree: {', '.join(AGREEMENT_RULES)}.")]
CodeTimeout = Annotated[float, typer.Option(help="Wall-clock seconds per code run in the sandbox.")]
Out = Annotated[Path | None, typer.Option(help=f"The conversations file, .parquet or .jsonl (default: "
                                          f"RUN/{DEFAULT_OUT}).")]
AfterFirstError = Annotated[str, typer.Option(help="end: a conversation ends after its first No turn; keep: "
                                              "every step gets a turn.")]
KeepStepPrefixes = Annotated[bool, typer.Option("--keep-step-prefixes", help="Keep 'Step k: ' in user turns.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the funnel as JSON on stdout ({section: {what: value}}, "
                                      "plain numbers) instead of the Markdown table on stderr, for scripts.")]
FirstTurn = Annotated[str, typer.Option(help="question: 'Question: {problem}\\n\\n{step}'; plain.")]
RunFolder = Annotated[Path, typer.Argument(help="The synthesis run folder (holding store.sqlite).")]


# -- building settings and roles -------------------------------------------------------------------


def _numbers(text: str, kind: type, count: int, name: str) -> tuple[Any, ...]:
    try:
        values = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(name, text, f"expected {count} comma-separated numbers") from None
    if len(values) == 1 and count > 1:
        values = values * count
    if len(values) != count:
        raise ConfigError(name, text, f"expected {count} comma-separated numbers")
    return values


def solution_settings(num_paths: int, num_try: int, first_draws: int, draws_per_try: int, system_prompt: str | None,
                      max_tokens: int, temperature: float, seed: int) -> SolutionSettings:
    settings = SolutionSettings(num_paths=num_paths, num_try=num_try, first_draws=first_draws,
                                draws_per_try=draws_per_try, max_tokens=max_tokens, temperature=temperature, seed=seed)
    return settings if system_prompt is None else replace(settings, system_prompt=system_prompt)


def rollout_settings(k: str, k_edges: str, mc1_source: str, all_steps: bool, max_tokens: int, temperature: float,
                     seed: int) -> RolloutSettings:
    return RolloutSettings(ks=_numbers(k, int, 3, "--k"), k_edges=_numbers(k_edges, float, 2, "--k-edges"),
                           mc1_source=mc1_source,  # type: ignore[arg-type]  # checked by RolloutSettings
                           skip_after_zero=not all_steps, max_tokens=max_tokens, temperature=temperature, seed=seed)


def critique_settings(max_tokens: int, temperature: float, max_code_rounds: int, index_samples: int, agreement: str,
                      code_timeout: float) -> CritiqueSettings:
    return CritiqueSettings(max_tokens=max_tokens, temperature=temperature, max_code_rounds=max_code_rounds,
                            index_samples=index_samples, agreement=agreement, code_timeout_s=code_timeout)


def export_settings(after_first_error: str, keep_step_prefixes: bool, first_turn: str) -> ExportSettings:
    return ExportSettings(after_first_error=after_first_error,  # type: ignore[arg-type]  # checked there
                          keep_step_prefixes=keep_step_prefixes, first_turn=first_turn)


def role_spec(role: str, model: str | None, engine: str, base_url: str | None, served: str | None,
              tokenizer: str | None, template: Path | None, n_ctx: int | None, threads: int | None,
              parallel: int = 1) -> RoleSpec:
    if model is None:
        raise ConfigError(f"--{role}-model", None, f"this stage needs the {role} model")
    options = engine_options(engine, base_url=base_url, served_model=served, tokenizer=tokenizer, n_ctx=n_ctx,
                             threads=threads, parallel=parallel)
    return RoleSpec(engine, model, tuple(sorted(options.items())), read_template(template))


def _report(reports: list[StageReport]) -> None:
    for report in reports:
        notes = "; ".join(f"{k}: {v}" for k, v in report.notes.items())
        err.print(f"{report.stage}: {report.computed} computed, {report.reused} already stored, "
                  f"{report.failed} failed" + (f"; {notes}" if notes else ""), highlight=False)


def _records(problems: Path | None, limit: int | None) -> list[Any]:
    if problems is None:
        raise ConfigError("--problems", None, "needs a JSONL file of problems")
    return list(read_problems(problems, limit))


# -- commands --------------------------------------------------------------------------------------


@synth_app.command("run")
def run_command(
    run: RunDir = Path("runs/synth"), problems: Problems = None, limit: Limit = None,
    policy_model: PolicyModel = None, policy_engine: PolicyEngine = "llamacpp", policy_base_url: PolicyBaseUrl = None,
    policy_served_model: PolicyServed = None, policy_tokenizer: PolicyTokenizer = None,
    policy_chat_template: PolicyTemplate = None,
    completer_model: CompleterModel = None, completer_engine: CompleterEngine = None,
    completer_base_url: CompleterBaseUrl = None, completer_served_model: CompleterServed = None,
    completer_tokenizer: CompleterTokenizer = None, completer_chat_template: CompleterTemplate = None,
    teacher_model: TeacherModel = None, teacher_engine: TeacherEngine = None, teacher_base_url: TeacherBaseUrl = None,
    teacher_served_model: TeacherServed = None, teacher_tokenizer: TeacherTokenizer = None,
    teacher_chat_template: TeacherTemplate = None,
    num_paths: NumPaths = 16, num_try: NumTry = 126, first_draws: FirstDraws = 32, draws_per_try: DrawsPerTry = 16,
    system_prompt: SystemPrompt = None, policy_max_tokens: PolicyMaxTokens = 2048,
    policy_temperature: PolicyTemperature = 0.7,
    k: Ks = "128,64,32", k_edges: KEdges = "0.1,0.9", mc1_source: Mc1Source = "policy", all_steps: AllSteps = False,
    completer_max_tokens: CompleterMaxTokens = 2048, completer_temperature: CompleterTemperature = 0.7,
    label_method: LabelMethod = "ratio", label_threshold: LabelThreshold = 0.8,
    critiques: Critiques = 1, vote: Vote = "majority", teacher_max_tokens: TeacherMaxTokens = 8192,
    teacher_temperature: TeacherTemperature = 0.6, max_code_rounds: MaxCodeRounds = 64,
    index_samples: IndexSamples = 4, agreement: Agreement = "majority", code_timeout: CodeTimeout = 5.0,
    out: Out = None, after_first_error: AfterFirstError = "end", keep_step_prefixes: KeepStepPrefixes = False,
    first_turn: FirstTurn = "question",
    concurrency: Concurrency = 8, n_ctx: NCtx = None, threads: Threads = None, parallel: Parallel = 1,
    seed: Seed = 0,
    ray: RayAddress = None, replicas: Replicas = 1, gpus_per_replica: GpusPerReplica = 0.0,
) -> None:
    """All six stages in order: solutions, rollouts, label, critique, filter, export (resumable)."""
    with fail_on_errors():
        settings = SynthSettings(
            solutions=solution_settings(num_paths, num_try, first_draws, draws_per_try, system_prompt,
                                        policy_max_tokens, policy_temperature, seed),
            rollouts=rollout_settings(k, k_edges, mc1_source, all_steps, completer_max_tokens, completer_temperature,
                                      seed),
            labels=LabelSettings(method=label_method, threshold=label_threshold),  # type: ignore[arg-type]
            critique=critique_settings(teacher_max_tokens, teacher_temperature, max_code_rounds, index_samples,
                                       agreement, code_timeout),
            filter=FilterSettings(critiques=critiques, vote=vote),  # type: ignore[arg-type]  # checked there
            export=export_settings(after_first_error, keep_step_prefixes, first_turn),
            seed=seed,
        )
        policy = role_spec("policy", policy_model, policy_engine, policy_base_url, policy_served_model,
                           policy_tokenizer, policy_chat_template, n_ctx, threads, parallel)
        completer = role_spec("completer", completer_model or policy_model, completer_engine or policy_engine,
                              completer_base_url or policy_base_url, completer_served_model or policy_served_model,
                              completer_tokenizer or policy_tokenizer, completer_chat_template or policy_chat_template,
                              n_ctx, threads, parallel)
        teacher = role_spec("teacher", teacher_model, teacher_engine or policy_engine, teacher_base_url,
                            teacher_served_model, teacher_tokenizer, teacher_chat_template, n_ctx, threads, parallel)
        records = _records(problems, limit)
        reports: list[StageReport] = []
        specs = {"policy": policy, "completer": completer, "teacher": teacher}
        cluster = cluster_of(ray, replicas, gpus_per_replica, threads)
        with SynthStore(run) as store, role_models(cluster, specs, concurrency) as (roles, executor_for), \
                phase_bar() as bar:
            _remember(store, specs)
            stages = run_pipeline(store, records, roles, settings, concurrency, out or run / DEFAULT_OUT,
                                  phase_updater(bar), executor_for)
            for report in stages:
                reports.append(report)
        _report(reports)
        _print_funnel(run)


@synth_app.command("solutions")
def solutions_command(
    run: RunDir = Path("runs/synth"), problems: Problems = None, limit: Limit = None,
    policy_model: PolicyModel = None, policy_engine: PolicyEngine = "llamacpp", policy_base_url: PolicyBaseUrl = None,
    policy_served_model: PolicyServed = None, policy_tokenizer: PolicyTokenizer = None,
    policy_chat_template: PolicyTemplate = None,
    num_paths: NumPaths = 16, num_try: NumTry = 126, first_draws: FirstDraws = 32, draws_per_try: DrawsPerTry = 16,
    system_prompt: SystemPrompt = None, policy_max_tokens: PolicyMaxTokens = 2048,
    policy_temperature: PolicyTemperature = 0.7,
    concurrency: Concurrency = 8, n_ctx: NCtx = None, threads: Threads = None, parallel: Parallel = 1,
    seed: Seed = 0,
    ray: RayAddress = None, replicas: Replicas = 1, gpus_per_replica: GpusPerReplica = 0.0,
) -> None:
    """Stage 1: step-forced policy solutions, balanced half correct and half wrong; MC(s_1) per problem."""
    with fail_on_errors():
        settings = solution_settings(num_paths, num_try, first_draws, draws_per_try, system_prompt, policy_max_tokens,
                                     policy_temperature, seed)
        spec = role_spec("policy", policy_model, policy_engine, policy_base_url, policy_served_model,
                         policy_tokenizer, policy_chat_template, n_ctx, threads, parallel)
        records = _records(problems, limit)
        cluster = cluster_of(ray, replicas, gpus_per_replica, threads)
        with SynthStore(run) as store, role_models(cluster, {"policy": spec}, concurrency) as (roles, executor_for), \
                phase_bar() as bar:
            _remember(store, {"policy": spec})
            policy = roles.chat("policy")
            report = run_solutions(store, records, policy, settings, executor_for(policy, concurrency),
                                   phase_updater(bar))
        _report([report])


@synth_app.command("rollouts")
def rollouts_command(
    run: RunDir = Path("runs/synth"),
    completer_model: CompleterModel = None, completer_engine: CompleterEngine = None,
    completer_base_url: CompleterBaseUrl = None, completer_served_model: CompleterServed = None,
    completer_tokenizer: CompleterTokenizer = None, completer_chat_template: CompleterTemplate = None,
    k: Ks = "128,64,32", k_edges: KEdges = "0.1,0.9", mc1_source: Mc1Source = "policy", all_steps: AllSteps = False,
    completer_max_tokens: CompleterMaxTokens = 2048, completer_temperature: CompleterTemperature = 0.7,
    concurrency: Concurrency = 8, n_ctx: NCtx = None, threads: Threads = None, parallel: Parallel = 1,
    seed: Seed = 0,
    ray: RayAddress = None, replicas: Replicas = 1, gpus_per_replica: GpusPerReplica = 0.0,
) -> None:
    """Stage 2: Monte-Carlo rollouts of every kept solution's prefixes (K by dynamic K)."""
    with fail_on_errors():
        settings = rollout_settings(k, k_edges, mc1_source, all_steps, completer_max_tokens, completer_temperature,
                                    seed)
        with SynthStore(run) as store:
            policy = _remembered(store, "policy")
            spec = role_spec("completer", completer_model or policy.get("model"),
                             completer_engine or policy.get("engine", "llamacpp"), completer_base_url,
                             completer_served_model, completer_tokenizer, completer_chat_template, n_ctx, threads,
                             parallel)
            cluster = cluster_of(ray, replicas, gpus_per_replica, threads)
            with role_models(cluster, {"completer": spec}, concurrency) as (roles, executor_for), phase_bar() as bar:
                _remember(store, {"completer": spec})
                completer = roles.chat("completer")
                report = run_rollouts(store, completer, settings, executor_for(completer, concurrency),
                                      phase_updater(bar))
        _report([report])


@synth_app.command("label")
def label_command(
    run: RunFolder, label_method: LabelMethod = "ratio", label_threshold: LabelThreshold = 0.8,
) -> None:
    """Step labels from the stored MC scores (RPE by default; no model)."""
    with fail_on_errors(), SynthStore(run) as store:
        report = run_labels(store, LabelSettings(method=label_method, threshold=label_threshold))  # type: ignore[arg-type]
        _report([report])


@synth_app.command("critique")
def critique_command(
    run: RunDir = Path("runs/synth"),
    teacher_model: TeacherModel = None, teacher_engine: TeacherEngine = None, teacher_base_url: TeacherBaseUrl = None,
    teacher_served_model: TeacherServed = None, teacher_tokenizer: TeacherTokenizer = None,
    teacher_chat_template: TeacherTemplate = None,
    critiques: Critiques = 1, teacher_max_tokens: TeacherMaxTokens = 8192,
    teacher_temperature: TeacherTemperature = 0.6, max_code_rounds: MaxCodeRounds = 64,
    index_samples: IndexSamples = 4, agreement: Agreement = "majority", code_timeout: CodeTimeout = 5.0,
    concurrency: Concurrency = 8, n_ctx: NCtx = None, threads: Threads = None, parallel: Parallel = 1,
    seed: Seed = 0,
    ray: RayAddress = None, replicas: Replicas = 1, gpus_per_replica: GpusPerReplica = 0.0,
) -> None:
    """Stage 3: the teacher critiques every labelled solution with executed code (--critiques N each)."""
    with fail_on_errors():
        settings = critique_settings(teacher_max_tokens, teacher_temperature, max_code_rounds, index_samples,
                                     agreement, code_timeout)
        spec = role_spec("teacher", teacher_model, teacher_engine or "llamacpp", teacher_base_url,
                         teacher_served_model, teacher_tokenizer, teacher_chat_template, n_ctx, threads,
                         parallel)
        cluster = cluster_of(ray, replicas, gpus_per_replica, threads)
        with SynthStore(run) as store, role_models(cluster, {"teacher": spec}, concurrency) as (roles, executor_for), \
                phase_bar() as bar:
            _remember(store, {"teacher": spec})
            teacher = roles.chat("teacher")
            report = run_critiques(store, teacher, settings, critiques,
                                   executor_for(teacher, concurrency, conversation=True), seed=seed,
                                   on_progress=phase_updater(bar))
        _report([report])


@synth_app.command("filter")
def filter_command(run: RunFolder, critiques: Critiques = 1, vote: Vote = "majority") -> None:
    """The consensus filter: keep solutions whose teacher index agrees with their labels (no model)."""
    with fail_on_errors(), SynthStore(run) as store:
        _report([run_filter(store, FilterSettings(critiques=critiques, vote=vote))])  # type: ignore[arg-type]


@synth_app.command("export")
def export_command(
    run: RunFolder, out: Out = None, after_first_error: AfterFirstError = "end",
    keep_step_prefixes: KeepStepPrefixes = False, first_turn: FirstTurn = "question",
) -> None:
    """Write one training conversation per kept solution (GenPRM-MATH-Data's shape), .parquet or .jsonl."""
    with fail_on_errors(), SynthStore(run) as store:
        target = out or run / DEFAULT_OUT
        report = run_export(store, export_settings(after_first_error, keep_step_prefixes, first_turn), target)
        _report([report])
        err.print(f"{report.notes['written']} conversations written to {target}", highlight=False)


@synth_app.command("stats")
def stats_command(run: RunFolder, as_json: AsJson = False) -> None:
    """The funnel: problems, solutions, rollouts, labels, critiques, consensus and conversations."""
    with fail_on_errors():
        _print_funnel(run, as_json)


def _remember(store: SynthStore, specs: dict[str, RoleSpec]) -> None:
    """Keep each role's model and engine, so a later stage alone can default to them."""
    for role, spec in specs.items():
        store.runs.set_meta(f"synth.role.{role}", {"model": spec.model, "engine": spec.engine})


def _remembered(store: SynthStore, role: str) -> dict[str, str]:
    value = store.runs.meta(f"synth.role.{role}")
    return value if isinstance(value, dict) else {}


def _print_funnel(run: Path, as_json: bool = False) -> None:
    """The funnel as a Markdown table (readable in a log, ready for a README) or as JSON for scripts."""
    if not (run / "store.sqlite").exists():
        raise ConfigError("run", str(run), "holds no synthesis store")
    with SynthStore(run) as store:
        sections = funnel(store)
    if as_json:
        typer.echo(json.dumps(funnel_values(sections), indent=2))
        return
    lines = [f"Synthesis funnel — {run}", "", "| stage | what | ours | paper |", "|---|---|---|---|"]
    for section in sections:
        for i, (what, ours, paper) in enumerate(section.rows):
            lines.append(f"| {section.title if i == 0 else ''} | {what} | {ours} | {paper} |")
    err.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
