"""llama.cpp's ``parallel`` mode: generated tokens/s with 1, 2, 4, 8 sequences per decode, and the
wall time of ``genprm verify`` with and without it.

    python bench/llamacpp_parallel.py [--model qwen2.5-coder-1.5b-instruct] [--threads N]
        [--parallel 1,2,4,8] [--requests 8] [--max-tokens 128] [--verify examples/one.json] [--n 4]
        [--max-step-tokens 256] [--verify-parallel 1,4] [--sandbox auto] [--out results.json]

Table 1 (generation): for each ``--parallel`` P, a fresh ``LlamaCppEngine(parallel=P)`` gets the same
``--requests`` K chat prompts (distinct math questions, the verifier's sampling settings, seed i for
request i) in one ``generate`` call; P = 1 is the plain path, one request after another; P > 1
decodes P at a time, a waiting request taking each sequence that comes free. Columns: generated
tokens (the same work in every row, within llama.cpp's batch-dependent rounding), wall seconds
(model load excluded, one short warm-up request first), tokens/s, speed-up over P = 1, and the mean
number of sequences per decode step.

Table 2 (``--verify FILE``, skipped with ``--verify ''``): ``genprm.verify`` on FILE at ``--n`` paths
(concurrency 1: the N paths of a step advance in lock-step, so their generations arrive together)
for each ``--verify-parallel``. Columns: wall seconds, generated tokens, tokens/s, speed-up.

Run it on an otherwise idle machine: another busy process slows llama.cpp's threads far more than
its share. Defaults to the 1.5B model and all cores; ``--model smollm2-135m-instruct --requests 4
--max-tokens 32 --n 2 --max-step-tokens 32`` is a quick check that it works.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import genprm  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from genprm.engines.base import Engine, GenerationRequest, SamplingParams  # noqa: E402
from genprm.engines.llamacpp import LlamaCppEngine  # noqa: E402
from genprm.io import write_json_atomic  # noqa: E402
from genprm.protocol.chat import ChatTemplate  # noqa: E402
from genprm.verifier import VerifyConfig  # noqa: E402
from genprm.verifier.api import verify  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "A baker makes 48 muffins and sells 3/4 of them. How many are left?",
    "A train travels 180 km in 2.5 hours. What is its average speed?",
    "What is the sum of the first 20 positive odd numbers?",
    "A rectangle has a perimeter of 36 cm and a length of 11 cm. What is its area?",
    "Solve for x: 3x + 7 = 2x - 5.",
    "How many ways can 5 books be arranged on a shelf?",
    "A shirt costs $40 after a 20% discount. What was the original price?",
    "What is the remainder when 2^10 is divided by 7?",
]


def prompts(engine: Engine, count: int) -> list[str]:
    template = ChatTemplate(engine.chat_template or "", engine.special_tokens)
    return [
        template.render([{"role": "user", "content": f"Solve step by step. {QUESTIONS[i % len(QUESTIONS)]}"
                          + (f" (Variant {i // len(QUESTIONS)}.)" if i >= len(QUESTIONS) else "")}],
                        add_generation_prompt=True)
        for i in range(count)
    ]


def load(args: argparse.Namespace, parallel: int) -> LlamaCppEngine:
    """The engine every row starts afresh (``--n-ctx 0``: the model's own context)."""
    return LlamaCppEngine(args.model, n_ctx=args.n_ctx or None, n_threads=args.threads, parallel=parallel)


def generation_row(args: argparse.Namespace, parallel: int) -> dict[str, Any]:
    with load(args, parallel) as engine:
        engine.generate([GenerationRequest("Hello", SamplingParams(max_tokens=4, temperature=0))])  # warm-up
        requests = [
            GenerationRequest(p, SamplingParams(max_tokens=args.max_tokens, temperature=0.6, top_p=0.95, top_k=20,
                                                seed=i))
            for i, p in enumerate(prompts(engine, args.requests))
        ]
        before = dict(engine.stats.extra)
        started = time.perf_counter()
        outputs = engine.generate(requests)
        wall = time.perf_counter() - started
        steps = engine.stats.extra.get("batch_steps", 0) - before.get("batch_steps", 0)
        stepped = engine.stats.extra.get("batch_step_tokens", 0) - before.get("batch_step_tokens", 0)
    tokens = sum(g.completion_tokens for g in outputs)
    return {"parallel": parallel, "requests": len(requests), "completion_tokens": tokens, "wall_s": wall,
            "tok_s": tokens / wall, "width": stepped / steps if steps else 1.0}


def verify_row(args: argparse.Namespace, parallel: int) -> dict[str, Any]:
    config = VerifyConfig(n=args.n, max_step_tokens=args.max_step_tokens, sandbox=args.sandbox)
    with load(args, parallel) as engine:
        started = time.perf_counter()
        results = verify(Path(args.verify), model=engine, config=config)
        wall = time.perf_counter() - started
    tokens = sum(path.completion_tokens for r in results for step in r.steps for path in step.paths)
    steps = sum(len(r.steps) for r in results)
    return {"parallel": parallel, "solutions": len(results), "steps": steps, "completion_tokens": tokens,
            "wall_s": wall, "tok_s": tokens / wall}


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    base = next((r["tok_s"] for r in rows if r["parallel"] == 1), None)
    lines = ["| " + " | ".join(head for head, _, _ in columns) + " | speed-up |",
             "|" + "---|" * (len(columns) + 1)]
    for r in rows:
        cells = [format(r[key], spec) for _, key, spec in columns]
        speed_up = f"{r['tok_s'] / base:.2f}x" if base else "–"
        lines.append("| " + " | ".join(cells) + f" | {speed_up} |")
    return "\n".join(lines)


def measured(
    args: argparse.Namespace, row: Callable[[argparse.Namespace, int], dict[str, Any]], values: list[int],
    what: str, progress: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """One row per ``parallel`` value, each reported on stderr as it finishes."""
    rows = []
    for p in values:
        rows.append(row(args, p))
        print(f"  {what}, parallel {p}: {progress(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=numbers, default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--verify", default=str(ROOT / "examples" / "one.json"))
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-step-tokens", type=int, default=256)
    parser.add_argument("--verify-parallel", type=numbers, default=[1, 4])
    parser.add_argument("--sandbox", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()

    print(f"model {args.model}, threads {args.threads or 'all cores'}, context {args.n_ctx}", flush=True)
    generation = measured(args, generation_row, args.parallel, "generation", lambda r: f"{r['tok_s']:.1f} tok/s")
    print(f"\nGeneration: {args.requests} requests, up to {args.max_tokens} tokens each\n")
    print(table(generation, [("parallel", "parallel", "d"), ("generated tok", "completion_tokens", "d"),
                             ("wall s", "wall_s", ".1f"), ("tok/s", "tok_s", ".1f"),
                             ("seqs per decode", "width", ".2f")]))
    verified: list[dict[str, Any]] = []
    if args.verify:
        verified = measured(args, verify_row, args.verify_parallel, "verify", lambda r: f"{r['wall_s']:.1f} s")
        print(f"\n`genprm verify` {Path(args.verify).name}, N = {args.n}, {args.max_step_tokens} tokens per step\n")
        print(table(verified, [("parallel", "parallel", "d"), ("steps", "steps", "d"),
                               ("generated tok", "completion_tokens", "d"), ("wall s", "wall_s", ".1f"),
                               ("tok/s", "tok_s", ".1f")]))
    if args.out:
        write_json_atomic(args.out, {"args": {k: str(v) for k, v in vars(args).items()},
                                     "generation": generation, "verify": verified})
        print(json.dumps({"written": str(args.out)}), file=sys.stderr)


if __name__ == "__main__":
    main()
