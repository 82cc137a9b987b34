"""Rollout throughput of ``genprm synth``'s stage 2 against the same engine's ceiling and one request at a time.

    python bench/synth_rollouts.py --engine llamacpp --model qwen2.5-coder-0.5b-instruct \
        [--problems 3] [--k 8] [--max-tokens 96] [--concurrency 16] [--threads 1] [--out results.json]
    ~/.cache/genprm/vllm-venv/bin/python bench/synth_rollouts.py --engine vllm --model HF_FOLDER ...

Every row rolls out the same prefixes with the same K, token budget, sampling and seeds. The
solutions are GSM8K train reference solutions, one line a step (``Step k: ``, the calculator
annotations ``<<...>>`` removed), stored as a stage-1 selection in a scratch run folder, so no policy
model is needed; every step is rolled out (``--all-steps``: all rows do the same work).

* ``stage``: :func:`genprm.synthesis.stages.run_rollouts` as shipped: a prefix's K samples are one
  request with ``n = K``, ``--concurrency`` prefixes in flight (2 on llama.cpp, which runs one
  request at a time), grading and storing included.
* ``one-at-a-time``: the same K samples of each prefix, one request of one sample at a time, one
  prefix after another (what a loop calling the engine per sample gives).
* ``ceiling``: the engine alone on exactly the same requests (every prefix, ``n = K``, the same
  seeds) handed over in one ``Engine.sample`` call: one batch of all of them for vLLM, back to back
  for llama.cpp (which decodes one sequence at a time here). No grading, no store, no scheduling.

Columns: wall seconds (model loading excluded; one warm-up request and a grading call first), the
seconds the engine reports busy (its ``stats.seconds``), CPU seconds of this process and its
children (steadier than wall time on a shared machine), generated tokens, generated tokens per wall
second and per CPU second, and each as a share of the ceiling's (the goal for ``stage``: at least
80%). ``--repeat N`` runs the rows round-robin N times (the stage row on a fresh copy of the store
each time) and shows each row's median by tokens/s.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import genprm  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from genprm.engines import GenerationRequest, load_engine
from genprm.evaluation.chat import ChatModel
from genprm.io import write_json_atomic
from genprm.protocol.synthesis import continuation_prompt, policy_messages, rollout_prefix
from genprm.synthesis.pipeline import local_executor
from genprm.synthesis.problems import Problem, read_problems
from genprm.synthesis.rollouts import RolloutSettings, prefix_seed
from genprm.synthesis.solutions import Selection, Solution, SolutionSettings, solution_key
from genprm.synthesis.stages import run_rollouts
from genprm.synthesis.store import StageRecord, SynthStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import cpu_seconds  # noqa: E402  (the verification bench's CPU clock, children included)

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
ROWS = ("stage", "one-at-a-time", "ceiling")


def reference_steps(answer: str) -> list[str]:
    """A GSM8K reference solution as policy-style steps (``Step k: `` labels, no calculator notes)."""
    body, final = answer.rsplit("####", 1)
    lines = [re.sub(r"<<[^>]*>>", "", line).strip() for line in body.strip().splitlines() if line.strip()]
    lines.append(f"The answer is \\boxed{{{final.strip()}}}.")
    return [f"Step {k}: {line}" for k, line in enumerate(lines, start=1)]


def prepare(run: Path, count: int, settings: SolutionSettings) -> list[tuple[Problem, list[str]]]:
    """Store ``count`` problems with their reference solutions as a stage-1 selection."""
    raw = [json.loads(line) for line in GSM8K.read_text().splitlines()[:count]]
    problems = [p for p in read_problems(GSM8K, count) if isinstance(p, Problem)]
    chosen: list[tuple[Problem, list[str]]] = []
    with SynthStore(run) as store:
        key = "bench-selection"
        store.set_stage("solutions", StageRecord(key, settings.selection_fields(), {"draws": "bench"}))
        for problem, record in zip(problems, raw):
            steps = reference_steps(record["answer"])
            store.put_problem(problem)
            solution = Solution(solution_key(problem.key, steps), steps, True, "0:0")
            store.put_selection(problem.key, key, Selection("medium", 0.5, 2, 2, 1, 1, [solution]))
            chosen.append((problem, steps))
    return chosen


def stage_row(run: Path, chat: ChatModel, settings: RolloutSettings, concurrency: int) -> dict[str, Any]:
    before = chat.engine.stats.completion_tokens
    started = time.perf_counter()
    with SynthStore(run) as store:
        report = run_rollouts(store, chat, settings, local_executor(chat, concurrency))
    wall = time.perf_counter() - started
    return {"wall_s": wall, "tokens": chat.engine.stats.completion_tokens - before, "requests": report.computed}


def prompts_of(chat: ChatModel, chosen: list[tuple[Problem, list[str]]], system: str) -> list[tuple[str, str, int]]:
    """(prompt, solution key, t) of every prefix the stage rolls out."""
    out = []
    for problem, steps in chosen:
        messages = policy_messages(system, problem.problem)
        for t in range(1, len(steps)):
            out.append((continuation_prompt(chat.template, messages, rollout_prefix(steps, t)),
                        solution_key(problem.key, steps), t))
    return out


def one_at_a_time_row(chat: ChatModel, prompts: list[tuple[str, str, int]], settings: RolloutSettings,
                      k: int) -> dict[str, Any]:
    tokens, started = 0, time.perf_counter()
    for prompt, key, t in prompts:
        seed = prefix_seed(settings, key, t)
        for i in range(k):
            [out] = chat.engine.generate([GenerationRequest(prompt, settings.sampling(1, seed + i))])
            tokens += out.completion_tokens
    return {"wall_s": time.perf_counter() - started, "tokens": tokens, "requests": len(prompts) * k}


def ceiling_row(chat: ChatModel, prompts: list[tuple[str, str, int]], settings: RolloutSettings,
                k: int) -> dict[str, Any]:
    """Exactly the stage's requests (same prompts, n = K, seeds), handed to the engine in one call."""
    requests = [GenerationRequest(prompt, settings.sampling(k, prefix_seed(settings, key, t)))
                for prompt, key, t in prompts]
    started = time.perf_counter()
    outs = chat.engine.sample(requests)
    tokens = sum(g.completion_tokens for found in outs for g in found)
    return {"wall_s": time.perf_counter() - started, "tokens": tokens, "requests": len(requests)}


