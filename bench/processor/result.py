"""The processor benchmark as `eventpipe bench` runs it: `run_bench(options) -> BenchResult`."""

from __future__ import annotations

import math

from bench.processor.benchmark import run_benchmark
from bench.processor.cli import parse_args
from bench.processor.figures import ProcessorReport, Target
from bench.processor.rates import Rate
from bench.processor.window import Window
from bench.registry import BenchOptions
from bench.results import SAME_RUN, BenchResult, Figure, RunRecord


def run_bench(options: BenchOptions) -> BenchResult:
    args = parse_args(["--quick"] if options.quick else [])
    return bench_result(run_benchmark(args))


def bench_result(report: ProcessorReport) -> BenchResult:
    runs = {**report.limits, **{k: v.rate for k, v in report.processors.items()}}
    windows = report.freshness.windows if report.freshness else []
    return BenchResult(
        benchmark="processor",
        figures=[_figure(target) for target in report.targets],
        runs=[_rate_record(label, rate) for label, rate in runs.items()]
        + [_window_record(window) for window in windows],
        series={
            "freshness": [
                {
                    "load_events_per_s": p.load_events_per_s,
                    "p50_ms": p.p50_s * 1000,
                    "p99_ms": p.p99_s * 1000,
                }
                for p in report.points
            ]
        },  # fmt: skip
        lost=_lost(report),
    )


def _figure(target: Target) -> Figure:
    if target.unit == "s":  # the freshness target: in ms, as the charts show it
        return Figure(target.name, target.value * 1000, "ms", target.limit * 1000,
                      "TARGET_FRESHNESS_P99_S", "lower")  # fmt: skip
    if target.unit == "events":  # exactly once: events counted or archived other than once
        return Figure(target.name, target.value, "events", 0.0, "exactly once", "lower")
    return Figure(target.name, target.value, target.unit, target.limit, SAME_RUN, "higher")


def _cpu(rate: Rate) -> tuple[dict[str, float], dict[str, float]]:
    use = rate.cpu
    return (
        {party: use.us_per_event(party, rate.events) for party in use.seconds},
        {party: use.cores(party) for party in use.seconds},
    )


def _rate_record(label: str, rate: Rate) -> RunRecord:
    per_event, cores = _cpu(rate)
    return RunRecord(label, rate.per_s, rate.events, cpu_us_per_event=per_event, cpu_cores=cores)


def _window_record(window: Window) -> RunRecord:
    applied = Rate(window.processed, window.seconds, window.cpu)
    per_event, cores = _cpu(applied)
    p50, p99 = window.quantile(0.5) * 1000, window.quantile(0.99) * 1000
    return RunRecord(
        window.label, applied.per_s, window.processed,
        paced_events_per_s=window.paced.events_per_s,
        latency_ms={"p50": p50, "p99": p99 if math.isfinite(p99) else -1.0},
        cpu_us_per_event=per_event, cpu_cores=cores,
    )  # fmt: skip


def _lost(report: ProcessorReport) -> int:
    """Distinct events that a run neither counted nor archived."""
    unique = report.rounds.unique
    runs = [run for each in report.rounds.processors.values() for run in each]
    return max((max(0, unique - min(r.counted, r.archived)) for r in runs), default=0)
