"""Ingest throughput, latency and CPU per event against the raw Kafka producer, in one run.

`uv run python -m bench.ingest` or `eventpipe bench ingest` (see bench/README.md and
docs/performance.md). The modules: `plan` (the runs), `serving` (the api's command line),
`measure` (a run and its CPU), `figures` (each figure beside its limit), `bench` (the whole),
`profile` (cProfile of one worker).
"""

from __future__ import annotations

from bench.ingest.bench import run_bench
from bench.roles import start_api, stop_api
from bench.stack import api_env, bench_database, bench_topic, create_bench_key

# What other benchmarks imported from the single-module bench.ingest, kept importable.
__all__ = [
    "api_env",
    "bench_database",
    "bench_topic",
    "create_bench_key",
    "run_bench",
    "start_api",
    "stop_api",
]
