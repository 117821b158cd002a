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

import argparse
import asyncio
import contextlib
import cProfile
import io
import logging
import os
import pstats
import queue
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
import orjson
import psycopg
import redis
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncSession

from bench.loadgen import LoadResult, LoadSpec, basic_auth, iso_ms, run_load
from eventpipe.auth.admin import create_user_sync
from eventpipe.auth.keys import generate_key_file
from eventpipe.auth.writekeys import create_write_key
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.core.kafka import consumer_config, ensure_topics, producer_config
from eventpipe.domain.events import NULL, EventRecord, decode_record, encode_record, record_key
from eventpipe.domain.keys import ALL, offset_field, offsets_key, totals_key
from eventpipe.domain.projects import create_project
from eventpipe.local.process import ManagedProcess, descendants, free_port
from eventpipe.local.stack import LocalStack, StackUrls
from eventpipe.migrations.runner import upgrade
from eventpipe.processor.aggregate import plan_step
from eventpipe.processor.archive import Archive, archive_row, ensure_partitions
from eventpipe.processor.batch import Batch, split
from eventpipe.processor.sinks import STEP_SCRIPT, RedisStep

PARTITIONS = 12
USERS = 10_000
DUPLICATE_FRACTION = 0.01
# 48 track names, plus `$page` and `$identify`: the ~50 names a count is kept under.
TRACK_NAMES = tuple(f"{verb} {thing}" for verb in ("Viewed", "Clicked", "Added", "Removed",
    "Started", "Completed") for thing in ("Product", "Cart", "Checkout", "Video", "Article",
    "Banner", "Coupon", "Search"))  # fmt: skip
TARGET_RATIO = 0.7
TARGET_FRESHNESS_P99_S = 1.0
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")
_QUIET_ENV = {"EVENTPIPE_LOG_LEVEL": "WARNING"}

Pair = tuple[bytes, bytes]


# ---------------------------------------------------------------------------------------------
# The event set: what the api would write for Segment events of ~300-byte properties.


def _properties(rng: random.Random) -> msgspec.Raw:
    n = rng.randrange(1_000_000)
    return msgspec.Raw(orjson.dumps({
        "product_id": f"sku-{n:07d}",
        "category": rng.choice(("shoes", "books", "garden", "music", "toys", "kitchen")),
        "price": round(rng.uniform(1, 500), 2),
        "currency": "EUR",
        "quantity": rng.randrange(1, 5),
        "path": f"/shop/{rng.choice(('shoes', 'books', 'garden'))}/{n}",
        "referrer": f"https://www.example.com/campaign/{rng.randrange(500)}?utm_source=news",
        "search": rng.choice(("", "running shoes", "garden chair", "vinyl")),
        "session_id": f"s-{rng.getrandbits(64):016x}",
        "experiment": {"name": "checkout-v2", "variant": rng.choice(("a", "b"))},
        "consent": True,
    }))  # fmt: skip


_CONTEXT = msgspec.Raw(
    b'{"library":{"name":"analytics-python","version":"2.4.0"},"ip":"203.0.113.7"}'
)
_TRAITS = msgspec.Raw(b'{"plan":"pro","seats":3}')


