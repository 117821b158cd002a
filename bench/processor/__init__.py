"""Processor throughput beside its three limits, and freshness under load, in one run.

`uv run python -m bench.processor` (see docs/performance-processor.md). It starts its own Kafka
(default JIT, warmed first), Redis and PostgreSQL with eventpipe.local in a temporary directory,
loads a topic with a realistic event set, then measures on those servers with the same data:
confluent-kafka's raw consume rate, the raw rate of the Redis step (`RedisStep.apply`, and the Lua
script alone) and of the archive (`Archive.write`) on the same batches, and the rate of
`eventpipe processor` itself. Then it profiles the processor, and measures freshness with the api
and the processor running, the load paced at half (the target's) and a quarter of the api's
maximum ingest rate. Everything it started is stopped at the end.
"""

from __future__ import annotations

from bench.processor.benchmark import run_benchmark
from bench.processor.figures import ProcessorReport
from bench.processor.result import run_bench

# run_benchmark: the whole benchmark as a function; run_bench: its entry for bench.registry.
__all__ = ["ProcessorReport", "run_bench", "run_benchmark"]
