"""Load on ``genprm serve``: K concurrent OpenRLHF-style clients against the real server on loopback.

    python bench/serve_load.py --model smollm2-135m-instruct [--clients 1,8,32] [--requests 2] [--n 1]
        [--max-step-tokens 24] [--max-steps 4] [--engine llamacpp] [--threads 2] [--out results.json]

The samples are real policy responses (``../shared/data/bon/math_cot_100.jsonl``, Qwen2.5-Math's
chain-of-thought samples: question, 8 responses, gold answer), rendered as OpenRLHF sends them: the
prompt is the policy's ChatML turn (the Qwen math system prompt and the question), the query is
prompt + response + ``<|im_end|>``, the label the gold answer. Responses with more than
``--max-steps`` paragraphs are left out to bound the work per request; the samples are taken in
file order, each distinct.

For each K in ``--clients``, a fresh engine and server (an empty store, so nothing is answered from
a cache) first answer ``--warmup`` unmeasured requests (samples from the end of the pool: the
sandbox's workers start and the engine caches the system prompt, as on a server that has been up a
while), then take K clients, each sending ``--requests`` requests one after another (K x M distinct
samples, the first of the pool). Then the same K x M samples of the largest K are verified offline
by :class:`~genprm.verifier.scheduler.Scheduler` in this process, on a fresh engine with the
server's paths in flight, no more solutions in flight than the server had (K, or its solution
workers if fewer), and the same warm-up. One markdown table: solutions/s and steps/s (of the
requests answered 200), p50/p95/p99 latency, errors and requests past the deadline, the machine's
load average before and after each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import genprm  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx

from genprm.engines import load_engine
from genprm.io import validate_record
from genprm.protocol.parse import split_paragraphs
from genprm.serving import ServeConfig, uvicorn_config
from genprm.verifier import SolutionVerifier, VerifyConfig
from genprm.verifier.scheduler import Scheduler

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bon" / "math_cot_100.jsonl"
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Sample:
    prompt: str
    query: str
    label: str
    problem: str
    steps: list[str]


@dataclass
class Row:
    name: str
    clients: int
    requests: int
    steps: int
    wall_s: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    deadline_misses: int = 0
    answered_steps: int = -1
    """Steps of the requests answered 200 (-1: all of them)."""
    load: str = ""

    @property
    def solutions_per_s(self) -> float:
        """Solutions answered (200) per second of the run's wall time."""
        return (self.requests - self.errors) / self.wall_s

    @property
    def steps_per_s(self) -> float:
        return (self.steps if self.answered_steps < 0 else self.answered_steps) / self.wall_s

    def quantile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_samples(path: Path, max_steps: int) -> list[Sample]:
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{record['question']}<|im_end|>\n"
                  "<|im_start|>assistant\n")
        for response in record["response"]:
            steps = split_paragraphs(response)
            if 1 <= len(steps) <= max_steps:
                samples.append(Sample(prompt, prompt + response + "<|im_end|>", str(record["gt"]),
                                      record["question"], steps))
    return samples


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


