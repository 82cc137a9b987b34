"""ProcessBench verification on Ray replicas: 1 vs 2 replicas against this process alone, and the
driver's overhead per unit.

    python bench/ray_scaling.py [--model smollm2-135m-instruct] [--samples 4] [--n 2] \
        [--max-step-tokens 32] [--threads 1] [--rows local,ray-1,ray-2,overhead] [--out FILE]

Every verification row verifies the same ProcessBench GSM8K samples (``--samples``, half with an
error) with the same settings and seeds into a fresh run folder, on llama.cpp with ``--threads``
threads per engine:

* ``local``: :class:`~genprm.evaluation.scoring.StoreScorer` in this process (``genprm eval
  processbench`` without ``--ray``), ``--concurrency`` paths in flight.
* ``ray-1``, ``ray-2``: the same on 1 and 2 Ray replicas (``--ray local --replicas R``), each
  replica its own engine, sandbox pool and ``--concurrency`` paths; this process only hands out
  samples and writes the store.

Columns: wall seconds (model loading and replica start-up excluded: every engine is loaded and
warmed before the clock starts), path-steps verified, path-steps per second, the speed-up over
``ray-1``, whether the stored paths equal the ``local`` row's, and the machine's 1-minute load
average before and after the row (on a shared machine the neighbours decide much of the wall time).

* ``overhead``: ``--units`` units of work that do nothing, through the Ray executor on 2 replicas
  and through the local executor: the wall time per unit is what the driver and Ray add to each
  unit (a sample, a rollout prefix), to set against a unit's seconds of engine work.
"""

from __future__ import annotations

import argparse
import json
import os
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

from genprm.engines import load_engine
from genprm.evaluation.processbench import ProcessBenchSample, load_processbench
from genprm.evaluation.scoring import StoreScorer
from genprm.executor import LocalExecutor, Resources, RoleSpec
from genprm.io import write_json_atomic
from genprm.store import RunStore
from genprm.verifier import VerifyConfig
from genprm.verifier.scheduler import solutions_for

ROOT = Path(__file__).resolve().parents[1]
PROCESSBENCH = ROOT.parent / "shared" / "data" / "processbench"
ROWS = ("local", "ray-1", "ray-2", "overhead")


def nothing(resources: Resources, unit: int) -> int:
    """A unit of work that does nothing (module level: it travels to the replicas by reference)."""
    return unit


def stored_paths(run: Path) -> dict[tuple[str, int], Any]:
    with RunStore(run) as store:
        rows = store._db.execute("SELECT sample, path, steps FROM paths").fetchall()
    return {(s, int(p)): [{k: v for k, v in step.items() if k not in ("seconds",)} for step in json.loads(steps)]
            for s, p, steps in rows}


def path_steps(samples: list[ProcessBenchSample], n: int) -> int:
    return sum(len(s.item.steps) for s in samples) * n


def verify_local(spec: RoleSpec, samples: list[ProcessBenchSample], config: VerifyConfig, concurrency: int,
                 run: Path) -> float:
    with load_engine(spec.engine, spec.model, **dict(spec.options)) as engine, RunStore(run) as store:
        engine.tokenize("warm up")
        scorer = StoreScorer(store, engine, config, concurrency=concurrency)
        started = time.perf_counter()
        scorer.score([s.item for s in samples])
        return time.perf_counter() - started


def verify_on_ray(spec: RoleSpec, samples: list[ProcessBenchSample], config: VerifyConfig, concurrency: int,
                  replicas: int, threads: int, run: Path) -> float:
    from genprm.executor.ray import ReplicaPool, ReplicaSettings

    units = solutions_for(config, concurrency)
    settings = ReplicaSettings(replicas=replicas, cpus_per_replica=float(threads), max_concurrency=units + 8)
    with ReplicaPool({"verifier": spec}, settings) as pool, RunStore(run) as store:
        engine = pool.engine("verifier")  # every replica loads its model now, before the clock
        scorer = StoreScorer(store, engine, config, concurrency=concurrency, executor=pool.executor(units))
        started = time.perf_counter()
        scorer.score([s.item for s in samples])
        return time.perf_counter() - started


def overhead(units: int) -> dict[str, float]:
    """Seconds per do-nothing unit through the Ray executor (2 replicas) and the local one."""
    from genprm.executor.ray import ReplicaPool, ReplicaSettings

    with ReplicaPool({}, ReplicaSettings(replicas=2, max_concurrency=16)) as pool:
        executor = pool.executor(8)
        list(executor.run(nothing, range(20)))  # warm: the work function reaches every replica
        started = time.perf_counter()
        done = sum(1 for _ in executor.run(nothing, range(units)))
        ray_s = (time.perf_counter() - started) / done
    started = time.perf_counter()
    done = sum(1 for _ in LocalExecutor(8).run(nothing, range(units)))
    local_s = (time.perf_counter() - started) / done
    return {"units": units, "ray_ms_per_unit": ray_s * 1000, "local_ms_per_unit": local_s * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--max-step-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--units", type=int, default=400)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")

    samples = load_processbench(PROCESSBENCH, ["gsm8k"], limit=args.samples)
    config = VerifyConfig(n=args.n, max_step_tokens=args.max_step_tokens, seed=0)
    spec = RoleSpec("llamacpp", args.model, (("n_threads", args.threads),))
    work = path_steps(samples, args.n)
    results: dict[str, Any] = {"settings": {**vars(args), "out": str(args.out), "path_steps": work}, "rows": {}}
    scratch = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    started_ray = False
    try:
        for row in rows:
            if row != "local" and not started_ray:
                from genprm.executor.ray import LOCAL, connect

                started_ray = connect(LOCAL)
            run = scratch / row
            load_before = os.getloadavg()[0]
            if row == "overhead":
                results["rows"][row] = overhead(args.units)
            else:
                if row == "local":
                    seconds = verify_local(spec, samples, config, args.concurrency, run)
                else:
                    seconds = verify_on_ray(spec, samples, config, args.concurrency, int(row.split("-")[1]),
                                            args.threads, run)
                same = stored_paths(run) == stored_paths(scratch / "local") if (scratch / "local").exists() else None
                results["rows"][row] = {"wall_s": seconds, "path_steps": work, "path_steps_per_s": work / seconds,
                                        "same_paths_as_local": same}
            results["rows"][row]["load_avg"] = [load_before, os.getloadavg()[0]]  # a shared machine's neighbours
            if args.out:
                write_json_atomic(args.out, results)
            print(f"{row}: {results['rows'][row]}", file=sys.stderr, flush=True)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    rows = results["rows"]
    base = rows.get("ray-1", {}).get("wall_s")
    print("| row | wall s | path-steps | path-steps/s | speed-up vs ray-1 | same paths as local | load avg |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        if name == "overhead":
            continue
        speedup = f"{base / row['wall_s']:.2f}x" if base else "–"
        same = {True: "yes", False: "no", None: "–"}[row["same_paths_as_local"]]
        load = " → ".join(f"{x:.1f}" for x in row["load_avg"])
        print(f"| {name} | {row['wall_s']:.1f} | {row['path_steps']} | {row['path_steps_per_s']:.3f} | {speedup} | "
              f"{same} | {load} |")
    if "overhead" in rows:
        o = rows["overhead"]
        print(f"\ndriver overhead per unit ({o['units']} do-nothing units): Ray executor, 2 replicas "
              f"{o['ray_ms_per_unit']:.2f} ms; local executor {o['local_ms_per_unit']:.3f} ms")


if __name__ == "__main__":
    main()
