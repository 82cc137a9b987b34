"""Options shared by every command that runs a model, declared once (typer ``Annotated`` aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genprm.engines import available_engines
from genprm.errors import ConfigError
from genprm.protocol.prompts import Mode

Model = Annotated[
    str,
    typer.Option(
        "--model", "-m",
        help="A .gguf path, a built-in name (see `genprm models`), owner/repo:file.gguf on the Hub, or for "
        "--engine vllm a Hugging Face folder or repo.",
    ),
]
EngineName = Annotated[str, typer.Option("--engine", help=f"Inference engine: {', '.join(available_engines())}.")]
BaseUrl = Annotated[str | None, typer.Option(help="openai engine: the server, e.g. http://127.0.0.1:8000/v1.")]
ServedModel = Annotated[str | None, typer.Option(help="openai engine: the model name the server serves.")]
Tokenizer = Annotated[
    str | None, typer.Option(help="openai engine: a GGUF path or model name whose tokenizer and chat template to use.")
]
NCtx = Annotated[
    int | None,
    typer.Option(help="Context length in tokens (llama.cpp n_ctx, vLLM max_model_len; default: the model's own, "
                 "within a memory bound)."),
]
Threads = Annotated[int | None, typer.Option(help="llama.cpp CPU threads (default: all cores).")]
Parallel = Annotated[
    int,
    typer.Option(min=1, help="llama.cpp: generation requests decoded together in one batch (a KV cache each, "
                 "beside the main one). 1: one at a time. Needs paths in flight (--n, --concurrency)."),
]
ChatTemplateFile = Annotated[Path | None, typer.Option(help="A Jinja chat template file overriding the model's.")]
Concurrency = Annotated[
    int, typer.Option(help="Paths in flight at once across samples (for batching engines such as vLLM).")
]
VerifierMode = Annotated[
    Mode | None,
    typer.Option(help="full (default): analysis+code+execution; analyze; code-no-exec; direct. Not with --cascade."),
]
StopAtFirstError = Annotated[
    bool,
    typer.Option(
        "--stop-at-first-error",
        help="Stop a solution at its first wrong step (saves compute); paths of that step still running once "
        "the error is certain are cancelled (first_error is unchanged).",
    ),
]
Cascade = Annotated[
    str | None,
    typer.Option(
        metavar="MODES",
        help="Adaptive compute: comma-separated modes, cheapest first, e.g. direct,analyze,full. Each step "
        "runs the first; while its reward is within --cascade-band of --threshold it runs again in the next. "
        "Only the last may be full. Replaces --mode.",
    ),
]
CascadeBand = Annotated[float, typer.Option(help="--cascade: a reward r with |r - threshold| < band is uncertain.")]
AdaptiveN = Annotated[
    bool,
    typer.Option(
        "--adaptive-n",
        help="Sequential path sampling, --n at most: draw --min-paths paths, then --adaptive-batch more at a "
        "time, until the mean reward is --adaptive-margin or more from --threshold.",
    ),
]
MinPaths = Annotated[int, typer.Option(help="--adaptive-n: paths drawn before the first stopping check.")]
AdaptiveBatch = Annotated[int, typer.Option(help="--adaptive-n: paths drawn per further round.")]
AdaptiveMargin = Annotated[float, typer.Option(help="--adaptive-n: stop once |mean reward - threshold| reaches this.")]
MaxStepTokens = Annotated[int, typer.Option(help="Generated-token budget per step and path.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature.")]
Seed = Annotated[int, typer.Option(help="Base random seed.")]
Reward = Annotated[
    str,
    typer.Option(
        "--reward", metavar="paper|raw",
        help="paper (default): P(Yes)/(P(Yes)+P(No)) after the sampling transforms (temperature, top-k, top-p; a "
        "token outside the nucleus counts 0), as the paper's vLLM 0.7.1 measured it. raw: the model's own "
        "distribution. See docs/rewards.md.",
    ),
]
Sandbox = Annotated[
    str,
    typer.Option(
        "--sandbox", metavar="auto|bwrap|rlimits",
        help="Where model code runs: auto/bwrap (bubblewrap isolation; refuse without it) or rlimits (resource "
        "limits only: UNSAFE, the code can read what you can; see docs/sandbox.md).",
    ),
]
RetryFailed = Annotated[
    bool,
    typer.Option(
        "--retry-failed",
        help="Verify again the samples whose last attempt failed for a reason that would recur (a bug, a bad "
        "record); transient failures (a server or the sandbox down) are always retried.",
    ),
]
RunDir = Annotated[
    Path,
    typer.Option(
        "--run", help="Run folder: results go to RUN/store.sqlite; re-running with the same folder resumes and "
        "reuses what is there (larger --n or --limit computes only what is missing).",
    ),
]


_CLUSTER = "Ray cluster"
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray", "--ray-address", metavar="ADDRESS", rich_help_panel=_CLUSTER,
        help="Run on a Ray cluster: auto (RAY_ADDRESS, else the cluster `ray start` runs on this machine), "
        "HOST:PORT or ray://HOST:PORT, or local (a private Ray on this machine). The models load on the "
        "replicas, this process only hands out work and writes --run. Needs genprm\\[ray]; see docs/cluster.md.",
    ),
]
Replicas = Annotated[
    int,
    typer.Option(rich_help_panel=_CLUSTER, help="--ray: engine replicas, one Ray actor each with its own model and "
                 "sandbox pool; --concurrency applies to each."),
]
GpusPerReplica = Annotated[
    float,
    typer.Option(rich_help_panel=_CLUSTER, help="--ray: GPUs per replica (vLLM; above 1 the model is split tensor "
                 "parallel over them). 0 for CPU engines, which take --threads CPUs each (1 if not given)."),
]


def engine_options(
    engine: str, *, base_url: str | None, served_model: str | None, tokenizer: str | None,
    n_ctx: int | None, threads: int | None, parallel: int = 1,
) -> dict[str, Any]:
    """The engine-specific keyword arguments for :func:`genprm.engines.load_engine`."""
    if engine == "llamacpp":
        given = {"n_ctx": n_ctx, "n_threads": threads, "parallel": parallel if parallel != 1 else None}
        return {k: v for k, v in given.items() if v is not None}
    if engine == "vllm":
        return {} if n_ctx is None else {"max_model_len": n_ctx}
    if engine == "openai":
        if base_url is None:
            raise ConfigError("--engine", engine, "needs --base-url, the server's URL")
        chosen = {"base_url": base_url, "served_model": served_model, "tokenizer": tokenizer}
        return {k: v for k, v in chosen.items() if v is not None}
    return {}


def read_template(path: Path | None) -> str | None:
    return path.read_text(encoding="utf-8") if path else None


def compute_fields(
    mode: Mode | None,
    *,
    stop_at_first_error: bool,
    cascade: str | None,
    cascade_band: float,
    adaptive_n: bool,
    min_paths: int,
    adaptive_batch: int,
    adaptive_margin: float,
) -> dict[str, Any]:
    """The :class:`VerifyConfig` fields of the mode and the compute-saving options."""
    if mode is not None and cascade is not None:
        raise ConfigError("--cascade", cascade, f"replaces --mode {mode.value}: give one (the cascade lists its modes)")
    return {
        "mode": mode or Mode.FULL, "stop_at_first_error": stop_at_first_error, "cascade": cascade,
        "cascade_band": cascade_band, "adaptive_n": adaptive_n, "min_paths": min_paths,
        "adaptive_batch": adaptive_batch, "adaptive_margin": adaptive_margin,
    }
