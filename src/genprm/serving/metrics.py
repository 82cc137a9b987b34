"""Prometheus metrics of one server, in a registry of its own (no process-wide state).

Requests and their latency are counted as they finish; queue depth, solutions in flight, tokens and
cache hits are read from the service and the engine when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from genprm.engines.base import Engine
from genprm.serving.service import VerificationService

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 120, 180, 300)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _ServiceCollector(Collector):
    def __init__(self, service: VerificationService, engine: Engine) -> None:
        self.service = service
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        service, stats = self.service, self.service.stats
        yield GaugeMetricFamily("genprm_queue_depth", "Solutions waiting for a worker.", value=service.queued)
        yield GaugeMetricFamily("genprm_solutions_running", "Solutions being verified.", value=service.running)
        solutions = CounterMetricFamily("genprm_solutions", "Solutions handled, by outcome.", labels=["outcome"])
        for outcome, value in (("verified", stats.verified), ("cached", stats.cached), ("joined", stats.joined),
                               ("failed", stats.failed), ("cancelled", stats.cancelled),
                               ("rejected", stats.rejected)):
            solutions.add_metric([outcome], value)
        yield solutions
        yield CounterMetricFamily("genprm_cache_hits", "Solutions answered from the store or joined in flight.",
                                  value=stats.cached + stats.joined)
        engine = self.engine.stats
        tokens = CounterMetricFamily("genprm_tokens", "Tokens the engine processed, by kind.", labels=["kind"])
        tokens.add_metric(["generated"], engine.completion_tokens)
        tokens.add_metric(["prompt"], engine.prompt_tokens)
        tokens.add_metric(["prompt_cached"], engine.cached_prompt_tokens)
        yield tokens
        yield CounterMetricFamily("genprm_engine_requests", "Requests the engine served.", value=engine.requests)


class ServerMetrics:
    """The counters the HTTP layer updates, and the Prometheus text of everything."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("genprm_requests", "HTTP requests, by endpoint and status.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("genprm_request_seconds", "Request latency, by endpoint.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.deadline_misses = Counter("genprm_deadline_misses", "Requests answered 504: past their deadline.",
                                       registry=self.registry)
        self.disconnects = Counter("genprm_disconnects", "Requests whose client went away before the answer.",
                                   registry=self.registry)
        self.template_misses = Counter("genprm_problem_template_misses",
                                       "Prompts the problem template did not match (the user turn was used).",
                                       registry=self.registry)

    def watch(self, service: VerificationService, engine: Engine) -> None:
        self.registry.register(_ServiceCollector(service, engine))

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
