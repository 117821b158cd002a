"""The ingest benchmark's figures, each beside its limit, and its runs as records."""

from __future__ import annotations

from collections.abc import Iterable

from bench import limits
from bench.ingest.measure import Measured, RawMeasured
from bench.results import SAME_RUN, Figure, RunRecord

PERCENTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
NAN = float("nan")


def _per_event_us(runs: Iterable[Measured], party: str) -> float:
    """µs of `party` per acknowledged event over `runs` together (NaN if not measured)."""
    runs = [run for run in runs if party in run.cpu.seconds]
    events = sum(run.result.acked_events_total for run in runs)
    return sum(run.cpu.seconds[party] for run in runs) / events * 1e6 if events else NAN


def _closed(measured: list[Measured], batch: int) -> list[Measured]:
    return [m for m in measured if m.run.batch == batch and m.run.paced is None]


def cpu_figures(measured: list[Measured], raw: RawMeasured) -> list[Figure]:
    batch_100, batch_1 = _closed(measured, 100), _closed(measured, 1)
    raw_broker = (
        raw.cpu.us_per_event("broker", raw.raw.acked) if "broker" in raw.cpu.seconds else NAN
    )
    return [
        Figure(
            "api CPU per event, batch 100",
            _per_event_us(batch_100, "api"),
            "µs",
            limits.API_US_PER_EVENT_BATCH_100,
            "API_US_PER_EVENT_BATCH_100",
            "lower",
        ),
        Figure(
            "broker CPU per record, batch 100",
            _per_event_us(batch_100, "broker"),
            "µs",
            limits.BROKER_PER_RECORD_VS_RAW * raw_broker,
            f"{SAME_RUN}: {limits.BROKER_PER_RECORD_VS_RAW:g} x the raw producer's",
            "lower",
        ),
        Figure(
            "api CPU per request, batch 1",
            _per_event_us(batch_1, "api"),
            "µs",
            limits.API_US_PER_REQUEST_BATCH_1,
            "API_US_PER_REQUEST_BATCH_1",
            "lower",
        ),
    ]


def rate_figures(measured: list[Measured]) -> list[Figure]:
    at_256 = [m for m in _closed(measured, 1) if m.run.connections == 256]
    rate = at_256[0].result.events_per_s if at_256 else NAN
    goal = limits.BATCH_1_GAIN * limits.BATCH_1_AT_256_BASELINE
    source = f"{limits.BATCH_1_GAIN:g} x {limits.BATCH_1_AT_256_BASELINE_SOURCE}"
    return [Figure("events/s, batch 1 x 256 connections", rate, "events/s", goal, source, "higher")]


def latency_figures(measured: list[Measured]) -> list[Figure]:
    figures = []
    for batch in (100, 1):
        paced = [m for m in measured if m.run.batch == batch and m.run.paced is not None]
        p99 = paced[0].result.latency_ms(0.99) if paced else NAN
        name = f"p99, batch {batch} paced at {limits.PACED_FRACTION:g} x its max"
        figures.append(
            Figure(name, p99, "ms", limits.P99_AT_HALF_MAX_MS, "P99_AT_HALF_MAX_MS", "lower")
        )
    return figures


def kept_figure(acked: int, written: int) -> Figure:
    """Every event answered 200 is in the topic: records written at least the acknowledged."""
    return Figure(
        "records in the topic / events acknowledged", written, "records", acked, SAME_RUN, "higher"
    )


def run_record(item: Measured) -> RunRecord:
    result, cpu, events = item.result, item.cpu, item.result.acked_events_total
    return RunRecord(
        label=item.run.label,
        events_per_s=result.events_per_s,
        events=events,
        batch=item.run.batch,
        connections=item.run.connections,
        paced_events_per_s=item.run.paced,
        latency_ms={name: result.latency_ms(q) for name, q in PERCENTILES.items()},
        cpu_us_per_event={party: cpu.us_per_event(party, events) for party in cpu.seconds},
        cpu_cores={party: cpu.cores(party) for party in cpu.seconds},
        processes={"api": [s / events * 1e6 if events else NAN for s in item.api_processes]},
        extra={
            "requests_per_s": result.requests_per_s,
            "non_200": float(sum(result.errors.values())),
        },
    )


def raw_record(raw: RawMeasured) -> RunRecord:
    cpu, acked = raw.cpu, raw.raw.acked
    return RunRecord(
        label="raw producer (no HTTP)",
        events_per_s=raw.raw.per_s,
        events=acked,
        cpu_us_per_event={party: cpu.us_per_event(party, acked) for party in cpu.seconds},
        cpu_cores={party: cpu.cores(party) for party in cpu.seconds},
        extra={"failed": float(raw.raw.failed), "value_bytes": raw.raw.mean_value_bytes},
    )
