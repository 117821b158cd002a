"""The worker's Prometheus metrics: jobs by outcome, their durations, and the queue's depth
(read from PostgreSQL at each scrape, so every worker reports the same shared queue)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DEPTH_QUERY = (
    "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
    "WHERE status IN ('todo', 'doing', 'failed') GROUP BY 1, 2"
)


class QueueDepth(Collector):
    def __init__(self, conninfo: str, timeout_s: float) -> None:
        self.conninfo, self.timeout_s = conninfo, timeout_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "eventpipe_jobs_queued",
            "Jobs in the queue by queue and status (todo: waiting, doing: running, failed: "
            "dead-lettered)",
            labels=["queue", "status"],
        )
        try:
            with psycopg.connect(self.conninfo, connect_timeout=max(1, int(self.timeout_s))) as db:
                rows = db.execute(DEPTH_QUERY).fetchall()
        except psycopg.Error:
            rows = []  # a scrape during an outage shows no depth rather than failing whole
        for queue, status, count in rows:
            family.add_metric([queue, status], count)
        yield family


class JobMetrics:
    def __init__(self, registry: CollectorRegistry, conninfo: str, timeout_s: float) -> None:
        self.outcomes = Counter(
            "eventpipe_jobs", "Job attempts by task and outcome (succeeded, failed, handed_back)",
            ["task", "outcome"], registry=registry,
        )  # fmt: skip
        self.durations = Histogram(
            "eventpipe_job_duration_seconds", "How long job attempts ran, by task", ["task"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200), registry=registry,
        )  # fmt: skip
        registry.register(QueueDepth(conninfo, timeout_s))