class Served:
    """A server on a free loopback port in a thread (uvicorn), around an engine started by the bench."""

    def __init__(self, config: ServeConfig, engine: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn_config(config, engine, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(300)


async def warm_up(url: str, samples: list[Sample]) -> None:
    """Unmeasured requests first (other samples than the measured ones): the sandbox's warm workers
    start and the engine's cache holds the system prompt, as on a server that has been up a while.
    """
    async with httpx.AsyncClient(timeout=600) as http:
        for sample in samples:
            answer = await http.post(f"{url}/get_reward", json={"query": [sample.query], "prompts": [sample.prompt]})
            answer.raise_for_status()


async def drive(url: str, samples: list[Sample], clients: int, per_client: int, deadline_s: float) -> Row:
    """K clients, each sending its M samples one request at a time, as OpenRLHF's executors do."""
    row = Row("server", clients, clients * per_client, sum(len(s.steps) for s in samples), 0.0, answered_steps=0)
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=max(180.0, deadline_s + 30), limits=limits) as http:

        async def client(mine: list[Sample]) -> None:
            for sample in mine:
                started = time.perf_counter()
                try:
                    answer = await http.post(f"{url}/get_reward", json={
                        "query": [sample.query], "prompts": [sample.prompt], "labels": [sample.label]})
                    status = answer.status_code
                except httpx.HTTPError:
                    status = 0
                took = time.perf_counter() - started
                row.latencies.append(took)
                if status == 504 or took > deadline_s:
                    row.deadline_misses += 1
                if status != 200:
                    row.errors += 1
                else:
                    row.answered_steps += len(sample.steps)

        started = time.perf_counter()
        await asyncio.gather(*(client(samples[k * per_client : (k + 1) * per_client]) for k in range(clients)))
        row.wall_s = time.perf_counter() - started
    return row


def offline(args: argparse.Namespace, config: ServeConfig, samples: list[Sample], warm: list[Sample],
            clients: int) -> Row:
    """The same samples verified by the Scheduler in this process, no HTTP (after the same warm-up)."""
    engine = make_engine(args)
    verify = config.verify

    def items(of: list[Sample]) -> list[Any]:
        return [validate_record({"problem": s.problem, "steps": s.steps}, position=i) for i, s in enumerate(of)]

    # as the server at the largest K: its paths in flight, and no more solutions in flight than it had
    # (its solution workers, or the K requests open at a time, whichever is fewer)
    paths = config.paths_in_flight(engine.name, engine.max_batch)
    in_flight = min(clients, paths // verify.n + 1)
    scheduler = Scheduler(SolutionVerifier(engine, verify), concurrency=paths, solutions_in_flight=in_flight)
    failures: list[Any] = []
    try:
        scheduler.run(items(warm), lambda _: None, on_failure=failures.append)
        failures.clear()
        started = time.perf_counter()
        scheduler.run(items(samples), lambda _: None, on_failure=failures.append)
    finally:
        scheduler.close()
        engine.close()
    wall = time.perf_counter() - started
    return Row("offline scheduler", 0, len(samples), sum(len(s.steps) for s in samples), wall, errors=len(failures))


def make_engine(args: argparse.Namespace) -> Any:
    """The engine under test; ``--engine scripted`` is a stand-in whose every call takes ``--call-ms``
    whatever else runs (an engine with spare batch capacity), to measure the server's own overhead.
    """
    if args.engine != "scripted":
        return load_engine(args.engine, args.model, **engine_options(args))
    from genprm.engines.scripted import ScriptedEngine

    def respond(prompt: str, request: Any) -> str:
        time.sleep(args.call_ms / 1000)
        return " the step follows from the previous one.\n</analyze>\n"

    def verdict(prompt: str) -> tuple[float, float]:
        time.sleep(args.call_ms / 1000)
        return -0.2, -1.7

    return ScriptedEngine(respond=respond, verdict=verdict, max_batch=256)


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"n_threads": args.threads} if args.engine == "llamacpp" and args.threads else {}


def table(rows: list[Row], args: argparse.Namespace) -> str:
    header = ("| run | K clients | requests | solutions/s | steps/s | p50 s | p95 s | p99 s | errors | past deadline "
              "| load avg (1/5/15 min) |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for row in rows:
        q = [row.quantile(x) for x in (0.5, 0.95, 0.99)]
        cells = [f"{v:.1f}" if v is not None else "–" for v in q]
        lines.append(f"| {row.name} | {row.clients or '–'} | {row.requests} | {row.solutions_per_s:.3f} | "
                     f"{row.steps_per_s:.2f} | {' | '.join(cells)} | {row.errors} | {row.deadline_misses} | "
                     f"{row.load} |")
    served = [r for r in rows if r.name == "server"]
    off = next((r for r in rows if r.name == "offline scheduler"), None)
    notes = []
    if len(served) > 1:
        notes.append(f"K={served[-1].clients} vs K={served[0].clients}: "
                     f"{served[-1].solutions_per_s / served[0].solutions_per_s:.2f}x solutions/s, "
                     f"{served[-1].steps_per_s / served[0].steps_per_s:.2f}x steps/s")
    if off is not None and served:
        notes.append(f"server at K={served[-1].clients} / offline scheduler (same samples): "
                     f"{served[-1].steps_per_s / off.steps_per_s:.0%} of its steps/s")
    model = f"{args.model} on {args.engine}"
    if args.engine == "scripted":
        model = f"scripted engine ({args.call_ms:g} ms per call)"
    setting = (f"{model}, N={args.n}, mode {args.mode}, max {args.max_step_tokens} tokens per "
               f"step, responses of at most {args.max_steps} steps, {args.requests} request(s) per client, "
               f"{args.paths} paths in flight")
    return "\n".join([setting, "", *lines, "", *notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--engine", default="llamacpp")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--call-ms", type=float, default=50.0, help="--engine scripted: milliseconds per call.")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests", type=int, default=2, help="Requests per client (M).")
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--mode", default="full")
    parser.add_argument("--max-step-tokens", type=int, default=24)
    parser.add_argument("--max-steps", type=int, default=4, help="Use responses of at most this many steps.")
    parser.add_argument("--concurrency", type=int, default=None, help="Paths in flight (default: the server's).")
    parser.add_argument("--deadline", type=float, default=150.0)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--warmup", type=int, default=1, help="Unmeasured requests before each run.")
    parser.add_argument("--no-offline", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    ks = [int(k) for k in args.clients.split(",")]
    pool = load_samples(args.data, args.max_steps)
    needed = max(ks) * args.requests
    if len(pool) < needed + args.warmup:
        sys.exit(f"only {len(pool)} responses have at most {args.max_steps} steps; need {needed + args.warmup}")
    warm = pool[len(pool) - args.warmup :] if args.warmup else []
    verify = VerifyConfig(n=args.n, mode=args.mode, max_step_tokens=args.max_step_tokens)
    config = ServeConfig(model=args.model, engine=args.engine, engine_options=engine_options(args), verify=verify,
                         concurrency=args.concurrency, deadline_s=args.deadline, max_queue=max(256, needed), port=0)
    rows: list[Row] = []
    for k in ks:
        samples = pool[: k * args.requests]
        engine = make_engine(args)
        args.paths = config.paths_in_flight(engine.name, engine.max_batch)
        before = load_average()
        try:
            with Served(config, engine) as url:
                asyncio.run(warm_up(url, warm))
                row = asyncio.run(drive(url, samples, k, args.requests, args.deadline))
        finally:
            engine.close()
        row.load = f"{before} → {load_average()}"
        rows.append(row)
        print(f"K={k}: {row.requests} requests in {row.wall_s:.1f} s", file=sys.stderr, flush=True)
    if not args.no_offline:
        before = load_average()
        row = offline(args, config, pool[: max(ks) * args.requests], warm, max(ks))
        row.load = f"{before} → {load_average()}"
        rows.append(row)
        print(f"offline: {row.requests} solutions in {row.wall_s:.1f} s", file=sys.stderr, flush=True)
    print(table(rows, args))
    if args.out is not None:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "rows": [asdict(r) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
