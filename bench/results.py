"""What a benchmark hands back: figures checked against limits, and the runs behind them.

Everything here turns into JSON as it is (`to_json`): `eventpipe bench` writes it to
results.json and draws its charts from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# A limit from the same run (the raw producer's rate, a run's own maximum), else a constant's name.
SAME_RUN = "same run"
Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Figure:
    """One checked figure: passed when `value` is on the `better` side of `limit` (or equal)."""

    name: str
    value: float
    unit: str
    limit: float
    limit_source: str
    better: Better

    @property
    def ratio(self) -> float:
        return self.value / self.limit if self.limit else math.inf

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.limit if self.better == "higher" else self.value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": _finite(self.ratio), "passed": self.passed}


@dataclass(frozen=True)
class RunRecord:
    """One load run: its rate, latency percentiles and the CPU each process spent per event.

    `cpu_us_per_event` has one entry per party of the CPU accounting (bench.cpu), "others"
    included; `processes` breaks a party into its processes (the api's workers), busiest first.
    """

    label: str
    events_per_s: float
    events: int
    batch: int = 0
    connections: int = 0
    paced_events_per_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_us_per_event: dict[str, float] = field(default_factory=dict)
    cpu_cores: dict[str, float] = field(default_factory=dict)
    processes: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class BenchResult:
    """A benchmark's figures and runs. `series` holds curves for the charts, each a list of
    points: "freshness" (processor) is [{"load_events_per_s", "p50_ms", "p99_ms"}, ...]."""

    benchmark: str
    figures: list[Figure] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    series: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    # Acknowledged events missing afterwards: fails the benchmark even with --quick.
    lost: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "figures": [figure.to_json() for figure in self.figures],
            "runs": [asdict(run) for run in self.runs],
            "series": self.series,
            "lost": self.lost,
            "notes": self.notes,
        }


def _finite(value: float) -> float | None:
    """JSON has no inf or nan: such a ratio is written as null."""
    return value if math.isfinite(value) else None
