"""/metrics: warmwire's status in Prometheus text format (prometheus_client), from the same
supervisor status the dashboard shows, asked at most once per ``web.status_interval``."""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, Metric,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _stats(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((s["stats"] for s in status["services"] if s["name"] == name), {}) or {}


class StatusCollector:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        status = self.snapshot.get("status")
        up = GaugeMetricFamily("warmwire_supervisor_up", "1 when the supervisor answered its status request")
        up.add_metric([], 1.0 if status else 0.0)
        yield up
        if not status:
            return
        yield from self._services(status)
        yield from self._router(_stats(status, "router"))
        yield from self._pool(_stats(status, "pool-manager"))

    def _services(self, status: dict[str, Any]) -> Iterator[Metric]:
        healthy = GaugeMetricFamily("warmwire_service_healthy", "1 when the service is healthy", labels=["service"])
        restarts = CounterMetricFamily("warmwire_service_restarts", "restarts since warmwire started", labels=["service"])
        uptime = GaugeMetricFamily("warmwire_service_uptime_seconds", "time since the service was (re)started",
                                   labels=["service"])
        for service in status["services"]:
            healthy.add_metric([service["name"]], 1.0 if service["state"] == "healthy" else 0.0)
            restarts.add_metric([service["name"]], service["restarts"])
            if service["uptime"] is not None:
                uptime.add_metric([service["name"]], service["uptime"])
        yield from (healthy, restarts, uptime)

    def _router(self, router: dict[str, Any]) -> Iterator[Metric]:
        messages = CounterMetricFamily("warmwire_messages", "messages received since the router started, by tier",
                                       labels=["tier"])
        for tier, count in router.get("tiers", {}).items():
            messages.add_metric([tier], count)
        yield messages
        histogram = router.get("latency_histogram")
        if histogram:
            latency = HistogramMetricFamily("warmwire_answer_latency_seconds",
                                            "message read -> reply sent, in the router, by tier", labels=["tier"])
            bounds = [*(str(bound) for bound in histogram["le"]), "+Inf"]
            for tier, counts in histogram["buckets"].items():
                cumulative, buckets = 0, []
                for bound, count in zip(bounds, counts):
                    cumulative += count
                    buckets.append((bound, cumulative))
                latency.add_metric([tier], buckets, histogram["sum_s"].get(tier, 0.0))
            yield latency
        jobs = router.get("jobs", {})
        for name, key, text in (("warmwire_job_queue_length", "queued", "jobs waiting for an agent slot"),
                                ("warmwire_job_queue_limit", "max_queued", "jobs that may wait before 'busy'"),
                                ("warmwire_jobs_in_flight", "in_flight", "jobs an agent is running")):
            if key in jobs:
                gauge = GaugeMetricFamily(name, text)
                gauge.add_metric([], jobs[key])
                yield gauge
        spend = router.get("spend_today", {})
        for name, key, text in (("warmwire_tokens_today", "tokens", "agents' tokens since midnight"),
                                ("warmwire_cost_usd_today", "cost_usd", "agents' estimated cost since midnight"),
                                ("warmwire_daily_budget_usd", "budget_usd", "agents' daily budget (0: none)")):
            if key in spend:
                gauge = GaugeMetricFamily(name, text)
                gauge.add_metric([], spend[key])
                yield gauge

    def _pool(self, pool: dict[str, Any]) -> Iterator[Metric]:
        if not pool:
            return
        agents = GaugeMetricFamily("warmwire_pool_agents", "agents by state", labels=["state"])
        for state in ("ready", "busy", "warming", "idle"):
            agents.add_metric([state], pool.get("pool", {}).get(state, 0))
        yield agents
        backend = InfoMetricFamily("warmwire_pool_backend", "where agents run")
        backend.add_metric([], {"backend": str(pool.get("backend", ""))})
        yield backend
        for name, key, text in (("warmwire_concurrency_limit", "limit", "agents that may run at once (measured)"),
                                ("warmwire_concurrency_max", "max_concurrency", "pool.max_concurrency")):
            if key in pool:
                gauge = GaugeMetricFamily(name, text)
                gauge.add_metric([], pool[key])
                yield gauge


def render(snapshot: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(snapshot))
    return generate_latest(registry)
