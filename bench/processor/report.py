"""The processor benchmark's figures, printed beside their limits and targets."""

from __future__ import annotations

import os

from bench.cpu import OTHERS
from bench.harness import BENCH
from bench.processor.figures import (
    TARGET_FRESHNESS_P99_S,
    TARGET_RATIO,
    ProcessorReport,
    window_ok,
)
from bench.processor.freshness import Freshness
from bench.processor.metrics import freshness_buckets, histogram_quantile
from bench.processor.profiling import Profile
from bench.processor.rates import Rate
from bench.processor.runs import ProcessorRun, Rounds
from bench.processor.window import Window

_COMPONENTS = (BENCH, "processor", "kafka", "redis", "postgres")
_LABELS = {OTHERS: "other processes (the load generator among them)"}


def print_report(report: ProcessorReport) -> None:
    """Everything, in the order it was measured: rounds, throughput, profile, freshness."""
    report_runs(report.rounds)
    report_throughput(report)
    for label, runs in report.rounds.processors.items():
        report_correctness(label, runs, report.rounds.unique)
    if report.profile is not None:
        report_profile(report.profile)
    if report.freshness is not None:
        report_freshness(report.freshness)


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def _ms(seconds: float) -> str:
    return "> 15 s" if seconds == float("inf") else f"{seconds * 1000:.0f} ms"


def _cpu_cells(rate: Rate) -> str:
    cells = []
    for name in _COMPONENTS:
        used = rate.cpu.seconds.get(name)
        cells.append(f"{used / rate.events * 1e6:6.1f}" if used and rate.events else "     -")
    ours = sum(v for k, v in rate.cpu.seconds.items() if k != OTHERS)
    other = rate.cpu.seconds.get(OTHERS, 0.0)
    seconds = rate.seconds or 1.0
    return " ".join(cells) + f"  {ours / seconds:5.2f} {other / seconds:5.2f}"


def report_runs(rounds: Rounds) -> None:
    print("\nevery run: events/s (cores other processes took meanwhile); the best is kept")
    every = {**rounds.limits, **{k: [r.rate for r in v] for k, v in rounds.processors.items()}}
    for label, rates in every.items():
        cells = "  ".join(
            f"{r.per_s:>9,.0f} ({r.cpu.seconds.get(OTHERS, 0.0) / (r.seconds or 1):.2f})"
            for r in rates
        )
        print(f"  {label:<38}{cells}")


def report_throughput(report: ProcessorReport) -> None:
    """The rates, each processor's ratio to each limit, and the verdict for the first one."""
    limits = report.limits
    runs = {label: run.rate for label, run in report.processors.items()}
    print(
        f"\n{'':<40}{'':>10}  {'CPU us per event':^34}  cores busy\n"
        f"{'one process each':<40}{'events/s':>10}  {'bench':>6} {'procr':>6} {'kafka':>6} "
        f"{'redis':>6} {'pg':>6}  {'ours':>5} {'other':>5}"
    )
    for label, measured in [*limits.items(), *runs.items()]:
        print(f"  {label:<38}{measured.per_s:>10,.0f}  {_cpu_cells(measured)}")
    print(f"\n{'ratio to each limit':<40}" + "".join(f"{label[:22]:>24}" for label in runs))
    for label, limit in limits.items():
        cells = "".join(f"{rate.per_s / limit.per_s:>24.0%}" for rate in runs.values())
        print(f"  {label:<38}{cells}")
    slowest, floor = report.slowest_limit
    target = report.throughput
    print(
        f"\ntarget: >= {TARGET_RATIO:.0%} of the slowest limit ({slowest}, "
        f"{floor.per_s:,.0f}/s) = {target.limit:,.0f}/s: {target.value:,.0f}/s  "
        f"{_verdict(target.ok)}"
    )


def report_correctness(label: str, runs: list[ProcessorRun], unique: int) -> None:
    ok = all(run.counted == unique and run.archived == unique for run in runs)
    counted = "/".join(f"{run.counted:,}" for run in runs)
    stored = "/".join(f"{run.archived:,}" for run in runs)
    memory = max(run.redis_bytes_per_event for run in runs)
    print(
        f"exactly once, {label}: counted {counted} in Redis, archived {stored}, of {unique:,} "
        f"distinct events  {_verdict(ok)}; Redis memory kept: {memory:,.0f} bytes per event"
    )


def report_profile(profile: Profile) -> None:
    rate = profile.rate
    print(f"\nprofile of one processor under cProfile ({rate.per_s:,.0f} events/s "
          f"profiled, {rate.seconds:.0f} s)\n{profile.text}")  # fmt: skip


def _counter(window: Window, name: str) -> float:
    return window.metrics.get(f"{name}_total", 0.0)


def _histogram_line(window: Window) -> str:
    buckets = freshness_buckets(window.metrics)
    return (
        f"    its eventpipe_freshness_seconds (receivedAt -> visible, last event of each partition "
        f"batch, {buckets.get(float('inf'), 0):.0f} observations): p50 "
        f"~{histogram_quantile(buckets, 0.5) * 1000:.0f} ms  p99 "
        f"~{histogram_quantile(buckets, 0.99) * 1000:.0f} ms"
    )


def report_window(window: Window) -> None:
    paced, delays = window.paced, window.delays_s
    p99 = window.quantile(0.99)
    batches = _counter(window, "eventpipe_batches")
    events = _counter(window, "eventpipe_events_processed")
    cpu = ", ".join(
        f"{_LABELS.get(k, k)} {v / window.seconds:.2f}" for k, v in window.cpu.seconds.items()
    )
    print(
        f"\n  {window.label}: paced load {paced.events_per_s:,.0f} events/s, request p99 "
        f"{paced.latency_ms(0.99):.0f} ms, non-200 {sum(paced.errors.values())}\n"
        f"    probes, 200 -> visible in the Redis totals: {len(delays)} seen, {window.lost} not "
        f"seen within 15 s, {window.probe_failures} not acknowledged\n"
        f"      p50 {_ms(window.quantile(0.5))}  p99 {_ms(p99)}  max {_ms(window.quantile(1.0))}\n"
        f"{_histogram_line(window)}\n"
        f"    applied {window.processed / window.seconds:,.0f} events/s in the window, "
        f"{window.behind_at_end:,} behind at its end; {batches:.0f} batches of "
        f"{events / max(batches, 1):,.0f} new events on average\n"
        f"    CPU in the window (cores): {cpu}"
    )
    print(
        f"    target: p99 < {TARGET_FRESHNESS_P99_S:g} s: {_ms(p99)}  {_verdict(window_ok(window))}"
    )


def report_freshness(freshness: Freshness) -> None:
    print(
        f"\nfreshness: the api (2 workers), the processor, the servers and the load generator on "
        f"{os.cpu_count()} cores\n  api maximum, batches of 100, 32 connections: "
        f"{freshness.max_ingest.events_per_s:,.0f} events/s"
    )
    for window in freshness.windows:
        report_window(window)
