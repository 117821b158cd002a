"""Which load runs the ingest benchmark makes, and how long each lasts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    label: str
    batch: int
    connections: int
    # Paced at this many events/s in all; None: as fast as the api answers (closed loop).
    paced: float | None = None


@dataclass(frozen=True)
class Windows:
    """Seconds of each part; `quick` windows only show that every figure is produced."""

    run_s: float
    warmup_s: float
    raw_s: float
    broker_warmup_s: float


FULL = Windows(run_s=15.0, warmup_s=3.0, raw_s=10.0, broker_warmup_s=25.0)
QUICK = Windows(run_s=2.0, warmup_s=0.0, raw_s=2.0, broker_warmup_s=0.0)

# Throughput against connections (batches of 100), single events at the baseline's 256
# connections, and a batch of 10 between the two.
MAX_RUNS = (
    Run("batch 100 x 16", 100, 16),
    Run("batch 100 x 32", 100, 32),
    Run("batch 100 x 64", 100, 64),
    Run("batch 10 x 32", 10, 32),
    Run("batch 1 x 64", 1, 64),
    Run("batch 1 x 256", 1, 256),
)
# Paced sends go out on schedule, and each latency counts from its scheduled time: enough
# connections that one slow answer does not hold back the requests due after it.
PACED_CONNECTIONS = 64


def paced_run(batch: int, max_events_per_s: float, fraction: float) -> Run:
    """The latency run of `batch`: paced at `fraction` of the maximum that batch reached."""
    label = f"batch {batch} paced at {fraction:g} x max"
    return Run(label, batch, PACED_CONNECTIONS, fraction * max_events_per_s)
