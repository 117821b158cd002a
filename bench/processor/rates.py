"""The raw rates: Kafka's consume, the Redis step, the Lua script and the archive, each on
the same batches the processor makes (decoded beforehand, outside the clock)."""

from __future__ import annotations

import contextlib
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
from confluent_kafka import Consumer, Message

from bench.cpu import CpuMeter, CpuUse, cpu_between
from bench.processor.context import Context, fresh_database
from eventpipe.core.config import Settings
from eventpipe.core.kafka import consumer_config
from eventpipe.domain.keys import offset_field, offsets_key
from eventpipe.processor.aggregate import plan_step
from eventpipe.processor.archive import Archive, archive_row
from eventpipe.processor.batch import Batch
from eventpipe.processor.sinks import STEP_SCRIPT, RedisStep


@dataclass(frozen=True)
class Rate:
    """Events handled in a window, and the CPU each party used in it."""

    events: int
    seconds: float
    cpu: CpuUse = field(default_factory=lambda: CpuUse(0.0, {}))

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def consume_all(bootstrap: str, topic: str, total: int, batch_size: int,
                meter: CpuMeter) -> tuple[Rate, list[list[Message]]]:  # fmt: skip
    """Every record with the processor's consumer settings, in consume() calls as it makes them.

    The window runs from the first non-empty answer (joining the group is not counted) to the
    last; the first answer's records are left out of the count.
    """
    consumer = Consumer(consumer_config(bootstrap, f"bench-raw-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    try:
        chunks, seconds, cpu = _consume(consumer, total, batch_size, meter)
    finally:
        consumer.close()
    return Rate(sum(map(len, chunks)) - len(chunks[0]), seconds, cpu), chunks


def _consume(consumer: Consumer, total: int, batch_size: int,
             meter: CpuMeter) -> tuple[list[list[Message]], float, CpuUse]:  # fmt: skip
    chunks: list[list[Message]] = []
    got, deadline = 0, time.monotonic() + 120
    started = ended = 0.0
    before = meter.sample()
    while got < total:
        messages = consumer.consume(batch_size, 0.1)
        if not messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumed {got} of {total} records in 120 s")
            continue
        ended = time.perf_counter()
        if not chunks:
            started, before = ended, meter.sample()
        chunks.append(messages)
        got += len(messages)
    return chunks, ended - started, cpu_between(before, meter.sample())


def measure_step(client: redis.Redis, batches: list[Batch], settings: Settings,
                 meter: CpuMeter) -> Rate:  # fmt: skip
    """`RedisStep.apply` per batch and partition: planning, ARGV, one EVALSHA."""
    client.flushall()
    step = RedisStep(client, group="bench-raw", topic=settings.events_topic,
                     dedupe_ttl_s=settings.dedupe_window_s)  # fmt: skip
    step.apply(0, [], -1, 0)  # loads the script
    work = [w for b in batches for w in b.partitions.values()]
    before, started = meter.sample(), time.perf_counter()
    for w in work:
        step.apply(w.partition, w.records, w.first_offset, w.next_offset)
    seconds = time.perf_counter() - started
    return Rate(sum(len(w.records) for w in work), seconds, cpu_between(before, meter.sample()))


def measure_script(client: redis.Redis, batches: list[Batch], settings: Settings,
                   meter: CpuMeter) -> Rate:  # fmt: skip
    """The Lua script alone, its ARGV built beforehand: what Redis and the wire allow."""
    client.flushall()
    script = client.register_script(STEP_SCRIPT)
    field_name = offset_field("bench-raw", settings.events_topic)
    calls = [
        (offsets_key(w.partition), len(w.records),
         plan_step(w.partition, w.records).argv(field_name, w.first_offset, w.next_offset,
                                                settings.dedupe_window_s))
        for b in batches for w in b.partitions.values()
    ]  # fmt: skip
    script(keys=[offsets_key(0)], args=[field_name, -1, 0, 60, 60, 0, 0, 0])  # loads it
    before, started = meter.sample(), time.perf_counter()
    for key, _, argv in calls:
        script(keys=[key], args=argv)
    seconds = time.perf_counter() - started
    return Rate(sum(c[1] for c in calls), seconds, cpu_between(before, meter.sample()))


def _row_sets(batches: list[Batch]) -> list[list[tuple[str | int | None, ...]]]:
    return [
        [archive_row(r, w.partition, o) for w in b.partitions.values()
         for r, o in zip(w.records, w.offsets, strict=True)]
        for b in batches
    ]  # fmt: skip


@contextlib.contextmanager
def _archives(
    database_url: str, connections: int
) -> Iterator[Callable[[list[tuple[str | int | None, ...]]], None]]:
    """`connections` archives, connected; a write that takes a free one for each batch."""
    archives = [Archive(database_url) for _ in range(connections)]
    free: queue.SimpleQueue[Archive] = queue.SimpleQueue()

    def write(rows: list[tuple[str | int | None, ...]]) -> None:
        archive = free.get()
        try:
            archive.write(rows)
        finally:
            free.put(archive)

    try:
        for archive in archives:
            archive.write([])  # connects and makes the staging table
            free.put(archive)
        yield write
    finally:
        for archive in archives:
            archive.close()


def measure_archive(
    database_url: str, batches: list[Batch], meter: CpuMeter, connections: int
) -> Rate:
    """`Archive.write` of each batch's rows (one COPY + INSERT ... ON CONFLICT per batch), through
    as many connections as the processor writes with, each writing one batch at a time."""
    row_sets = _row_sets(batches)
    with _archives(database_url, connections) as write:
        before, started = meter.sample(), time.perf_counter()
        with ThreadPoolExecutor(connections) as pool:
            list(pool.map(write, row_sets))
        seconds = time.perf_counter() - started
        cpu = cpu_between(before, meter.sample())  # before the backends exit with their connections
    return Rate(sum(len(rows) for rows in row_sets), seconds, cpu)


def measure_limits(ctx: Context, batches: list[Batch], turn: int) -> dict[str, Rate]:
    """The two sink limits on the same batches; FLUSHALL and a fresh database first."""
    settings = Settings(events_topic=ctx.topic)
    return {
        "redis: RedisStep.apply": measure_step(ctx.redis, batches, settings, ctx.meter()),
        "redis: Lua script alone": measure_script(ctx.redis, batches, settings, ctx.meter()),
        # With as many connections as the processor writes through: its own limit, not one
        # that a second connection would beat.
        f"postgres: Archive.write x{settings.archive_connections}": measure_archive(
            fresh_database(ctx.urls, f"bench_raw_{turn}"),
            batches,
            ctx.meter(),
            settings.archive_connections,
        ),
    }
