"""What full ProcessBench at Maj@8 costs on one GPU: GenPRM-7B's shape, random weights, no download.

    python bench/gpu_estimate.py [--preset qwen2-7b|tiny] [--samples 64] [--n 8] [--step-tokens 345]
        [--concurrency 256] [--rows scheduler,ceiling] [--out gpu-estimate.json]

Runs in vLLM's environment. It writes a Hugging Face folder holding only a ``config.json``: a Qwen2
config built in code (``--preset qwen2-7b``: GenPRM-7B's architecture, that of Qwen2-7B; ``tiny``: the
same family shrunk to 2 layers, for testing the script on a CPU) and starts vLLM on it with
``load_format="dummy"`` (random weights, nothing read from disk) and the tokenizer of ``--tokenizer``
(the Qwen2 tokenizer family, Qwen2.5-Coder-0.5B's by default; its chat template renders the prompts).

Random weights never write a stop string, so every path-step spends its whole token budget:
``--step-tokens`` (default 345, the paper's measured generated tokens per step on MATH) caps each
step's turn, forced text included, as ``max_step_tokens`` does. The prompts are those of real
ProcessBench samples: ``--samples`` K spread evenly over the 3,400 records of the four subsets in
file order, so the slice's step counts and prompt lengths are those of the whole benchmark.

Two rows, from ``bench/throughput.py``: ``scheduler`` (genprm's scheduler on the slice, N paths per
step, every step verified, prefix caching on) and ``ceiling`` (one batch of ``--ceiling-batch``
first-step prompts through plain ``vllm.LLM.generate``). Then the estimate: the path-steps of full
ProcessBench at Maj@N (N times the steps of all 3,400 samples, counted from the data files) times the
slice's generated tokens per path-step, divided by the scheduler's tokens/s, is the wall time of the
full run on this machine; the same tokens at the ceiling's tokens/s is what full batches
throughout would give.

``--out`` is rewritten after every finished solution (and holds the estimate at the end), so a run
cut short still leaves the scheduler's totals so far; a re-run with the same ``--out`` and settings
keeps rows already complete (``--rerun`` runs them again).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import genprm  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench scripts

import throughput  # noqa: E402  (bench/throughput.py: rows, measuring, the table)
from genprm.evaluation.processbench import SUBSETS, load_processbench  # noqa: E402
from genprm.io import SolutionInput, write_json_atomic  # noqa: E402
from genprm.protocol import prompts as P  # noqa: E402
from genprm.verifier import VerifyConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "processbench"
DEFAULT_TOKENIZER = Path.home() / ".cache" / "genprm" / "hf" / "qwen2.5-coder-0.5b-instruct"
PAPER_STEP_TOKENS = 345
"""Generated tokens per step the GenPRM paper measured on MATH."""
ROWS = ("scheduler", "ceiling")

QWEN2_7B = {
    "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "intermediate_size": 18944, "vocab_size": 152064, "rope_theta": 1e6, "max_position_embeddings": 32768,
    "tie_word_embeddings": False, "rms_norm_eps": 1e-6,
}
PRESETS: dict[str, dict[str, Any]] = {
    "qwen2-7b": QWEN2_7B,
    # 64-wide heads (vLLM's CPU attention takes 32, 64, 80, ... only) and Qwen2-7B's vocabulary
    "tiny": {**QWEN2_7B, "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 512},
}


def write_random_model(folder: Path, preset: str, tokenizer: Path) -> Path:
    """A Hugging Face folder with a Qwen2 ``config.json`` only: vLLM's dummy loader needs no weights.

    The config comes from ``transformers.Qwen2Config`` of the running environment, so it has every
    field that environment's vLLM expects; special-token ids are those of the tokenizer's model.
    """
    from transformers import Qwen2Config

    fields = dict(PRESETS[preset])
    model_config = tokenizer / "config.json"  # the tokenizer's model, if its folder has one
    ids = json.loads(model_config.read_text(encoding="utf-8")) if model_config.is_file() else {}
    fields.update({k: ids[k] for k in ("bos_token_id", "eos_token_id") if k in ids})
    config = Qwen2Config(architectures=["Qwen2ForCausalLM"], **fields)  # dtype: the engine says bfloat16
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    return folder


@dataclass(frozen=True)
class Workload:
    """What a run over some ProcessBench samples verifies."""

    samples: int
    steps: int
    n: int

    @property
    def path_steps(self) -> int:
        return self.steps * self.n


def workload(items: list[SolutionInput], n: int) -> Workload:
    return Workload(len(items), sum(len(item.steps) for item in items), n)


def spread(items: list[SolutionInput], k: int) -> list[SolutionInput]:
    """K records evenly spaced over the list (all four subsets, in file order), the first included."""
    if k >= len(items):
        return list(items)
    return [items[i * len(items) // k] for i in range(k)]


def estimate(rows: dict[str, dict[str, Any]], full: Workload) -> dict[str, Any]:
    """Full ProcessBench's wall time at the scheduler's and at the ceiling's measured tokens/s.

    Works on an unfinished scheduler row too (its totals so far), and says so.
    """
    sched, ceiling = rows.get("scheduler", {}), rows.get("ceiling", {})
    out: dict[str, Any] = {"full_samples": full.samples, "full_steps": full.steps, "n": full.n,
                           "full_path_steps": full.path_steps}
    path_steps = sum(s.get("path_steps", 0) for s in sched.get("solutions", []))
    if not path_steps or not sched.get("wall_s"):
        return out
    per_path_step = sched["completion_tokens"] / path_steps
    tokens = full.path_steps * per_path_step
    speed = sched["completion_tokens"] / sched["wall_s"]
    out.update(
        scheduler_complete=bool(sched.get("complete")), slice_solutions=len(sched["solutions"]),
        slice_path_steps=path_steps, generated_per_path_step=per_path_step, full_generated_tokens=tokens,
        scheduler_tok_s=speed, full_wall_s=tokens / speed,
    )
    if ceiling.get("complete") and ceiling.get("wall_s"):
        ceiling_speed = ceiling["completion_tokens"] / ceiling["wall_s"]
        out.update(ceiling_tok_s=ceiling_speed, share_of_ceiling=speed / ceiling_speed,
                   full_wall_s_at_ceiling=tokens / ceiling_speed)
    return out


def hours(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 3600:.2f} h ({seconds / 60:.0f} min)"


def estimate_table(est: dict[str, Any]) -> str:
    """The estimate as a two-column markdown table."""
    if "full_wall_s" not in est:
        return "no scheduler solution finished: no estimate"
    note = "" if est["scheduler_complete"] else f" (from {est['slice_solutions']} finished solutions)"
    share = est.get("share_of_ceiling")
    lines = [
        f"| full ProcessBench at Maj@{est['n']} | value |",
        "|---|---|",
        f"| samples, steps, path-steps | {est['full_samples']}, {est['full_steps']}, {est['full_path_steps']} |",
        f"| generated tokens per path-step (measured on the slice) | {est['generated_per_path_step']:.1f} |",
        f"| generated tokens in all | {est['full_generated_tokens'] / 1e6:.1f}M |",
        f"| scheduler tok/s{note} | {est['scheduler_tok_s']:.1f} |",
        f"| share of the ceiling's tok/s | {'–' if share is None else format(share, '.0%')} |",
        f"| **estimated wall time, one device** | **{hours(est['full_wall_s'])}** |",
        f"| at the ceiling's tok/s (full batches throughout) | {hours(est.get('full_wall_s_at_ceiling'))} |",
    ]
    return "\n".join(lines)


def forced_tokens(tokenizer: Path) -> int:
    """Tokens of the forced analysis lead-in, which the step budget counts but the model does not write."""
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    return len(encoder.encode(P.analyze_prefix(1), add_special_tokens=False).ids)


def print_tables(data: dict[str, Any], full: Workload) -> dict[str, Any]:
    """Both tables from ``--out``'s contents; returns the estimate."""
    rows = data["rows"]
    est = estimate(rows, full)
    print(throughput.table(rows, [r for r in ROWS if r in rows]))
    print()
    print(estimate_table(est))
    return est


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2-7b", help="model shape (random weights)")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="a Qwen2-family HF tokenizer folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the four ProcessBench JSON files")
    parser.add_argument("--samples", type=int, default=64, help="K samples, spread over all 3,400")
    parser.add_argument("--n", type=int, default=8, help="paths per step (Maj@N)")
    parser.add_argument("--step-tokens", type=int, default=PAPER_STEP_TOKENS, help="token budget of a step's turn")
    parser.add_argument("--mode", default="analyze", choices=("analyze", "full"),
                        help="analyze (default) needs no sandbox; with random weights no path reaches code, "
                        "so full generates the same tokens")
    parser.add_argument("--concurrency", type=int, default=256, help="paths in flight")
    parser.add_argument("--ceiling-batch", type=int, help="prompts in the ceiling's one batch (default: --concurrency)")
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma list of rows to run")
    parser.add_argument("--model-dir", type=Path, help="where to write the config folder (default: next to --out, "
                        "or runs/gpu-estimate-model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON file of the raw numbers, rewritten as rows progress")
    parser.add_argument("--rerun", action="store_true", help="run the chosen rows again even if --out has them")
    parser.add_argument("--estimate-only", action="store_true",
                        help="print the tables from --out (a finished or cut-short run) without running anything")
    args = parser.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}: choose from {', '.join(ROWS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    everything = [s.item for s in load_processbench(args.data, SUBSETS)]
    if args.estimate_only:
        if args.out is None or not args.out.is_file():
            print("--estimate-only reads --out: give the JSON file of a run", file=sys.stderr)
            return 2
        data = json.loads(args.out.read_text(encoding="utf-8"))
        print_tables(data, workload(everything, int(data["settings"]["n"])))
        return 0
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for the tables
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("bench/gpu_estimate.py needs vLLM: pip install 'genprm[vllm]' (GPU) or scripts/setup-vllm (CPU)",
              file=sys.stderr)
        return 2
    from genprm.engines.vllm_engine import VLLMEngine

    if not (args.tokenizer / "tokenizer.json").is_file():
        print(f"no tokenizer at {args.tokenizer} (--tokenizer; bash scripts/setup-vllm makes one)", file=sys.stderr)
        return 2
    samples = spread(everything, args.samples)
    full, part = workload(everything, args.n), workload(samples, args.n)
    # the turn's budget counts the forced lead-in: add it, so the model itself writes --step-tokens tokens
    budget = args.step_tokens + forced_tokens(args.tokenizer)
    config = VerifyConfig(n=args.n, mode=args.mode, max_step_tokens=budget, seed=args.seed)
    ceiling_config = config.model_copy(update={"max_step_tokens": args.step_tokens})  # its prompts hold the lead-in
    batch = args.ceiling_batch or args.concurrency
    settings = {
        "preset": args.preset, "tokenizer": str(args.tokenizer), "samples": [s.record.get("id") for s in samples],
        "n": args.n, "step_tokens": args.step_tokens, "max_step_tokens": budget, "mode": args.mode,
        "concurrency": args.concurrency, "ceiling_batch": batch, "max_model_len": args.max_model_len,
        "seed": args.seed, "cpus": os.cpu_count(), "vllm": vllm.__version__,
    }
    results = throughput.Results(args.out, settings)
    print(f"slice: {part.samples} of {full.samples} samples, {part.steps} of {full.steps} steps, N={args.n}, "
          f"{args.step_tokens} tokens per step, preset {args.preset}", file=sys.stderr)
    default_dir = (args.out.parent if args.out else ROOT / "runs") / f"gpu-estimate-{args.preset}"
    folder = write_random_model(args.model_dir or default_dir, args.preset, args.tokenizer)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a plain kill must still close vLLM
    engine = None
    try:
        for name in args.rows:
            if results.done(name) and not args.rerun:
                print(f"  {name}: complete in {args.out}, kept (--rerun to run it again)", file=sys.stderr)
                continue
            if engine is None:
                started = time.perf_counter()
                engine = VLLMEngine(
                    str(folder), tokenizer=str(args.tokenizer), load_format="dummy", dtype="bfloat16",
                    max_model_len=args.max_model_len, max_batch=max(args.concurrency, batch),
                    gpu_memory_utilization=args.gpu_memory_utilization, seed=args.seed,
                )
                print(f"  vLLM started in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            print(f"  {name}: running", file=sys.stderr)
            if name == "ceiling":
                record = throughput.run_ceiling_row(engine, ceiling_config, samples, batch)
            else:
                engine.llm.reset_prefix_cache()
                save = functools.partial(results.update, name)
                record = throughput.run_verifier_row(
                    throughput.Row(name, "scheduler"), engine, config, samples, args.concurrency, save
                )
            results.update(name, record)
            print(f"  {name}: {record['wall_s']:.1f} s", file=sys.stderr)
    finally:
        if engine is not None:
            engine.close()
        results.data["estimate"] = print_tables(results.data, full)
        if args.out is not None:
            write_json_atomic(args.out, results.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