class _Maker:
    """Records as the api builds them (`build_record`), made directly: ~5 us each, not ~25."""

    def __init__(self, project_id: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.project_id = project_id
        self.id_prefix = f"{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"[:24]
        self.properties = [_properties(self.rng) for _ in range(4_096)]
        self.made = 0

    def record(self, stamp: str, day: str) -> EventRecord:
        rng = self.rng
        user = rng.randrange(USERS)
        draw = rng.random()
        kind, name = ("track", rng.choice(TRACK_NAMES)) if draw < 0.85 else (
            ("page", None) if draw < 0.95 else ("identify", None))  # fmt: skip
        self.made += 1
        return EventRecord(
            project_id=self.project_id, message_id=f"{self.id_prefix}{self.made:012x}",
            type=kind, received_at=stamp, timestamp=stamp, day=day, original_timestamp=stamp,
            sent_at=stamp, user_id=f"user-{user:05d}" if user % 5 else None,
            anonymous_id=None if user % 5 else f"anon-{user:05d}", event=name,
            name="Shop" if kind == "page" else None, properties=rng.choice(self.properties),
            traits=_TRAITS if kind == "identify" else NULL, context=_CONTEXT,
        )  # fmt: skip


def make_pairs(count: int, project_id: str, seed: int = 11) -> list[Pair]:
    """`count` (key, value) records, 1 % of them a client's retry of an earlier event.

    Event times advance through the set as a live stream's would (10k events per second), so a
    batch touches one or two minute buckets, as it would in production.
    """
    maker = _Maker(project_id, seed)
    start = datetime.now(UTC) - timedelta(seconds=count / 10_000 + 5)
    unique = count - round(count * DUPLICATE_FRACTION)
    pairs: list[Pair] = []
    while len(pairs) < unique:
        moment = start + timedelta(seconds=len(pairs) / 10_000)
        stamp, day = iso_ms(moment), moment.date().isoformat()
        for _ in range(min(1_000, unique - len(pairs))):
            record = maker.record(stamp, day)
            pairs.append((record_key(record), encode_record(record)))
    # A retry is the same event sent again shortly after: same messageId, a later receivedAt.
    for _ in range(count - unique):
        at = maker.rng.randrange(unique)
        key, value = pairs[at]
        record = decode_record(value)
        later = datetime.fromisoformat(record.received_at) + timedelta(seconds=2)
        retry = msgspec.structs.replace(record, received_at=iso_ms(later))
        place = min(len(pairs), at + maker.rng.randrange(1, 5_000))
        pairs.insert(place, (key, encode_record(retry)))
    return pairs


# ---------------------------------------------------------------------------------------------
# Processes, CPU and databases.


def tree_cpu_s(pid: int | None) -> float:
    """User + system CPU of `pid` and every live process below it, from /proc."""
    if pid is None:
        return 0.0
    total = 0.0
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, ValueError):
            text = Path(f"/proc/{each}/stat").read_text()
            fields = text[text.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICK
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (every core), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _CLOCK_TICK  # less idle and iowait


class CpuMeter:
    """CPU seconds of named process trees between `start` and `stop`.

    `bench` is this process alone; `other` is every other process on the machine (other jobs,
    and the load generator in the freshness part): what the figures had to share the cores with.
    """

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.started: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        found = {name: tree_cpu_s(pid) for name, pid in self.pids.items()}
        return {**found, "bench": time.process_time(), "machine": machine_busy_s()}

    def start(self) -> None:
        self.started = self._read()

    def stop(self) -> dict[str, float]:
        now = self._read()
        used = {name: now[name] - self.started[name] for name in now}
        machine = used.pop("machine")
        used["other"] = max(0.0, machine - sum(used.values()))
        self.used = used
        return used


def fresh_database(urls: StackUrls, name: str) -> str:
    """A new database with the schema and this week's archive partitions."""
    base = urls.database_url.rpartition("/")[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    upgrade(url)
    # The processor would create them itself, but only once time.monotonic() passes 3600 s
    # (app.py `_partitions_checked = 0.0`): on a machine up for less than an hour, never.
    ensure_partitions(url, today=date.today(), ahead=7, retention_days=90)
    return url


def start_role(args: list[str], env: dict[str, str], log_path: Path) -> ManagedProcess:
    """A role (`-m eventpipe processor`, ...) as a child in its own session, logging to a file."""
    with log_path.open("ab") as log:
        popen = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, *args],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(args[-1], popen, log_path)


def role_env(urls: StackUrls, database_url: str, topic: str, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        **_QUIET_ENV,
        "EVENTPIPE_KAFKA_BOOTSTRAP": urls.kafka_bootstrap,
        "EVENTPIPE_REDIS_URL": urls.redis_url,
        "EVENTPIPE_DATABASE_URL": database_url,
        "EVENTPIPE_EVENTS_TOPIC": topic,
        "EVENTPIPE_DLQ_TOPIC": f"{topic}.dlq",
        "EVENTPIPE_PROCESSOR_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "EVENTPIPE_PROCESSOR_METRICS_PORT": str(free_port()),
        "EVENTPIPE_STATE_DIR": str(tmp / "role-state"),
    }


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {message}", flush=True)


@dataclass
class Context:
    """What every phase shares: the servers, their data, this run's options and scratch space."""

    args: argparse.Namespace
    urls: StackUrls
    servers: dict[str, int | None]
    redis: redis.Redis
    tmp: Path
    clock: Clock
    topic: str = ""
    project_id: str = ""

    def meter(self, more: dict[str, int | None] | None = None) -> CpuMeter:
        return CpuMeter({**self.servers, **(more or {})})

    def sources(self) -> dict[str, Path | None]:
        """The processors to measure: this tree's, and the `--compare-src` one (an A/B)."""
        found: dict[str, Path | None] = {"eventpipe processor": None}
        if self.args.compare_src is not None:
            found[f"from {self.args.compare_src}"] = self.args.compare_src
        return found


# ---------------------------------------------------------------------------------------------
# Kafka: loading the topic, warming the broker, the raw consume rate.


def produce(bootstrap: str, topic: str, pairs: list[Pair]) -> None:
    producer = Producer(producer_config(bootstrap))
    for key, value in pairs:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.005)
    if producer.flush(60) > 0:
        raise RuntimeError(f"records not acknowledged by the broker for {topic}")


def warm_broker(bootstrap: str, pairs: list[Pair], seconds: float) -> int:
    """Produce the set again and again into a scratch topic: the broker's first minute is slow."""
    topic = f"bench.warm.{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {topic: PARTITIONS})
    deadline, sent = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        produce(bootstrap, topic, pairs[:50_000])
        sent += 50_000
    return sent


