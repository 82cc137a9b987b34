"""Verification throughput on vLLM: the released GenPRM loop vs our scheduler vs raw batched generation.

    python bench/throughput.py --model HF_FOLDER [--samples 20] [--n 8] [--max-step-tokens 256]
        [--rows upstream,scheduler,scheduler-stop,ceiling] [--config-json 'NAME={"adaptive_n": true}']
        [--out results.json]

Runs in vLLM's environment (on a CPU: ``scripts/install-vllm-cpu``). Every row verifies the same K
ProcessBench GSM8K samples (the first K/2 with an error and the first K/2 without, in file order)
with the same model, sampling settings and seeds, and prints one markdown table:

* ``upstream`` (a): the released GenPRM code's loop: one solution, one step, one path, one blocking
  request at a time, prefix caching off (a ``VLLMEngine`` with ``enable_prefix_caching=False`` and
  ``max_batch=1``, driven by the plain sequential loop).
* ``scheduler`` (b): our :class:`~genprm.verifier.scheduler.Scheduler`, ``--concurrency`` paths of
  many solutions in flight, prefix caching on, continuous batching.
* ``scheduler-stop``: (b) with ``stop_at_first_error=True``.
* ``ceiling`` (c): plain ``vllm.LLM.generate`` on one batch of GenPRM first-step prompts of the
  samples (the verifier's own prompt lengths at step 1), as many as ``--concurrency`` (the widest
  batch (b) may build), ``max_tokens`` = the per-step cap with ``ignore_eos``, on the same
  ``vllm.LLM`` as (b): the generation throughput this hardware gives a full batch.
* one row per ``--config-json``: (b) with those VerifyConfig fields changed (e.g. adaptive sampling);
  its F1 is compared with (b)'s on the same samples.

Columns: wall time (engine start-up excluded); CPU time of this process and its children (vLLM's
engine and workers, code sandboxes: steadier than wall time on a shared machine); generated tokens
and tokens/s; prompt tokens vLLM computed (prompt tokens minus vLLM's own per-request
``num_cached_tokens``) and those it took from its prefix cache; (a)'s wall time over the row's; the
row's tokens/s as a share of (c)'s; ProcessBench F1 (first error == label; F1 is the harmonic mean
of the accuracies on erroneous and on correct samples) and its difference to (b)'s.

``--out`` is rewritten after every finished solution and row, so a long run loses at most the
solution in flight; a re-run with the same ``--out`` and settings keeps the rows already complete
(``--rerun`` to run them again).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import genprm  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from genprm.engines.base import EngineStats
from genprm.io import SolutionInput, validate_record
from genprm.protocol import prompts as P
from genprm.protocol.chat import ChatTemplate, build_messages
from genprm.verifier import SolutionVerifier, VerifyConfig
from genprm.verifier.records import SolutionResult
from genprm.verifier.scheduler import Scheduler

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "processbench" / "gsm8k.json"
BUILTIN_ROWS = ("upstream", "scheduler", "scheduler-stop", "ceiling")
WHAT = {
    "upstream": "(a) sequential, 1 request at a time, no prefix cache",
    "scheduler": "(b) scheduler, prefix cache",
    "scheduler-stop": "(b) + stop_at_first_error",
    "ceiling": "(c) raw vllm.LLM.generate, one batch",
}


@dataclass
class Row:
    """One line of the table: a way of running, plus VerifyConfig fields changed from the base."""

    name: str
    kind: str  # upstream | scheduler | ceiling
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_config_row(text: str, index: int) -> Row:
    """``NAME={...}`` or a bare ``{...}`` (named ``config-INDEX``): a scheduler row with those overrides."""
    name, _, payload = text.partition("=") if not text.lstrip().startswith("{") else ("", "", text)
    name = name.strip() or f"config-{index}"
    try:
        overrides = json.loads(payload)
    except ValueError as exc:
        raise SystemExit(f"--config-json {text!r}: not JSON ({exc})") from exc
    if not isinstance(overrides, dict):
        raise SystemExit(f"--config-json {text!r}: give a JSON object of VerifyConfig fields")
    return Row(name, "scheduler", overrides)


def balanced_samples(path: Path, k: int) -> list[SolutionInput]:
    """The first ceil(K/2) samples with an error and the first floor(K/2) without, in file order.

    ProcessBench's F1 needs both kinds, and GSM8K's first 20 records all have an error.
    """
    records = json.loads(path.read_text(encoding="utf-8"))
    wrong = [i for i, r in enumerate(records) if r["label"] != -1][: (k + 1) // 2]
    right = [i for i, r in enumerate(records) if r["label"] == -1][: k // 2]
    return [validate_record(records[i], position=i, path=str(path)) for i in sorted(wrong + right)]


def processbench_f1(pairs: list[tuple[int, int]]) -> dict[str, float | None]:
    """ProcessBench's score from (label, predicted first error) pairs: harmonic mean of the two accuracies."""
    wrong = [pred == label for label, pred in pairs if label != -1]
    right = [pred == -1 for label, pred in pairs if label == -1]
    acc_wrong = sum(wrong) / len(wrong) if wrong else None
    acc_right = sum(right) / len(right) if right else None
    if acc_wrong is None or acc_right is None:
        f1 = None
    else:
        f1 = 0.0 if acc_wrong + acc_right == 0 else 2 * acc_wrong * acc_right / (acc_wrong + acc_right)
    return {"acc_erroneous": acc_wrong, "acc_correct": acc_right, "f1": f1}


