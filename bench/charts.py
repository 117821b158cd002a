"""PNG charts of a bench session (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")

from matplotlib import pyplot as plt
from matplotlib.axes import Axes

from bench.results import BenchResult, RunRecord
from bench.table import parties

Draw = Callable[[Axes, list[RunRecord]], None]
T = TypeVar("T")


def _loads(runs: list[RunRecord]) -> list[RunRecord]:
    """Runs through the api (batch > 0), closed loop: the throughput curves."""
    return [run for run in runs if run.batch and run.paced_events_per_s is None]


def throughput(ax: Axes, runs: list[RunRecord]) -> None:
    for batch in sorted({run.batch for run in _loads(runs)}, reverse=True):
        points = sorted((r.connections, r.events_per_s) for r in _loads(runs) if r.batch == batch)
        ax.plot(*zip(*points, strict=True), marker="o", label=f"batch {batch}")
    ax.set(xlabel="connections", ylabel="events/s", title="Throughput against connections")
    ax.set_xscale("log", base=2)
    ax.legend()


def latency(ax: Axes, runs: list[RunRecord]) -> None:
    runs = [run for run in runs if run.latency_ms]
    width = 0.27
    for n, name in enumerate(("p50", "p90", "p99")):
        values = [_finite(run.latency_ms.get(name, 0.0)) for run in runs]
        ax.bar([i + (n - 1) * width for i in range(len(runs))], values, width, label=name)
    _labels(ax, runs)
    ax.set(ylabel="ms (log)", title="Latency percentiles per run")
    ax.set_yscale("log")
    ax.legend()


def cpu(ax: Axes, runs: list[RunRecord]) -> None:
    runs = [run for run in runs if run.cpu_us_per_event]
    bottom = [0.0] * len(runs)
    for party in parties(runs):
        values = [_finite(run.cpu_us_per_event.get(party, 0.0)) for run in runs]
        ax.bar(range(len(runs)), values, bottom=bottom, label=party)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    _labels(ax, runs)
    ax.set(ylabel="CPU µs per event (log)", title="CPU per event per process")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.legend(fontsize="small")


def _labels(ax: Axes, runs: list[RunRecord]) -> None:
    ax.set_xticks(range(len(runs)), [run.label for run in runs], rotation=30, ha="right")


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def freshness(ax: Axes, points: list[dict[str, float]]) -> None:
    ordered = sorted(points, key=lambda point: point["load_events_per_s"])
    loads = [point["load_events_per_s"] for point in ordered]
    for name in ("p50_ms", "p99_ms"):
        ax.plot(loads, [point[name] for point in ordered], marker="o", label=name[:3])
    ax.set(xlabel="load, events/s", ylabel="freshness, ms", title="Freshness against load")
    ax.legend()


def _save(path: Path, draw: Callable[[Axes, T], None], data: T) -> Path:
    figure, ax = plt.subplots(figsize=(10, 6))
    try:
        draw(ax, data)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path


CHARTS: dict[str, Draw] = {
    "throughput.png": throughput,
    "latency.png": latency,
    "cpu_per_event.png": cpu,
}


def draw_charts(output: Path, results: list[BenchResult]) -> list[Path]:
    """One PNG per chart that some result has data for; the paths written."""
    runs = [run for result in results for run in result.runs]
    written = []
    for name, draw in CHARTS.items():
        if runs and (name != "throughput.png" or _loads(runs)):
            written.append(_save(output / name, draw, runs))
    points = [p for result in results for p in result.series.get("freshness", [])]
    if points:
        written.append(_save(output / "freshness.png", freshness, points))
    return written