@dataclass(frozen=True)
class Rate:
    """Events handled in a window, and the CPU each process tree used in it."""

    events: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)

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
    chunks: list[list[Message]] = []
    got, deadline = 0, time.monotonic() + 120
    started = ended = 0.0
    try:
        while got < total:
            messages = consumer.consume(batch_size, 0.1)
            if not messages:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"consumed {got} of {total} records in 120 s")
                continue
            ended = time.perf_counter()
            if not chunks:
                started = ended
                meter.start()
            chunks.append(messages)
            got += len(messages)
        cpu = meter.stop()
    finally:
        consumer.close()
    return Rate(got - len(chunks[0]), ended - started, cpu), chunks


# ---------------------------------------------------------------------------------------------
# The two sink limits, on the same batches the processor makes (pre-decoded, outside the clock).


def measure_step(client: redis.Redis, batches: list[Batch], settings: Settings,
                 meter: CpuMeter) -> Rate:  # fmt: skip
    """`RedisStep.apply` per batch and partition: planning, ARGV, one EVALSHA."""
    client.flushall()
    step = RedisStep(client, group="bench-raw", topic=settings.events_topic,
                     dedupe_ttl_s=settings.dedupe_window_s)  # fmt: skip
    step.apply(0, [], -1, 0)  # loads the script
    work = [w for b in batches for w in b.partitions.values()]
    meter.start()
    started = time.perf_counter()
    for w in work:
        step.apply(w.partition, w.records, w.first_offset, w.next_offset)
    seconds = time.perf_counter() - started
    return Rate(sum(len(w.records) for w in work), seconds, meter.stop())


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
    meter.start()
    started = time.perf_counter()
    for key, _, argv in calls:
        script(keys=[key], args=argv)
    seconds = time.perf_counter() - started
    return Rate(sum(c[1] for c in calls), seconds, meter.stop())


def measure_archive(
    database_url: str, batches: list[Batch], meter: CpuMeter, connections: int
) -> Rate:
    """`Archive.write` of each batch's rows (one COPY + INSERT ... ON CONFLICT per batch), through
    as many connections as the processor writes with, each writing one batch at a time."""
    row_sets = [
        [archive_row(r, w.partition, o) for w in b.partitions.values()
         for r, o in zip(w.records, w.offsets, strict=True)]
        for b in batches
    ]  # fmt: skip
    archives = [Archive(database_url) for _ in range(connections)]
    free: queue.SimpleQueue[Archive] = queue.SimpleQueue()
    for archive in archives:
        archive.write([])  # connects and makes the staging table
        free.put(archive)

    def write(rows: list[tuple[str | int | None, ...]]) -> None:
        archive = free.get()
        try:
            archive.write(rows)
        finally:
            free.put(archive)

    try:
        meter.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(connections) as pool:
            list(pool.map(write, row_sets))
        seconds = time.perf_counter() - started
        cpu = meter.stop()  # before the backends exit with their connections
    finally:
        for archive in archives:
            archive.close()
    return Rate(sum(len(rows) for rows in row_sets), seconds, cpu)


# ---------------------------------------------------------------------------------------------
# The processor itself.


def stored_offsets(client: redis.Redis, env: dict[str, str]) -> list[int]:
    """The next offset of each partition as the processor's Redis step stored it (0: none)."""
    name = offset_field(env["EVENTPIPE_PROCESSOR_GROUP"], env["EVENTPIPE_EVENTS_TOPIC"])
    with client.pipeline(transaction=False) as pipe:
        for partition in range(PARTITIONS):
            pipe.hget(offsets_key(partition), name)
        answers = pipe.execute()
    return [int(a) if a is not None else 0 for a in answers]


def watch_processor(client: redis.Redis, env: dict[str, str], ends: list[int],
                    process: ManagedProcess, meter: CpuMeter, limit_s: float) -> Rate:  # fmt: skip
    """Poll its stored offsets until every partition is done (or `limit_s` after it began).

    The window runs from the first progress seen to the last: joining the group and the first
    batch are not counted, as for the raw consumer.
    """
    total, first, started = sum(ends), 0, 0.0
    deadline = time.monotonic() + 120
    while True:
        done = sum(stored_offsets(client, env))
        now = time.perf_counter()
        if done and not started:
            first, started = done, now
            meter.start()
            deadline = time.monotonic() + limit_s
        if done >= total or time.monotonic() > deadline:
            return Rate(done - first, now - started, meter.stop() if started else {})
        if not process.alive():
            raise process.failure(f"exited with status {process.popen.returncode}")
        time.sleep(0.02)


