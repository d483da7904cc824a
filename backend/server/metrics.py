"""Prometheus metrics of one backend instance, on its own `CollectorRegistry`.

A registry per app (not the global default) keeps tests and several in-process apps from
sharing counters, and `/metrics` shows exactly this backend's numbers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Requests, latencies, events ingested, duplicates dropped and batches rejected."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fleetward_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fleetward_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_ingested = Counter(
            "fleetward_telemetry_events_ingested",
            "Telemetry events folded into aggregates",
            registry=self.registry,
        )
        self.batches_accepted = Counter(
            "fleetward_telemetry_batches_accepted",
            "Telemetry batches committed",
            registry=self.registry,
        )
        self.duplicates_dropped = Counter(
            "fleetward_telemetry_duplicate_batches",
            "Replayed batches acknowledged without counting again",
            registry=self.registry,
        )
        self.batches_rejected = Counter(
            "fleetward_telemetry_batches_rejected",
            "Telemetry batches refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.actions = Counter(
            "fleetward_telemetry_actions",
            "Actions agents report on decided files (quarantined, restored, deleted, denied)",
            ["action"],
            registry=self.registry,
        )

        self.ingest_waiting = Gauge(
            "fleetward_ingest_batches_waiting",
            "Telemetry batches queued for the next group commit (PostgreSQL; 0 on SQLite)",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The exposition text for `/metrics`."""
        return bytes(generate_latest(self.registry))