SUMMED = (
    "requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "cpu_s", "prompt_tokens_computed",
)
"""The row figures that add up over solutions (besides wall time)."""


def stats_delta(after: EngineStats, before: dict[str, float]) -> dict[str, float]:
    """What an engine did between two snapshots: requests, tokens, and the prompt tokens vLLM computed."""
    now = snapshot(after)
    delta = {k: now[k] - before[k] for k in now}
    delta["prompt_tokens_computed"] = delta["prompt_tokens"] - delta["cached_prompt_tokens"]
    return delta


def snapshot(stats: EngineStats) -> dict[str, float]:
    return {
        "requests": stats.requests,
        "prompt_tokens": stats.prompt_tokens,
        "cached_prompt_tokens": stats.cached_prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cpu_s": cpu_seconds(),
    }


def cpu_seconds() -> float:
    """CPU time of this process and its live children (vLLM's engine core and workers, sandboxes).

    On a shared machine wall time depends on the neighbours; CPU time much less, so both are kept.
    """
    try:
        import psutil
    except ImportError:  # vLLM depends on psutil; without it the column stays empty
        return float("nan")
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # exited meanwhile
            continue
        total += times.user + times.system
    return total


class Results:
    """The ``--out`` file: settings and rows, rewritten atomically whenever something finishes."""

    def __init__(self, path: Path | None, settings: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"settings": settings, "rows": {}}
        self.partial: dict[str, dict[str, Any]] = {}
        """Unfinished upstream rows of an earlier run: their solutions are kept (see ``run_verifier_row``)."""
        if path is not None and path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("settings") == settings:
                rows = old.get("rows", {})
                self.data["rows"] = {k: v for k, v in rows.items() if v.get("complete")}
                self.partial = {k: v for k, v in rows.items() if not v.get("complete") and v.get("kind") == "upstream"}
            else:
                print(f"note: {path} holds other settings; its rows are replaced", file=sys.stderr)

    def done(self, name: str) -> bool:
        return bool(self.data["rows"].get(name, {}).get("complete"))

    def update(self, name: str, row: dict[str, Any]) -> None:
        self.data["rows"][name] = row
        if self.path is None:
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


def solution_summary(result: SolutionResult) -> dict[str, Any]:
    paths = [p for s in result.steps for p in s.paths]
    return {
        "key": result.key,
        "id": result.record.get("id"),
        "label": result.record.get("label"),
        "first_error": result.first_error,
        "step_rewards": result.step_rewards,
        "seconds": round(result.seconds, 3),
        "completion_tokens": sum(p.completion_tokens for p in paths),
        "path_steps": len(paths),
    }


