"""The live stream's windows, printed beside their target."""

from __future__ import annotations

import os

from bench.cpu import OTHERS
from bench.queries.feed import LiveWindow
from bench.queries.over_http import API_WORKERS
from bench.queries.paced import PacedRun
from bench.queries.timing import verdict

TARGET_LIVE_P99_S = 1.0
_LIVE_CPU = ("api", "processor", "kafka", "redis", "postgres", "loadgen", "bench")


def _cpu_line(window: LiveWindow, events: int) -> str:
    cells = ", ".join(
        f"{name} {window.cpu.seconds.get(name, 0.0) / max(events, 1) * 1e6:.1f}"
        for name in _LIVE_CPU
    )
    others = window.cpu.seconds.get(OTHERS, 0.0) / max(window.seconds, 1e-9)
    return f"    CPU us per event: {cells}; other processes {others:.2f} cores"


def _load_line(window: LiveWindow, run: PacedRun) -> str:
    errors = sum(n for status, n in run.statuses.items() if status != 200)
    latency = (
        run.latencies_ms[round(0.99 * (len(run.latencies_ms) - 1))] if run.latencies_ms else 0.0
    )
    elapsed = run.window[1] - run.window[0]
    return (
        f"  {window.label}: paced {run.window_events / elapsed:,.0f} events/s, request p99 "
        f"{latency:.0f} ms, non-200 {errors}"
    )


def report_window(window: LiveWindow) -> bool:
    if window.failure or window.run is None or window.feed is None:
        print(f"  {window.label}: not measured: {window.failure}  MISSED")
        return False
    run, feed = window.run, window.feed
    behind = max(0, run.acked_events - feed.counted)
    print(
        f"{_load_line(window, run)}\n"
        f"    the stream: {feed.entries:,} entries counting {feed.counted:,} events of "
        f"{run.acked_events:,} acknowledged ({behind:,} missing 30 s after the load), "
        f"{len(feed.arrived):,} events shown, {len(window.delays):,} of them matched\n"
        f"    delay p50 {window.q(0.5) * 1000:.0f} ms  p99 {window.q(0.99) * 1000:.0f} ms  max "
        f"{window.q(1.0) * 1000:.0f} ms\n"
        f"{_cpu_line(window, run.acked_events)}"
    )
    ok = bool(window.delays) and not behind and window.q(0.99) < TARGET_LIVE_P99_S
    print(
        f"    target: p99 < {TARGET_LIVE_P99_S:g} s: {window.q(0.99):.2f} s"
        f"{' (events missing: not all measured)' if behind else ''}  {verdict(ok)}"
    )
    return ok


def report_live(maximum: float, measured: bool, windows: list[LiveWindow]) -> bool:
    how = "measured: batches of 100, 32 connections" if measured else "given by --rate"
    print(
        f"\nlive stream: a request's 200 -> its events' line on GET /api/projects/{{id}}/live "
        f"(api {API_WORKERS} workers, processor, Kafka, Redis, PostgreSQL, load generator on "
        f"{os.cpu_count()} cores)\n  the api's maximum ingest rate: {maximum:,.0f} events/s ({how})"
    )
    verdicts = [report_window(window) for window in windows]
    return verdicts[0] if verdicts else False
