"""The ingest benchmark: the raw producer, then the api under every run of the plan."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench import limits
from bench.cpu import CpuMeter
from bench.harness import scratch_dir
from bench.ingest.figures import (
    cpu_figures,
    kept_figure,
    latency_figures,
    rate_figures,
    raw_record,
    run_record,
)
from bench.ingest.measure import (
    Measured,
    RawMeasured,
    Target,
    measure,
    measure_raw_producer,
    parties,
)
from bench.ingest.plan import FULL, MAX_RUNS, QUICK, Windows, paced_run
from bench.ingest.serving import api_command, describe
from bench.rawkafka import measure_raw, sample_records
from bench.registry import BenchOptions
from bench.results import BenchResult
from bench.roles import Clock, start_api, stop_api
from bench.stack import BenchStack, bench_stack, topic_records

PREFIX = "eventpipe-bench-ingest-"


def run_bench(options: BenchOptions) -> BenchResult:
    """The registry's entry: every run of the plan, with the servers of bench.stack."""
    windows = QUICK if options.quick else FULL
    with scratch_dir(PREFIX, options.output / "logs" / "ingest") as tmp, bench_stack(tmp) as stack:
        return measure_ingest(stack, windows, api_command(options.api_command), tmp)


def measure_ingest(
    stack: BenchStack, windows: Windows, command: Sequence[str], tmp: Path
) -> BenchResult:
    clock = Clock()
    clock.say(
        f"servers ready (started here: {', '.join(stack.started_here) or 'none'}); "
        f"CPU counted for {', '.join(sorted(stack.server_pids)) or 'no server'}"
    )
    raw = raw_producer(stack, windows, clock)
    before = topic_records(stack.urls.kafka_bootstrap, stack.topic)
    api = start_api(command, stack.env, tmp / "api.log", stack.port)
    clock.say(f"api ready: {describe(command)}")
    try:
        meter = CpuMeter(parties(stack.server_pids, api.pid))
        measured = load_api(Target(stack.url, stack.write_key, api.pid, meter), windows, clock)
    finally:
        stop_api(api)
    written = topic_records(stack.urls.kafka_bootstrap, stack.topic) - before
    acked = sum(item.result.acked_events_total for item in measured)
    return BenchResult(
        "ingest",
        figures=[
            *cpu_figures(measured, raw),
            *rate_figures(measured),
            *latency_figures(measured),
            kept_figure(acked, written),
        ],
        runs=[raw_record(raw), *(run_record(item) for item in measured)],
        lost=max(acked - written, 0),
        notes=[f"api command: {describe(command)}"],
    )


def raw_producer(stack: BenchStack, windows: Windows, clock: Clock) -> RawMeasured:
    """Warm the broker (uncounted), then the raw producer's rate and its broker CPU."""
    bootstrap, topic = stack.urls.kafka_bootstrap, stack.topic
    records = sample_records(20_000, project_id=stack.project_id)
    if windows.broker_warmup_s:
        warm = measure_raw(bootstrap, topic, records, windows.broker_warmup_s)
        clock.say(f"broker warmed by {warm.seconds:.0f} s of raw produce ({warm.per_s:,.0f}/s)")
    meter = CpuMeter(parties(stack.server_pids, None))
    raw = measure_raw_producer(bootstrap, topic, records, windows.raw_s, meter)
    clock.say(f"raw producer: {raw.raw.per_s:,.0f} records/s, {raw.raw.failed} failed")
    return raw


def load_api(target: Target, windows: Windows, clock: Clock) -> list[Measured]:
    """The closed-loop runs, then each batch paced at half the maximum it reached."""
    measured = []
    for run in MAX_RUNS:
        measured.append(measure(run, target, windows))
        clock.say(f"{run.label}: {measured[-1].result.events_per_s:,.0f} events/s")
    for batch in (100, 1):
        best = max(m.result.events_per_s for m in measured if m.run.batch == batch)
        if best <= 0:
            clock.say(f"batch {batch} had no answer: no paced run")
            continue
        run = paced_run(batch, best, limits.PACED_FRACTION)
        measured.append(measure(run, target, windows))
        clock.say(f"{run.label}: p99 {measured[-1].result.latency_ms(0.99):.1f} ms")
    return measured