def run_verifier_row(
    row: Row,
    engine: Any,
    config: VerifyConfig,
    samples: list[SolutionInput],
    concurrency: int,
    save: Callable[[dict[str, Any]], None],
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify every sample as the row says; ``save`` hears the row after each solution.

    The upstream loop verifies one solution at a time with no cache shared between them, so its
    figures are sums over solutions: ``resume`` (an unfinished upstream row of the same settings)
    keeps its solutions and totals, and only the missing solutions run. A scheduler row always runs
    whole, since its batches mix solutions.
    """
    out: dict[str, Any] = {"kind": row.kind, "overrides": row.overrides, "config": config.model_dump(mode="json")}
    out["concurrency"] = 1 if row.kind == "upstream" else concurrency
    kept = resume if row.kind == "upstream" and resume and resume.get("solutions") else None
    solutions: list[dict[str, Any]] = list(kept["solutions"]) if kept else []
    carried = {k: float(kept.get(k) or 0) if kept else 0.0 for k in (*SUMMED, "wall_s")}
    if kept:
        out["sessions"] = int(kept.get("sessions", 1)) + 1
        print(f"  {row.name}: resuming after {len(solutions)} solutions", file=sys.stderr)
    before = snapshot(engine.stats)
    started = time.perf_counter()

    def totals() -> dict[str, float]:
        delta = stats_delta(engine.stats, before)
        summed = {k: carried[k] + delta[k] for k in SUMMED}
        return {**summed, "wall_s": carried["wall_s"] + time.perf_counter() - started}

    def finished(result: SolutionResult) -> None:
        solutions.append(solution_summary(result))
        out.update(solutions=solutions, complete=False, **totals())
        save(out)
        print(f"  {row.name}: {len(solutions)}/{len(samples)} solutions, {out['wall_s']:.0f} s", file=sys.stderr)

    verifier = SolutionVerifier(engine, config)
    if row.kind == "upstream":  # engine.max_batch == 1: the plain loop runs paths one after another
        done = {s["key"] for s in solutions}
        for item in samples:
            if item.key not in done:
                finished(verifier.verify(item.problem, item.steps, record=item.record, key=item.key))
    else:
        scheduler = Scheduler(verifier, concurrency=concurrency)
        try:
            scheduler.run(samples, finished)
        finally:
            scheduler.close()
    out.update(totals())
    by_key = {s["key"]: s for s in solutions}
    pairs = [(int(item.record["label"]), int(by_key[item.key]["first_error"])) for item in samples]
    out.update(processbench_f1(pairs), complete=True)
    return out


def run_ceiling_row(engine: Any, config: VerifyConfig, samples: list[SolutionInput], batch: int) -> dict[str, Any]:
    """Plain ``LLM.generate``: ``batch`` first-step prompts (the samples' in turn), ``max_step_tokens`` each.

    The batch is as wide as the scheduler may go (``--concurrency``), so the row says what this
    hardware gives when the batch is full, whatever K and N are.
    """
    import vllm

    chat = ChatTemplate(engine.chat_template, engine.special_tokens)
    firsts = []
    for item in samples:
        user = P.user_turn(item.problem, item.steps[0], 0, config.first_turn)
        messages = build_messages(config.mode.system_prompt, [user], [])
        text = chat.prompt_for(messages, config.assistant_header) + P.analyze_prefix(1)
        firsts.append({"prompt_token_ids": engine.tokenize(text)})
    prompts = [firsts[i % len(firsts)] for i in range(batch)]
    params = [
        vllm.SamplingParams(
            max_tokens=config.max_step_tokens, temperature=config.temperature, top_p=config.top_p,
            top_k=config.top_k, seed=config.seed + i, ignore_eos=True,
        )
        for i in range(len(prompts))
    ]
    engine.llm.reset_prefix_cache()
    cpu, started = cpu_seconds(), time.perf_counter()
    outputs = engine.llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - started
    prompt_tokens = sum(len(p["prompt_token_ids"]) for p in prompts)
    cached = sum(int(getattr(o, "num_cached_tokens", 0) or 0) for o in outputs)
    return {
        "kind": "ceiling",
        "batch": len(prompts),
        "wall_s": wall,
        "cpu_s": cpu_seconds() - cpu,
        "requests": len(prompts),
        "prompt_tokens": prompt_tokens,
        "cached_prompt_tokens": cached,
        "prompt_tokens_computed": prompt_tokens - cached,
        "completion_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
        "complete": True,
    }


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: dict[str, dict[str, Any]], order: list[str]) -> str:
    """The markdown table; ratios use rows (a), (b) and (c) wherever they are complete."""

    def tps(r: dict[str, Any]) -> float | None:
        return r["completion_tokens"] / r["wall_s"] if r.get("wall_s") else None

    a, b, c = (rows.get(k) if rows.get(k, {}).get("complete") else None for k in ("upstream", "scheduler", "ceiling"))
    lines = [
        "| row | what | wall s | CPU s | generated tok | gen tok/s | prompt tok computed | prompt tok cached "
        "| (a) wall / row wall | share of ceiling tok/s | F1 | ΔF1 vs (b) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        r = rows.get(name)
        if r is None:
            continue
        what = WHAT.get(name, "(b) + " + json.dumps(r.get("overrides", {})))
        if not r.get("complete"):
            what += f" (incomplete: {len(r.get('solutions', []))} solutions{', ' + r['error'] if 'error' in r else ''})"
        speed = tps(r)
        ratio = a["wall_s"] / r["wall_s"] if a and r.get("wall_s") and r.get("kind") != "ceiling" else None
        ceiling = tps(c) if c else None
        share = speed / ceiling if speed is not None and ceiling else None
        f1 = r.get("f1")
        delta = f1 - b["f1"] if b and f1 is not None and b.get("f1") is not None else None
        computed, cached = r.get("prompt_tokens_computed", 0), r.get("cached_prompt_tokens", 0)
        lines.append(
            f"| {name} | {what} | {fmt(r.get('wall_s'), '.1f')} | {fmt(r.get('cpu_s'), '.0f')} "
            f"| {r.get('completion_tokens', 0):.0f} "
            f"| {fmt(speed, '.1f')} | {computed:.0f} | {cached:.0f} "
            f"| {fmt(ratio, '.2f')} | {fmt(share, '.0%')} | {fmt(f1, '.3f')} | {fmt(delta, '+.3f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Hugging Face model folder (or hub id) for vLLM")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ProcessBench JSON (problem/steps/label)")
    parser.add_argument("--samples", type=int, default=20, help="K samples, half with an error, half without")
    parser.add_argument("--n", type=int, default=8, help="paths per step")
    parser.add_argument("--max-step-tokens", type=int, default=2048, help="generated-token cap per step")
    parser.add_argument("--concurrency", type=int, default=64, help="paths in flight in the scheduler rows")
    parser.add_argument("--max-model-len", type=int, default=16384)
    parser.add_argument("--rows", default="", help=f"comma list of rows to run (default: {','.join(BUILTIN_ROWS)} "
                        "and every --config-json row)")
    parser.add_argument("--config-json", action="append", default=[], metavar="[NAME=]JSON",
                        help="an extra scheduler row with these VerifyConfig fields changed; repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON file of the raw numbers, rewritten as rows progress")
    parser.add_argument("--rerun", action="store_true", help="run the chosen rows again even if --out has them")
    parser.add_argument("--ceiling-batch", type=int, help="prompts in the ceiling's one batch (default: --concurrency)")
    parser.add_argument("--engine-json", type=json.loads, default={}, metavar="JSON",
                        help='vllm.LLM arguments for the batched engine (scheduler and ceiling rows), e.g. '
                             '\'{"block_size": 32}\'; the upstream row keeps its own engine')
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for the table
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("bench/throughput.py needs vLLM: on a CPU, scripts/install-vllm-cpu VENV_PYTHON", file=sys.stderr)
        return 2
    from genprm.engines.vllm_engine import VLLMEngine

    if not args.data.is_file():
        print(f"no ProcessBench data at {args.data} (--data)", file=sys.stderr)
        return 2
    extra = [parse_config_row(text, i + 1) for i, text in enumerate(args.config_json)]
    known = {name: Row(name, "scheduler" if name.startswith("scheduler") else name) for name in BUILTIN_ROWS}
    known["scheduler-stop"].overrides = {"stop_at_first_error": True}
    known.update({row.name: row for row in extra})
    wanted = [s.strip() for s in args.rows.split(",") if s.strip()] or list(known)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        parser.error(f"unknown rows {unknown}: choose from {', '.join(known)}")
    samples = balanced_samples(args.data, args.samples)
    base = {"n": args.n, "max_step_tokens": args.max_step_tokens, "seed": args.seed}
    configs = {name: VerifyConfig(**{**base, **known[name].overrides}) for name in wanted}  # fail before loading
    settings = {
        "model": str(args.model), "data": str(args.data), "samples": [s.record.get("id") for s in samples],
        "n": args.n, "max_step_tokens": args.max_step_tokens, "concurrency": args.concurrency, "seed": args.seed,
        "max_model_len": args.max_model_len, "cpus": os.cpu_count(),
        **({"engine": args.engine_json} if args.engine_json else {}),
    }
    results = Results(args.out, settings)
    print(f"{len(samples)} samples ({sum(s.record['label'] != -1 for s in samples)} with an error), N={args.n}, "
          f"max {args.max_step_tokens} tokens per step, rows: {', '.join(wanted)}", file=sys.stderr)

    engines: dict[str, Any] = {}
    # a plain kill must still close vLLM, or its engine process outlives us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def engine_for(kind: str) -> Any:
        """One engine per kind, started once; the other kind's engine is closed first (memory)."""
        key = "upstream" if kind == "upstream" else "batched"
        if key not in engines:
            for other in list(engines):
                engines.pop(other).close()
            started = time.perf_counter()
            if key == "upstream":
                engines[key] = VLLMEngine(args.model, max_model_len=args.max_model_len, enable_prefix_caching=False,
                                          max_batch=1, seed=args.seed)
            else:
                engines[key] = VLLMEngine(args.model, max_model_len=args.max_model_len,
                                          max_batch=max(args.concurrency, args.ceiling_batch or 0), seed=args.seed,
                                          **args.engine_json)
            print(f"  vLLM ({key}) started in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return engines[key]

    try:
        for name in wanted:
            if results.done(name) and not args.rerun:
                print(f"  {name}: complete in {args.out}, kept (--rerun to run it again)", file=sys.stderr)
                continue
            row = known[name]
            engine = engine_for(row.kind)
            print(f"  {name}: running", file=sys.stderr)
            try:
                if row.kind == "ceiling":
                    record = run_ceiling_row(engine, configs[name], samples, args.ceiling_batch or args.concurrency)
                else:
                    if row.kind != "upstream":
                        engine.llm.reset_prefix_cache()  # no row inherits another's cached prefixes
                    save = functools.partial(results.update, name)
                    resume = None if args.rerun else results.partial.get(name)
                    record = run_verifier_row(row, engine, configs[name], samples, args.concurrency, save, resume)
            except Exception as exc:  # one broken row (say, a config under development) must not sink the others
                print(f"  {name}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                # keep this attempt's progress (saved after each solution), never an earlier run's numbers
                # (an upstream row resumed from an earlier run keeps that run's solutions, as a re-run would)
                partial = results.data["rows"].get(name) or (None if args.rerun else results.partial.get(name)) or {}
                partial = {"kind": row.kind} if partial.get("complete") else dict(partial) or {"kind": row.kind}
                results.update(name, {**partial, "complete": False, "error": f"{type(exc).__name__}: {exc}"})
                for key in [k for k, e in engines.items() if e is engine]:  # it may be dead: the next row starts anew
                    engines.pop(key).close()
                continue
            results.update(name, record)
            print(f"  {name}: {record['wall_s']:.1f} s", file=sys.stderr)
    finally:
        for engine in engines.values():
            engine.close()
    order = [name for name in known if name in results.data["rows"]]
    print(table(results.data["rows"], order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