def end_offsets(bootstrap: str, topic: str) -> list[int]:
    consumer = Consumer(consumer_config(bootstrap, f"bench-ends-{uuid.uuid4().hex[:8]}"))
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


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
    env = role_env(ctx.urls, database_url, ctx.topic, ctx.tmp)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src.resolve()), env.get("PYTHONPATH", "")])
    log_path = ctx.tmp / ("processor.log" if src is None else "processor-compare.log")
    process = start_role(["-m", "eventpipe", "processor"], env, log_path)
    try:
        meter = ctx.meter({"processor": process.pid})
        rate = watch_processor(ctx.redis, env, ends, process, meter, ctx.args.limit_seconds)
    finally:
        process.stop(30)
    memory = used_memory(ctx.redis) - memory_before
    counted = redis_totals(ctx.redis, ctx.project_id).get(ALL, 0)
    return ProcessorRun(rate, counted, archived(database_url), memory / max(counted, 1))


# ---------------------------------------------------------------------------------------------
# Profile: one processor under cProfile, in a child process (`--run-profiled`).


def run_profiled(stats_path: Path) -> None:
    from eventpipe.core.logging import configure_logging
    from eventpipe.core.signals import StopFlag
    from eventpipe.processor.app import Processor
    from eventpipe.processor.metrics import ProcessorMetrics

    settings = Settings()
    configure_logging(settings.log_level)
    processor = Processor(settings, StopFlag().install(), ProcessorMetrics())
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        processor.run()
    finally:
        profiler.disable()
        profiler.dump_stats(stats_path)


def profile_processor(ctx: Context, ends: list[int]) -> tuple[Rate, str]:
    ctx.redis.flushall()
    database_url = fresh_database(ctx.urls, "bench_profile")
    env = role_env(ctx.urls, database_url, ctx.topic, ctx.tmp)
    stats = ctx.tmp / "processor.prof"
    args = ["-m", "bench.processor", "--run-profiled", str(stats)]
    process = start_role(args, env, ctx.tmp / "profile.log")
    try:
        meter = ctx.meter({"processor": process.pid})
        rate = watch_processor(ctx.redis, env, ends, process, meter, ctx.args.profile_seconds)
    finally:
        process.stop(30)
    return rate, profile_text(stats, ctx.args.profile_lines)


def profile_text(stats_path: Path, lines: int) -> str:
    parts = []
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(str(stats_path), stream=out)
        stats.strip_dirs().sort_stats(order).print_stats(lines)
        text = out.getvalue()
        parts.append(f"--- by {order} ---\n" + text[text.index("   ncalls") :].rstrip())
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Freshness: the api and the processor running, the load paced at fractions of the api's maximum.


def make_write_key(database_url: str) -> tuple[str, str]:
    """A user, a project and a write key; returns the key and the project id."""
    settings = Settings(database_url=database_url)
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    user_id = create_user_sync(settings, email=email, password=secrets.token_urlsafe(16))

    async def project_and_key() -> tuple[str, str]:
        engine = async_engine(database_url)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                project = await create_project(session, owner_id=user_id, name="bench")
                _, key = await create_write_key(session, project_id=project.id, name="bench")
                await session.commit()
                return key, str(project.id)
        finally:
            await engine.dispose()

    return asyncio.run(project_and_key())


