"""Prometheus metrics of the processor, served on EVENTPIPE_PROCESSOR_METRICS_PORT with its
liveness and readiness (eventpipe.core.health)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from eventpipe.core.health import Heartbeat


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # Beaten at each turn of the main loop, and of its waits while a sink is down: /healthz.
        self.heartbeat = Heartbeat()
        r = self.registry
        self.events = Counter(
            "eventpipe_events_processed", "Events counted and archived", registry=r
        )
        self.duplicates = Counter(
            "eventpipe_duplicates_dropped", "Events dropped as already seen", registry=r
        )
        self.batches = Counter("eventpipe_batches", "Batches applied", registry=r)
        self.dead_letters = Counter("eventpipe_dlq", "Poison messages sent to the DLQ", registry=r)
        self.sink_errors = Counter(
            "eventpipe_sink_errors", "Failed sink writes (retried)", ["sink"], registry=r
        )
        self.lag = Gauge(
            "eventpipe_consumer_lag", "Messages behind, per partition", ["partition"], registry=r
        )
        self.paused_partitions = Gauge(
            "eventpipe_paused_partitions", "Partitions paused while a sink is down", registry=r
        )
        self.last_commit = Gauge(
            "eventpipe_last_commit_timestamp", "Unix time of the last applied batch", registry=r
        )
        self.freshness = Histogram(
            "eventpipe_freshness_seconds",
            "From the api's acknowledgement (receivedAt) to visible in the aggregates",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
