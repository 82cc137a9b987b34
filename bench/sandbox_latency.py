"""Latency of the code sandbox: warm-worker run vs in-process exec, worker cold start, session close.

    python bench/sandbox_latency.py [--runs 200] [--cold 5] [--python PATH] [--preimport sympy,numpy,scipy]

Prints plain tables, one row per mode with the launch it got (bwrap+userns, bwrap+setuid, bwrap,
rlimits+uid, rlimits) or why it is unavailable. Target: the sandbox adds at most ~5 ms (median)
to a typical check. ``--python``: the interpreter that runs the code (as root, rlimits needs one
an unprivileged uid can read); ``--preimport ""`` when that Python lacks sympy & co.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    import genprm.sandbox  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from genprm.errors import SandboxUnavailableError
from genprm.sandbox import CodeSession, SandboxConfig, WorkerPool, bwrap_status
from genprm.sandbox.process import Worker, WorkerSpec

PREIMPORTS = ("sympy", "numpy", "scipy")

CHECKS = {
    "print(1+1)": "print(1+1)",
    "small sympy": "import sympy as sp\nx = sp.symbols('x')\nprint(sp.expand((x + 1)**2) == x**2 + 2*x + 1)",
}


def percentiles(samples: list[float]) -> tuple[float, float]:
    """Median and p90, in milliseconds."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1e3, p90 * 1e3


def time_calls(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def in_process(code: str) -> Callable[[], object]:
    """Upstream's way: exec in our own process with stdout redirected."""
    namespace: dict[str, object] = {}

    def call() -> str:
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                exec(code, namespace)
            return buf.getvalue().strip()
        except Exception as e:  # noqa: BLE001 - mirrors upstream
            return f"Code execute Error: {type(e).__name__}: {e}"

    return call


def launch(config: SandboxConfig) -> tuple[str | None, str]:
    """(launch label, "") or (None, why the mode is unavailable here)."""
    try:
        return WorkerSpec.from_config(config).plan.label, ""
    except SandboxUnavailableError as e:
        return None, str(e)


def cold_start(config: SandboxConfig, repeats: int) -> tuple[float, float]:
    """Median seconds from spawn to 'ready', and of close() (the whole-tree kill) after one run."""
    spec = WorkerSpec.from_config(config)
    starts, closes = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        worker = Worker(spec)
        starts.append(time.perf_counter() - t0)
        worker.execute("x = 1", 5.0, 100)
        t0 = time.perf_counter()
        worker.close()
        closes.append(time.perf_counter() - t0)
    return statistics.median(starts), statistics.median(closes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per check (default 200)")
    parser.add_argument("--cold", type=int, default=5, help="cold starts per mode (default 5)")
    parser.add_argument("--python", default=None, help="interpreter that runs the code (default: this one)")
    parser.add_argument("--preimport", default=",".join(PREIMPORTS), help="modules warm in the run rows")
    args = parser.parse_args()
    warm = tuple(m for m in args.preimport.split(",") if m)

    import sympy  # noqa: F401 - the in-process baseline gets the same warm imports

    bwrap, reason = bwrap_status(PREIMPORTS, python=args.python)
    print(f"python {sys.version.split()[0]}; bubblewrap: {'yes' if bwrap else 'no (' + reason + ')'}; "
          f"{args.runs} runs per check\n")

    rows = []
    skipped = []
    for mode in ("bwrap", "rlimits"):
        config = SandboxConfig(isolation=mode, pool_size=1, python=args.python, preimport=warm)  # type: ignore[arg-type]
        label, why = launch(config)
        if label is None:
            skipped.append((mode, why))
            continue
        pool = WorkerPool()
        pool.prewarm(config)
        if not pool.wait_idle(config, 1, timeout_s=120):
            skipped.append((mode, "no worker started (see the warning above)"))
            pool.shutdown()
            continue
        for name, code in CHECKS.items():
            with CodeSession(config, pool=pool) as session:
                if session.run(code).startswith("Code execute"):
                    skipped.append((f"{label} {name}", session.run(code)))
                    continue
                for _ in range(10):
                    session.run(code)  # warm-up (first sympy calls fill caches)
                sandbox = percentiles(time_calls(lambda: session.run(code), args.runs))  # noqa: B023
            base_fn = in_process(code)
            for _ in range(10):
                base_fn()
            base = percentiles(time_calls(base_fn, args.runs))
            rows.append((label, name, sandbox, base))
        pool.shutdown()

    head = (f"{'launch':13} {'check':12} {'sandbox med':>12} {'sandbox p90':>12} {'exec med':>10} "
            f"{'exec p90':>10} {'added med':>10}")
    print(head)
    print("-" * len(head))
    for label, name, (s_med, s_p90), (b_med, b_p90) in rows:
        print(f"{label:13} {name:12} {s_med:10.3f}ms {s_p90:10.3f}ms {b_med:8.3f}ms {b_p90:8.3f}ms "
              f"{s_med - b_med:8.3f}ms")

    print(f"\n{'cold start (spawn -> ready), close':40} {'start':>10} {'close':>10}")
    print("-" * 62)
    for mode in ("bwrap", "rlimits"):
        for what, pre in (("sympy+numpy+scipy", PREIMPORTS), ("no preimport", ())):
            config = SandboxConfig(isolation=mode, preimport=pre, python=args.python)  # type: ignore[arg-type]
            label, _ = launch(config)
            try:
                if label is None:
                    raise SandboxUnavailableError("unavailable")
                start, close = cold_start(config, args.cold)
            except SandboxUnavailableError:
                print(f"{(label or mode) + ', ' + what:40} {'unavailable':>10}")
                continue
            print(f"{label + ', ' + what:40} {start * 1e3:8.1f}ms {close * 1e3:8.1f}ms")
    for mode, why in skipped:
        print(f"\n{mode}: unavailable: {why}")


if __name__ == "__main__":
    main()