def wait_ready(process: ManagedProcess, url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not process.alive():
            raise process.failure(f"exited with status {process.popen.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise process.failure(f"{url} not ready within 60 s")


class Prober:
    """Single-event requests, each with its own event name, and when each became visible.

    A sender thread posts `/v1/track` on a fixed schedule and notes when the 200 arrived; the
    caller's thread polls the totals hashes of every partition (one HMGET each, 5 ms apart) for
    the names still awaited. A delay is from the 200 to the poll answer that first shows it.
    """

    def __init__(self, base_url: str, key: str, client: redis.Redis, project_id: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": basic_auth(key)})
        self.redis = client
        self.keys = [totals_key(p, project_id) for p in range(PARTITIONS)]
        self.acked: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.sent = self.failed = 0
        self.run_id = uuid.uuid4().hex[:8]

    def send(self) -> None:
        name = f"probe-{self.run_id}-{self.sent}"
        body = {"userId": f"probe-{self.sent % 24}", "event": name,
                "messageId": f"{name}-m", "properties": {"probe": True}}  # fmt: skip
        self.sent += 1
        answer = self.http.post("/v1/track", json=body)
        acked = time.perf_counter()
        if answer.status_code != 200:
            self.failed += 1
            return
        with self.lock:
            self.acked.append((name, acked))

    def send_for(self, seconds: float, per_s: float) -> None:
        started = time.perf_counter()
        for n in range(int(seconds * per_s)):
            wait = started + n / per_s - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            self.send()

    def poll(self, sender: threading.Thread, timeout_s: float = 15.0) -> tuple[list[float], int]:
        """Delays (s) of every acknowledged probe, and how many were not seen in `timeout_s`."""
        pending: dict[str, float] = {}
        delays: list[float] = []
        lost = 0
        while sender.is_alive() or pending or self.acked:
            with self.lock:
                pending.update(self.acked)
                self.acked.clear()
            if pending:
                seen = self._visible(list(pending))
                now = time.perf_counter()
                for name in seen:
                    delays.append(now - pending.pop(name))
                for name, acked in list(pending.items()):
                    if now - acked > timeout_s:
                        lost += 1
                        del pending[name]
            time.sleep(0.005)
        return sorted(delays), lost

    def _visible(self, names: list[str]) -> set[str]:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.hmget(key, names)
            answers = pipe.execute()
        return {name for answer in answers for name, v in zip(names, answer, strict=True) if v}

    def close(self) -> None:
        self.http.close()


def scrape(port: str) -> dict[str, float]:
    """The processor's /metrics: `name{labels}` -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = (
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    return {name: float(value) for name, value in samples}


def freshness_buckets(samples: dict[str, float]) -> dict[float, float]:
    """Cumulative counts of eventpipe_freshness_seconds, by upper bound."""
    prefix = 'eventpipe_freshness_seconds_bucket{le="'
    return {
        float(name[len(prefix) :].split('"')[0]): value
        for name, value in samples.items()
        if name.startswith(prefix)
    }


def histogram_quantile(buckets: dict[float, float], q: float) -> float:
    """Prometheus' estimate: linear inside the bucket where the q-th observation falls."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if not total:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(buckets[bound] - below, 1e-9)
        lower, below = bound, buckets[bound]
    return lower


@dataclass(frozen=True)
class Window:
    """One paced run: its load, the probes' delays, and what the processor said meanwhile."""

    label: str
    paced: LoadResult
    delays_s: list[float]
    lost: int
    probe_failures: int
    metrics: dict[str, float]  # the processor's samples, end minus start of the window
    behind_at_end: int
    processed: int
    cpu: dict[str, float]
    seconds: float

    def quantile(self, q: float) -> float:
        """Over every acknowledged probe: one never seen counts as infinitely late."""
        values = self.delays_s + [float("inf")] * self.lost
        if not values:
            return float("nan")
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _ms(seconds: float) -> str:
    return "> 15 s" if seconds == float("inf") else f"{seconds * 1000:.0f} ms"


def seed_offsets(client: redis.Redis, env: dict[str, str], ends: list[int]) -> None:
    """Start the processor at the end of the topic: what came before is not its work here.

    It seeks to its Redis-stored offsets on assignment (app.py `_on_assign`).
    """
    name = offset_field(env["EVENTPIPE_PROCESSOR_GROUP"], env["EVENTPIPE_EVENTS_TOPIC"])
    for partition, end in enumerate(ends):
        client.hset(offsets_key(partition), name, str(end))


def wait_for_load(bootstrap: str, topic: str, ends: list[int], events: float) -> None:
    """Until the paced load has put about `events` records into the topic."""
    deadline = time.monotonic() + 60
    while sum(end_offsets(bootstrap, topic)) - sum(ends) < events:
        if time.monotonic() > deadline:
            raise RuntimeError("the paced load did not reach the topic within 60 s")
        time.sleep(0.1)


@dataclass(frozen=True)
class Api:
    """The running api: where it listens, its write key and project, its env for the roles."""

    url: str
    key: str
    project_id: str
    env: dict[str, str]
    pid: int


def api_env(ctx: Context, database_url: str, topic: str) -> tuple[dict[str, str], str]:
    port = free_port()
    keys_dir = ctx.tmp / "jwt-keys"
    generate_key_file(keys_dir)
    env = {
        **role_env(ctx.urls, database_url, topic, ctx.tmp),
        "EVENTPIPE_HTTP_PORT": str(port),
        "EVENTPIPE_JWT_KEYS_DIR": str(keys_dir),
        "EVENTPIPE_INGEST_RATE_LIMIT_PER_S": "0",
    }
    return env, f"http://127.0.0.1:{port}"


def measure_freshness(ctx: Context) -> tuple[LoadResult, list[Window]]:
    """The api's maximum ingest rate, then a paced window per processor (the compared one too)."""
    database_url = fresh_database(ctx.urls, "bench_api")
    key, project_id = make_write_key(database_url)
    topic = "bench.fresh"
    ensure_topics(ctx.urls.kafka_bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
    env, url = api_env(ctx, database_url, topic)
    process = start_role(["-m", "eventpipe", "api", "--workers", "2"], env, ctx.tmp / "api.log")
    try:
        wait_ready(process, f"{url}/readyz")
        ctx.clock.say(f"api ready; its maximum ingest rate, {ctx.args.ingest_seconds:g} s")
        spec = LoadSpec(url, key, batch=100, connections=32, seconds=ctx.args.ingest_seconds)
        max_ingest = run_load(spec)
        ctx.clock.say(f"max ingest {max_ingest.events_per_s:,.0f} events/s")
        api = Api(url, key, project_id, env, process.pid)
        windows = [
            fresh_window(ctx, api, fraction * max_ingest.events_per_s,
                         f"{label}, at {fraction:g} x the maximum", src)
            for label, src in ctx.sources().items()
            for fraction in ctx.args.fresh_fractions
        ]  # fmt: skip
    finally:
        process.stop(30)
    return max_ingest, windows


def fresh_window(ctx: Context, api: Api, rate: float, label: str, src: Path | None) -> Window:
    """A processor of its own group, started at the topic's end, then the paced window."""
    env = {
        **api.env,
        "EVENTPIPE_PROCESSOR_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "EVENTPIPE_PROCESSOR_METRICS_PORT": str(free_port()),
    }
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src.resolve()), env.get("PYTHONPATH", "")])
    ends = end_offsets(ctx.urls.kafka_bootstrap, env["EVENTPIPE_EVENTS_TOPIC"])
    seed_offsets(ctx.redis, env, ends)
    log_path = ctx.tmp / f"fresh-{len(list(ctx.tmp.glob('fresh-*')))}.log"
    process = start_role(["-m", "eventpipe", "processor"], env, log_path)
    prober = Prober(api.url, api.key, ctx.redis, api.project_id)
    try:
        ctx.clock.say(f"processor started for: {label}; waiting for it to count a first probe")
        calibrate = threading.Thread(target=prober.send)
        calibrate.start()
        if prober.poll(calibrate, timeout_s=60)[1]:
            raise RuntimeError("the processor did not count a first probe within 60 s")
        pids: dict[str, int | None] = {"processor": process.pid, "api": api.pid}
        return paced_window(ctx, prober, env, Load(api, rate, ends, label), pids)
    finally:
        prober.close()
        process.stop(30)


@dataclass(frozen=True)
class Load:
    api: Api
    events_per_s: float
    ends: list[int]
    label: str


def paced_window(ctx: Context, prober: Prober, env: dict[str, str], load: Load,
                 pids: dict[str, int | None]) -> Window:  # fmt: skip
    seconds, rate, api = ctx.args.fresh_seconds, load.events_per_s, load.api
    spec = LoadSpec(api.url, api.key, batch=100, connections=32, seconds=seconds + 8,
                    warmup_s=1, rate=rate / 100)  # fmt: skip
    results: list[LoadResult] = []
    loader = threading.Thread(target=lambda: results.append(run_load(spec)))
    loader.start()
    topic, bootstrap = env["EVENTPIPE_EVENTS_TOPIC"], ctx.urls.kafka_bootstrap
    wait_for_load(bootstrap, topic, load.ends, 3 * rate)
    ctx.clock.say(f"paced load at {rate:,.0f} events/s reaches Kafka; probing for {seconds:g} s")
    meter, port = ctx.meter(pids), env["EVENTPIPE_PROCESSOR_METRICS_PORT"]
    before, applied = scrape(port), sum(stored_offsets(ctx.redis, env))
    meter.start()
    started = time.perf_counter()
    sender = threading.Thread(target=prober.send_for, args=(seconds, ctx.args.probes_per_s))
    sender.start()
    delays, lost = prober.poll(sender)
    window, cpu = time.perf_counter() - started, meter.stop()
    after, applied = scrape(port), sum(stored_offsets(ctx.redis, env)) - applied
    behind = sum(end_offsets(bootstrap, topic)) - sum(stored_offsets(ctx.redis, env))
    loader.join()
    if not results:
        raise RuntimeError("the paced load generator failed")
    metrics = {name: value - before.get(name, 0.0) for name, value in after.items()}
    return Window(load.label, results[0], delays, lost, prober.failed, metrics, behind, applied,
                  cpu, window)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Report.

_COMPONENTS = ("bench", "processor", "kafka", "redis", "postgres")
_LABELS = {"other": "other processes (the load generator among them)"}


def _cpu_cells(rate: Rate) -> str:
    cells = []
    for name in _COMPONENTS:
        used = rate.cpu.get(name)
        cells.append(f"{used / rate.events * 1e6:6.1f}" if used and rate.events else "     -")
    ours = sum(v for k, v in rate.cpu.items() if k != "other")
    other = rate.cpu.get("other", 0.0)
    seconds = rate.seconds or 1.0
    return " ".join(cells) + f"  {ours / seconds:5.2f} {other / seconds:5.2f}"


def report_throughput(limits: dict[str, Rate], processors: dict[str, ProcessorRun]) -> bool:
    """The rates, each processor's ratio to each limit, and the verdict for the first one."""
    print(
        f"\n{'':<40}{'':>10}  {'CPU us per event':^34}  cores busy\n"
        f"{'one process each':<40}{'events/s':>10}  {'bench':>6} {'procr':>6} {'kafka':>6} "
        f"{'redis':>6} {'pg':>6}  {'ours':>5} {'other':>5}"
    )
    runs = {label: run.rate for label, run in processors.items()}
    for label, measured in [*limits.items(), *runs.items()]:
        print(f"  {label:<38}{measured.per_s:>10,.0f}  {_cpu_cells(measured)}")
    print(f"\n{'ratio to each limit':<40}" + "".join(f"{label[:22]:>24}" for label in runs))
    for label, limit in limits.items():
        cells = "".join(f"{rate.per_s / limit.per_s:>24.0%}" for rate in runs.values())
        print(f"  {label:<38}{cells}")
    floors = {k: v for k, v in limits.items() if k != "redis: Lua script alone"}
    slowest = min(floors, key=lambda k: floors[k].per_s)
    goal = TARGET_RATIO * floors[slowest].per_s
    rate = next(iter(runs.values())).per_s
    print(
        f"\ntarget: >= {TARGET_RATIO:.0%} of the slowest limit ({slowest}, "
        f"{floors[slowest].per_s:,.0f}/s) = {goal:,.0f}/s: {rate:,.0f}/s  {_verdict(rate >= goal)}"
    )
    return rate >= goal


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report_correctness(label: str, runs: list[ProcessorRun], unique: int) -> bool:
    ok = all(run.counted == unique and run.archived == unique for run in runs)
    counted = "/".join(f"{run.counted:,}" for run in runs)
    stored = "/".join(f"{run.archived:,}" for run in runs)
    memory = max(run.redis_bytes_per_event for run in runs)
    print(
        f"exactly once, {label}: counted {counted} in Redis, archived {stored}, of {unique:,} "
        f"distinct events  {_verdict(ok)}; Redis memory kept: {memory:,.0f} bytes per event"
    )
    return ok


def _counter(window: Window, name: str) -> float:
    return window.metrics.get(f"{name}_total", 0.0)


def report_window(window: Window) -> bool:
    paced, delays = window.paced, window.delays_s
    p50, p99 = window.quantile(0.5), window.quantile(0.99)
    buckets = freshness_buckets(window.metrics)
    batches = _counter(window, "eventpipe_batches")
    events = _counter(window, "eventpipe_events_processed")
    cpu = ", ".join(f"{_LABELS.get(k, k)} {v / window.seconds:.2f}" for k, v in window.cpu.items())
    print(
        f"\n  {window.label}: paced load {paced.events_per_s:,.0f} events/s, request p99 "
        f"{paced.latency_ms(0.99):.0f} ms, non-200 {sum(paced.errors.values())}\n"
        f"    probes, 200 -> visible in the Redis totals: {len(delays)} seen, {window.lost} not "
        f"seen within 15 s, {window.probe_failures} not acknowledged\n"
        f"      p50 {_ms(p50)}  p99 {_ms(p99)}  max {_ms(window.quantile(1.0))}\n"
        f"    its eventpipe_freshness_seconds (receivedAt -> visible, last event of each partition "
        f"batch, {buckets.get(float('inf'), 0):.0f} observations): p50 "
        f"~{histogram_quantile(buckets, 0.5) * 1000:.0f} ms  p99 "
        f"~{histogram_quantile(buckets, 0.99) * 1000:.0f} ms\n"
        f"    applied {window.processed / window.seconds:,.0f} events/s in the window, "
        f"{window.behind_at_end:,} behind at its end; {batches:.0f} batches of "
        f"{events / max(batches, 1):,.0f} new events on average\n"
        f"    CPU in the window (cores): {cpu}"
    )
    ok = bool(delays) and not window.lost and p99 < TARGET_FRESHNESS_P99_S
    print(f"    target: p99 < {TARGET_FRESHNESS_P99_S:g} s: {_ms(p99)}  {_verdict(ok)}")
    return ok


def report_freshness(max_ingest: LoadResult, windows: list[Window]) -> bool:
    print(
        f"\nfreshness: the api (2 workers), the processor, the servers and the load generator on "
        f"{os.cpu_count()} cores\n  api maximum, batches of 100, 32 connections: "
        f"{max_ingest.events_per_s:,.0f} events/s"
    )
    verdicts = [report_window(window) for window in windows]
    return verdicts[0]


# ---------------------------------------------------------------------------------------------
# The run.


def load_topic(ctx: Context, pairs: list[Pair]) -> list[int]:
    bootstrap = ctx.urls.kafka_bootstrap
    ctx.topic = "bench.processor"
    ensure_topics(bootstrap, {ctx.topic: PARTITIONS, f"{ctx.topic}.dlq": 1})
    produce(bootstrap, ctx.topic, pairs)
    ends = end_offsets(bootstrap, ctx.topic)
    ctx.clock.say(f"{sum(ends):,} records in {ctx.topic}; warming the broker")
    sent = warm_broker(bootstrap, pairs, ctx.args.warm_seconds)
    ctx.clock.say(f"broker warmed by {sent:,} records")
    return ends


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


def report_runs(rounds: Rounds) -> None:
    print("\nevery run: events/s (cores other processes took meanwhile); the best is kept")
    every = {**rounds.limits, **{k: [r.rate for r in v] for k, v in rounds.processors.items()}}
    for label, rates in every.items():
        cells = "  ".join(
            f"{r.per_s:>9,.0f} ({r.cpu.get('other', 0.0) / (r.seconds or 1):.2f})" for r in rates
        )
        print(f"  {label:<38}{cells}")


def run(args: argparse.Namespace, tmp: Path) -> bool:
    clock = Clock()
    # Always servers of its own (FLUSHALL between phases): URLs from the environment are ignored.
    settings = Settings(state_dir=tmp / "stack", kafka_bootstrap=None, redis_url=None,
                        database_url=None)  # fmt: skip
    with LocalStack(settings, fast_start=False) as stack:
        servers: dict[str, int | None] = {n: p.pid for n, p in stack.processes.items()}
        client = redis.Redis.from_url(stack.urls.redis_url)
        ctx = Context(args, stack.urls, servers, client, tmp, clock)
        try:
            return run_phases(ctx)
        finally:
            client.close()
            clock.say("stopping the servers")


def run_phases(ctx: Context) -> bool:
    ctx.project_id = str(uuid.uuid4())
    pairs = make_pairs(ctx.args.events, ctx.project_id)
    size = sum(len(v) for _, v in pairs) / len(pairs)
    ctx.clock.say(f"servers ready; {len(pairs):,} records of {size:.0f} bytes made")
    ends = load_topic(ctx, pairs)
    rounds = run_rounds(ctx, ends)
    report_runs(rounds)
    ok = report_throughput(rounds.best_limits(), rounds.best_processors())
    for label, done in rounds.processors.items():
        ok = report_correctness(label, done, rounds.unique) and ok
    if ctx.args.profile_seconds > 0:
        ctx.clock.say("the processor under cProfile")
        profiled, text = profile_processor(ctx, ends)
        print(f"\nprofile of one processor under cProfile ({profiled.per_s:,.0f} events/s "
              f"profiled, {profiled.seconds:.0f} s)\n{text}")  # fmt: skip
    if ctx.args.fresh_seconds > 0:
        ctx.clock.say("freshness: starting the api")
        max_ingest, windows = measure_freshness(ctx)
        ok = report_freshness(max_ingest, windows) and ok
    return ok


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="records in the topic")
    parser.add_argument("--warm-seconds", type=float, default=15.0, help="broker warm-up")
    parser.add_argument("--limit-seconds", type=float, default=90.0, help="longest processor run")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of measures (best kept)")
    parser.add_argument("--profile-seconds", type=float, default=15.0, help="0: no profile")
    parser.add_argument("--profile-lines", type=int, default=25)
    parser.add_argument("--ingest-seconds", type=float, default=8.0, help="api maximum run")
    parser.add_argument("--fresh-seconds", type=float, default=20.0, help="0: no freshness")
    parser.add_argument("--probes-per-s", type=float, default=20.0)
    parser.add_argument(
        "--fresh-fractions", type=_fractions, default=(0.5, 0.25),
        help="paced rates as fractions of the api's maximum (the first one is the target's)",
    )  # fmt: skip
    parser.add_argument("--compare-src", type=Path, help="also run the processor from this src/")
    parser.add_argument("--logs", type=Path, help="copy the roles' logs to this directory")
    parser.add_argument("--run-profiled", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def header(args: argparse.Namespace) -> None:
    print(
        f"eventpipe processor benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores shared by Kafka, Redis, PostgreSQL, the processor and this "
        f"benchmark (and the api and its load generator in the freshness part)\n"
        f"data: {args.events:,} records, {DUPLICATE_FRACTION:.0%} of them retries, ~300-byte "
        f"properties, {USERS:,} users, {len(TRACK_NAMES) + 2} names, {PARTITIONS} partitions"
    )


def run_in_tmp(prefix: str, logs: Path | None, run: Callable[[Path], bool]) -> None:
    """`run` in a temporary directory, its logs copied to `logs` (if given) whatever happens;
    exits 0 when it answers True. Every benchmark's main ends so."""
    # librdkafka's retry notices (a broker that just started) are not the benchmark's output.
    logging.getLogger("eventpipe.librdkafka").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            ok = run(Path(tmp))
        finally:
            if logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("*.log"):
                    shutil.copy(log, logs / log.name)
    sys.exit(0 if ok else 1)


def main() -> None:
    args = parse_args()
    if args.run_profiled is not None:
        run_profiled(args.run_profiled)
        return
    header(args)
    run_in_tmp("eventpipe-bench-processor-", args.logs, lambda tmp: run(args, tmp))


if __name__ == "__main__":
    main()
