"""Latency of the code sandbox: warm-worker run vs in-process exec, and worker cold start.

    python bench/sandbox_latency.py [--runs 200] [--cold 5]

Prints a plain table. Target: the sandbox adds at most ~5 ms (median) to a typical check.
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
from genprm.sandbox import CodeSession, SandboxConfig, WorkerPool
from genprm.sandbox.isolation import bwrap_status
from genprm.sandbox.process import Worker, WorkerSpec

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


def cold_start(mode: str, preimport: tuple[str, ...], repeats: int) -> float | None:
    """Median seconds from spawn to 'ready' (None when the mode is unusable here)."""
    try:
        spec = WorkerSpec.from_config(SandboxConfig(isolation=mode, preimport=preimport))  # type: ignore[arg-type]
    except SandboxUnavailableError:
        return None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        worker = Worker(spec)
        times.append(time.perf_counter() - t0)
        worker.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per check (default 200)")
    parser.add_argument("--cold", type=int, default=5, help="cold starts per mode (default 5)")
    args = parser.parse_args()

    import sympy  # noqa: F401 - the in-process baseline gets the same warm imports

    bwrap, reason = bwrap_status(("sympy", "numpy", "scipy"))
    modes = ["bwrap", "rlimits"] if bwrap else ["rlimits"]
    print(f"python {sys.version.split()[0]}; bubblewrap: {'yes' if bwrap else 'no (' + reason + ')'}; "
          f"{args.runs} runs per check\n")

    rows = []
    for mode in modes:
        pool = WorkerPool()
        config = SandboxConfig(isolation=mode, pool_size=1)  # type: ignore[arg-type]
        pool.prewarm(config)
        pool.wait_idle(config, 1, timeout_s=120)
        for name, code in CHECKS.items():
            with CodeSession(config, pool=pool) as session:
                for _ in range(10):
                    session.run(code)  # warm-up (first sympy calls fill caches)
                sandbox = percentiles(time_calls(lambda: session.run(code), args.runs))  # noqa: B023
            base_fn = in_process(code)
            for _ in range(10):
                base_fn()
            base = percentiles(time_calls(base_fn, args.runs))
            rows.append((mode, name, sandbox, base))
        pool.shutdown()

    head = (f"{'mode':8} {'check':12} {'sandbox med':>12} {'sandbox p90':>12} {'exec med':>10} "
            f"{'exec p90':>10} {'added med':>10}")
    print(head)
    print("-" * len(head))
    for mode, name, (s_med, s_p90), (b_med, b_p90) in rows:
        print(f"{mode:8} {name:12} {s_med:10.3f}ms {s_p90:10.3f}ms {b_med:8.3f}ms {b_p90:8.3f}ms "
              f"{s_med - b_med:8.3f}ms")

    print(f"\n{'cold start (spawn -> ready)':36} {'median':>10}")
    print("-" * 48)
    for mode in ("bwrap", "rlimits"):
        for label, pre in (("sympy+numpy+scipy", ("sympy", "numpy", "scipy")), ("no preimport", ())):
            t = cold_start(mode, pre, args.cold)
            shown = "unavailable" if t is None else f"{t * 1e3:8.1f}ms"
            print(f"{mode + ', ' + label:36} {shown:>10}")


if __name__ == "__main__":
    main()