def warm_up(chat: ChatModel, prompt: str) -> None:
    """Page the weights in and import math-verify before any row is timed."""
    from genprm.evaluation.grading import grade_all

    chat.engine.generate([GenerationRequest(prompt, RolloutSettings(max_tokens=8).sampling(1, 0))])
    grade_all([("1", "1")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="llamacpp")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all rows; the table shows the median")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    options: dict[str, Any] = {"n_threads": args.threads} if args.engine == "llamacpp" and args.threads else {}
    engine = load_engine(args.engine, args.model, **options)
    chat = ChatModel(engine)
    settings = RolloutSettings(ks=(args.k,) * 3, max_tokens=args.max_tokens, skip_after_zero=False)
    solution_settings = SolutionSettings()
    runs: dict[str, list[dict[str, Any]]] = {row: [] for row in args.rows.split(",")}
    with tempfile.TemporaryDirectory() as scratch:
        chosen = prepare(Path(scratch) / "store", args.problems, solution_settings)
        prompts = prompts_of(chat, chosen, solution_settings.system_prompt)
        warm_up(chat, prompts[0][0])
        for round_ in range(args.repeat):
            for row in runs:
                engine_before, cpu_before = chat.engine.stats.seconds, cpu_seconds()
                if row == "stage":
                    fresh = Path(scratch) / f"run{round_}"
                    shutil.copytree(Path(scratch) / "store", fresh)
                    result = stage_row(fresh, chat, settings, args.concurrency)
                elif row == "one-at-a-time":
                    result = one_at_a_time_row(chat, prompts, settings, args.k)
                elif row == "ceiling":
                    result = ceiling_row(chat, prompts, settings, args.k)
                else:
                    raise SystemExit(f"unknown row {row!r}: choose from {', '.join(ROWS)}")
                result["engine_s"] = chat.engine.stats.seconds - engine_before
                result["cpu_s"] = cpu_seconds() - cpu_before
                result["tok_s"] = result["tokens"] / result["wall_s"]
                result["tok_cpu_s"] = result["tokens"] / result["cpu_s"]
                runs[row].append(result)
                print(f"{row} #{round_}: {result}", file=sys.stderr, flush=True)
                if args.out:  # kept after every row: a crash later loses nothing measured
                    write_json_atomic(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs})
    results = {row: sorted(found, key=lambda r: r["tok_s"])[len(found) // 2] for row, found in runs.items()}
    engine.close()
    ceiling = results.get("ceiling")
    print(f"\n{args.engine} {args.model}: {args.problems} problems, {len(prompts)} prefixes, K={args.k}, "
          f"{args.max_tokens} tokens max, concurrency {args.concurrency}, median of {args.repeat}\n")
    print("| row | wall s | engine busy s | CPU s | generated tok | gen tok/s | share of ceiling | "
          "gen tok per CPU s | share of ceiling (CPU) |\n|---|---|---|---|---|---|---|---|---|")
    for row, r in results.items():
        share = f"{100 * r['tok_s'] / ceiling['tok_s']:.0f}%" if ceiling else "–"
        cpu_share = f"{100 * r['tok_cpu_s'] / ceiling['tok_cpu_s']:.0f}%" if ceiling else "–"
        print(f"| {row} | {r['wall_s']:.1f} | {r['engine_s']:.1f} | {r['cpu_s']:.1f} | {r['tokens']} | "
              f"{r['tok_s']:.1f} | {share} | {r['tok_cpu_s']:.1f} | {cpu_share} |")
    if args.out:
        write_json_atomic(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": results,
                                     "runs": runs})


if __name__ == "__main__":
    main()
