"""`eventpipe processor` itself on the loaded topic, and the rounds of every measure."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psycopg
import redis

from bench.cpu import CpuMeter, cpu_between
from bench.processor.context import Context, fresh_database, role_env, with_src
from bench.processor.data import PARTITIONS
from bench.processor.rates import Rate, consume_all, measure_limits
from bench.processor.topic import stored_offsets
from bench.roles import start_role
from eventpipe.core.config import Settings
from eventpipe.domain.keys import ALL, totals_key
from eventpipe.local.process import ManagedProcess
from eventpipe.processor.batch import split


def watch_processor(client: redis.Redis, env: dict[str, str], ends: list[int],
                    process: ManagedProcess, meter: CpuMeter, limit_s: float) -> Rate:  # fmt: skip
    """Poll its stored offsets until every partition is done (or `limit_s` after it began).

    The window runs from the first progress seen to the last: joining the group and the first
    batch are not counted, as for the raw consumer.
    """
    total, first, started = sum(ends), 0, 0.0
    deadline, before = time.monotonic() + 120, meter.sample()
    while True:
        done = sum(stored_offsets(client, env))
        now = time.perf_counter()
        if done and not started:
            first, started, before = done, now, meter.sample()
            deadline = time.monotonic() + limit_s
        if done >= total or time.monotonic() > deadline:
            cpu = cpu_between(before, meter.sample())
            return Rate(done - first, now - started, cpu) if started else Rate(0, 0.0)
        if not process.alive():
            raise process.failure(f"exited with status {process.popen.returncode}")
        time.sleep(0.02)


def redis_totals(client: redis.Redis, project_id: str) -> dict[str, int]:
    merged: dict[str, int] = {}
    for partition in range(PARTITIONS):
        answer = cast(dict[bytes, bytes], client.hgetall(totals_key(partition, project_id)))
        for name, count in answer.items():
            text = name.decode()
            merged[text] = merged.get(text, 0) + int(count)
    return merged


def archived(database_url: str) -> int:
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def used_memory(client: redis.Redis) -> int:
    return int(cast(dict[str, Any], client.info("memory"))["used_memory"])


@dataclass(frozen=True)
class ProcessorRun:
    rate: Rate
    counted: int
    archived: int
    redis_bytes_per_event: float


def run_processor_once(
    ctx: Context, database_url: str, ends: list[int], src: Path | None = None
) -> ProcessorRun:
    """`eventpipe processor` on the loaded topic; from the source tree `src` if given (an A/B)."""
    ctx.redis.flushall()
    memory_before = used_memory(ctx.redis)
    env = with_src(role_env(ctx.urls, database_url, ctx.topic, ctx.tmp), src)
    log_path = ctx.tmp / ("processor.log" if src is None else "processor-compare.log")
    process = start_role("processor", ["-m", "eventpipe", "processor"], env, log_path)
    try:
        meter = ctx.meter({"processor": process.pid})
        rate = watch_processor(ctx.redis, env, ends, process, meter, ctx.args.limit_seconds)
    finally:
        process.stop(30)
    memory = used_memory(ctx.redis) - memory_before
    counted = redis_totals(ctx.redis, ctx.project_id).get(ALL, 0)
    return ProcessorRun(rate, counted, archived(database_url), memory / max(counted, 1))


@dataclass
class Rounds:
    """Every run of every measure; `--repeat` rounds, interleaved, so each sees the same noise."""

    limits: dict[str, list[Rate]] = field(default_factory=dict)
    processors: dict[str, list[ProcessorRun]] = field(default_factory=dict)
    unique: int = 0

    def best_limits(self) -> dict[str, Rate]:
        return {k: max(v, key=lambda r: r.per_s) for k, v in self.limits.items()}

    def best_processors(self) -> dict[str, ProcessorRun]:
        return {k: max(v, key=lambda r: r.rate.per_s) for k, v in self.processors.items()}


def run_rounds(ctx: Context, ends: list[int]) -> Rounds:
    """Other jobs on a shared machine only ever slow a run down, so the best of each measure is
    the one they disturbed least; every run is listed with the cores they took meanwhile."""
    bootstrap, total = ctx.urls.kafka_bootstrap, sum(ends)
    batch_size = Settings().processor_batch_size
    sources = ctx.sources()
    rounds, batches = Rounds(), None
    consume_all(bootstrap, ctx.topic, total, batch_size, ctx.meter())  # warm-up pass
    for turn in range(ctx.args.repeat):
        ctx.clock.say(f"round {turn + 1} of {ctx.args.repeat}: the three limits")
        consumed, chunks = consume_all(bootstrap, ctx.topic, total, batch_size, ctx.meter())
        if batches is None:  # the first round's batches, decoded once, serve every round
            batches = [split(chunk) for chunk in chunks]
            rounds.unique = len(
                {r.message_id for b in batches for w in b.partitions.values() for r in w.records}
            )
        rounds.limits.setdefault("kafka: raw consume", []).append(consumed)
        for label, rate in measure_limits(ctx, batches, turn).items():
            rounds.limits.setdefault(label, []).append(rate)
        for n, (label, src) in enumerate(sources.items()):
            ctx.clock.say(f"round {turn + 1} of {ctx.args.repeat}: {label}")
            database_url = fresh_database(ctx.urls, f"bench_processor_{turn}_{n}")
            run = run_processor_once(ctx, database_url, ends, src)
            rounds.processors.setdefault(label, []).append(run)
    return rounds
