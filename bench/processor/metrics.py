"""The processor's /metrics: its samples, its freshness histogram, Prometheus' quantile estimate."""

from __future__ import annotations

import httpx


def scrape(port: str) -> dict[str, float]:
    """The processor's /metrics: `name{labels}` -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = (
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    return {name: float(value) for name, value in samples}


def freshness_buckets(samples: dict[str, float]) -> dict[float, float]:
    """Cumulative counts of eventpipe_freshness_seconds, by upper bound."""
    prefix = 'eventpipe_freshness_seconds_bucket{le="'
    return {
        float(name[len(prefix) :].split('"')[0]): value
        for name, value in samples.items()
        if name.startswith(prefix)
    }


def histogram_quantile(buckets: dict[float, float], q: float) -> float:
    """Prometheus' estimate: linear inside the bucket where the q-th observation falls."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if not total:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(buckets[bound] - below, 1e-9)
        lower, below = bound, buckets[bound]
    return lower
