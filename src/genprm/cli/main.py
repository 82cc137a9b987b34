"""``genprm``: verify math solutions step by step with a generative process reward model.

Each command parses options into the same config record the Python API takes and calls one public
function. User errors print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from genprm import __version__
from genprm.cli.common import describe, err, fail, fail_on_errors
from genprm.cli.evaluate import eval_app
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
    MinPaths,
    Model,
    NCtx,
    Parallel,
    RetryFailed,
    Reward,
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
from genprm.cli.refine import refine_command
from genprm.cli.report import report_command
from genprm.cli.serve import serve_command
from genprm.cli.summary import ComputeTotals, print_compute_total, print_solution, saves_compute
from genprm.cli.synth import synth_app
from genprm.cli.train import export_command, train_command
from genprm.engines.models import REGISTRY, model_dir
from genprm.errors import GenPRMError
from genprm.io import count_records
from genprm.protocol.chat import AssistantHeader
from genprm.verifier import Progress as VerifyProgress
from genprm.verifier import VerifyConfig, verify

app = typer.Typer(
    help="Generative process reward models: verify math solutions step by step (GenPRM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"genprm {__version__}")
        raise typer.Exit()


@app.callback()
def genprm_options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print genprm's version and exit.")] = False,
) -> None:
    """Options of ``genprm`` itself, before any command (the group's help text is the app's ``help``)."""


app.add_typer(eval_app, name="eval")
app.add_typer(synth_app, name="synth")
app.command("report")(report_command)
app.command("refine")(refine_command)
app.command("serve")(serve_command)
app.command("train")(train_command)
app.command("export")(export_command)


@app.command("verify")
def verify_command(
    input: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True,
        help="JSON or JSONL file of records with 'problem' (a string) and 'steps' (a list of strings).",
    ),
    model: Model = "smollm2-135m-instruct",
    out: Path | None = typer.Option(
        None, "--out", "-o",
        help="JSONL file to append results to; records already in it are skipped. Default: stdout.",
    ),
    n: int = typer.Option(1, "--n", "-n", help="Verification paths per step; rewards are averaged (Maj@N)."),
    mode: VerifierMode = None,
    paths: str = typer.Option(
        "independent", help="independent: own history and code namespace per path; shared: path 0's history."
    ),
    threshold: float = typer.Option(0.5, help="A step whose reward is below this is an error."),
    stop_at_first_error: StopAtFirstError = False,
    cascade: Cascade = None,
    cascade_band: CascadeBand = 0.2,
    adaptive_n: AdaptiveN = False,
    min_paths: MinPaths = 2,
    adaptive_batch: AdaptiveBatch = 1,
    adaptive_margin: AdaptiveMargin = 0.2,
    temperature: float = typer.Option(0.6, help="Sampling temperature."),
    top_p: float = typer.Option(0.95, help="Nucleus sampling mass."),
    top_k: int = typer.Option(20, help="Top-k sampling (0 disables)."),
    max_step_tokens: int = typer.Option(2048, help="Generated-token budget per step and path."),
    max_code_rounds: int = typer.Option(3, help="Code blocks executed per step before degrading to analysis."),
    first_turn: str = typer.Option("question", help="question: 'Question: {problem}\\n\\n{step}'; plain."),
    assistant_header: AssistantHeader = typer.Option(
        AssistantHeader.TEMPLATE, help="How a step's prompt ends: template (as trained), generation-prompt, none."
    ),
    reward: Reward = "paper",
    reward_temperature: float = typer.Option(1.0, help="--reward raw: temperature on the Yes/No logits."),
    seed: int = typer.Option(0, help="Base random seed."),
    code_timeout: float = typer.Option(5.0, help="Wall-clock seconds per code run in the sandbox."),
    sandbox: Sandbox = "auto",
    retry_failed: RetryFailed = False,
    concurrency: Concurrency = 1,
    engine: EngineName = "llamacpp",
    base_url: BaseUrl = None,
    served_model: ServedModel = None,
    tokenizer: Tokenizer = None,
    n_ctx: NCtx = None,
    threads: Threads = None,
    parallel: Parallel = 1,
    chat_template: ChatTemplateFile = None,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-step summary, only the progress bar."),
) -> None:
    """Verify each solution step by step and write one JSONL record per solution."""
    try:
        compute = compute_fields(
            mode, stop_at_first_error=stop_at_first_error, cascade=cascade, cascade_band=cascade_band,
            adaptive_n=adaptive_n, min_paths=min_paths, adaptive_batch=adaptive_batch, adaptive_margin=adaptive_margin,
        )
        config = VerifyConfig(
            n=n, paths=paths, threshold=threshold, temperature=temperature, top_p=top_p, top_k=top_k,
            max_step_tokens=max_step_tokens, max_code_rounds=max_code_rounds, first_turn=first_turn,
            assistant_header=assistant_header, reward=reward, reward_temperature=reward_temperature, seed=seed,
            code_timeout_s=code_timeout, sandbox=sandbox, **compute,
        )
    except (ValueError, GenPRMError) as exc:
        fail(describe(exc))
    with fail_on_errors():
        options = engine_options(
            engine, base_url=base_url, served_model=served_model, tokenizer=tokenizer, n_ctx=n_ctx, threads=threads,
            parallel=parallel,
        )
    template = read_template(chat_template)
    total = count_records(input)
    with Progress(
        TextColumn("[bold]verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"), console=err, transient=False,
    ) as bar:
        task = bar.add_task("verify", total=total, note="loading model")
        totals = ComputeTotals(top_mode=config.levels[-1].value)

        def report(event: VerifyProgress) -> None:
            notes = [f"{event.skipped} already done"] * bool(event.skipped)
            notes += [f"{event.failed} failed"] * bool(event.failed)
            bar.update(task, completed=event.done + event.skipped + event.failed, note=", ".join(notes))
            if event.failure is not None:
                label = event.failure.record.get("id", event.failure.key[:12])
                bar.console.print(f"[red]{label}: failed[/] ({event.failure.error}); recorded, going on",
                                  highlight=False)
            if event.result is None:
                return
            totals.add(event.result)
            if out is None:
                sys.stdout.write(json.dumps(event.result.to_dict(), ensure_ascii=False) + "\n")
                sys.stdout.flush()
            if not quiet:
                record = event.result.record
                label = record.get("id", f"record {event.done + event.skipped - 1}")
                print_solution(bar.console, event.result, f"{label}: {len(event.result.steps)} step(s)")

        try:
            verify(
                input, model=model, config=config, out=out, engine=engine, engine_options=options,
                chat_template=template, on_progress=report, concurrency=concurrency, retry_failed=retry_failed,
            )
        except GenPRMError as exc:
            fail(describe(exc))
        bar.update(task, note="done")
    if saves_compute(config.model_dump()):
        print_compute_total(err, totals)


@app.command("models")
def models_command() -> None:
    """List the models genprm knows by name and where it looks for them."""
    for entry in REGISTRY.values():
        err.print(f"[bold]{entry.name}[/]  {entry.description}", highlight=False)
    err.print(f"\nNamed models are looked for in {model_dir()} (set GENPRM_MODEL_DIR).", highlight=False)


if __name__ == "__main__":
    app()
