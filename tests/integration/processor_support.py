"""Helpers for processor fault tests: a workload with client retries, a paced producer, processor
subprocesses, and readers of what the pipeline stored (Redis aggregates and offsets, archive rows,
Kafka group state)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from redis.asyncio import Redis as AsyncRedis

from eventpipe.core.kafka import consumer_config, producer_config
from eventpipe.domain import aggregates
from eventpipe.domain.events import EventRecord, encode_record, record_key
from eventpipe.domain.keys import (
    ALL,
    HOUR,
    counts_key,
    day_counts_key,
    offset_field,
    offsets_key,
)
from eventpipe.processor.aggregate import event_name
from tests.integration.support import group_members

PARTITIONS = 3
# The broker's smallest allowed session (group.min.session.timeout.ms): a SIGKILLed processor's
# partitions wait that long for its session to expire before the restarted one gets them.
SESSION_TIMEOUT_MS = 6_000


# --- The workload ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Distinct events of one project, and the order they are sent in, client retries included."""

    project: str
    events: list[EventRecord]
    sends: list[EventRecord]

    @classmethod
    def build(cls, rng: random.Random, *, events: int, retry_rate: float = 0.1) -> Workload:
        project = str(uuid.UUID(int=rng.getrandbits(128)))
        day = datetime.now(UTC).date().isoformat()
        distinct = [_event(rng, project, day, i) for i in range(events)]
        sends: list[EventRecord] = []
        for i, record in enumerate(distinct):
            sends.append(record)
            if rng.random() < retry_rate:
                # A retry resends an acknowledged message, recent or not, after its first copy:
                # the same key and partition, so the first copy is always the one counted.
                earlier = distinct[max(0, i - rng.choice((0, 50, 5_000))) : i + 1]
                sends.append(_resent(rng.choice(earlier)))
        return cls(project, distinct, sends)

    @property
    def message_ids(self) -> set[str]:
        return {record.message_id for record in self.events}

    def expected_totals(self) -> dict[str, int]:
        counts = Counter(event_name(record) for record in self.events)
        return {**counts, ALL: len(self.events)}

    def expected_hourly(self) -> dict[tuple[str, str], int]:
        return dict(Counter((_hour(record), event_name(record)) for record in self.events))

    def expected_top(self) -> dict[str, int]:
        return dict(Counter(event_name(record) for record in self.events))


NAMES = ("Signed Up", "Viewed Item", "Added To Cart", "Checkout", "Searched", "Shared")


def _event(rng: random.Random, project: str, day: str, index: int) -> EventRecord:
    stamp = f"{day}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.000Z"
    page = rng.random() < 0.1
    return EventRecord(
        project_id=project, message_id=f"msg-{index}-{rng.getrandbits(32):08x}",
        type="page" if page else "track", event=None if page else rng.choice(NAMES),
        user_id=f"user-{rng.randrange(300)}", timestamp=stamp, day=day, received_at=_now(),
        properties=msgspec.Raw(b'{"plan": "pro", "items": 3}'),
    )  # fmt: skip


def _resent(record: EventRecord) -> EventRecord:
    # The api stamps each receipt anew; `day` and the message id come from the client.
    return msgspec.structs.replace(record, received_at=_now())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hour(record: EventRecord) -> str:
    stamp = record.timestamp
    return stamp[0:4] + stamp[5:7] + stamp[8:10] + stamp[11:13]


# --- The pipeline's servers and what they hold ----------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """Where one test's processors read and write."""

    kafka_bootstrap: str
    redis_url: str
    database_url: str
    topic: str

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def group(self) -> str:
        return f"{self.topic}-processors"

    def processor_env(self, *, batch_size: int = 200, metrics_port: int = 0) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
        env.update(
            EVENTPIPE_KAFKA_BOOTSTRAP=self.kafka_bootstrap,
            EVENTPIPE_REDIS_URL=self.redis_url,
            EVENTPIPE_DATABASE_URL=self.database_url,
            EVENTPIPE_EVENTS_TOPIC=self.topic,
            EVENTPIPE_DLQ_TOPIC=self.dlq_topic,
            EVENTPIPE_PROCESSOR_GROUP=self.group,
            EVENTPIPE_PROCESSOR_BATCH_SIZE=str(batch_size),
            EVENTPIPE_PROCESSOR_METRICS_PORT=str(metrics_port),
            EVENTPIPE_PROCESSOR_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS),
            EVENTPIPE_LOG_LEVEL="INFO",
        )
        return env


def read_totals(pipeline: Pipeline, project: str) -> dict[str, int]:
    """Totals per event name and `$all`, through the dashboard's own reader."""

    async def read() -> dict[str, int]:
        client = AsyncRedis.from_url(pipeline.redis_url)
        try:
            return await aggregates.totals(client, project_id=project, partitions=PARTITIONS)
        finally:
            await client.aclose()

    return asyncio.run(read())


def read_hourly(pipeline: Pipeline, workload: Workload) -> dict[tuple[str, str], int]:
    """(hour bucket, name) -> count, summed over partitions, for the hours the workload used."""
    hours = sorted({hour for hour, _ in workload.expected_hourly()})
    merged: Counter[tuple[str, str]] = Counter()
    with _sync_redis(pipeline) as client:
        for partition in range(PARTITIONS):
            for hour in hours:
                key = counts_key(partition, HOUR, workload.project, hour)
                found = client.zrange(key, 0, -1, withscores=True)
                assert isinstance(found, list)  # the sync client: not an awaitable
                for name, count in found:
                    if name.decode() != ALL:
                        merged[(hour, name.decode())] += int(count)
    return dict(merged)


def read_top(pipeline: Pipeline, workload: Workload) -> dict[str, int]:
    """The day's top-events sorted set, summed over partitions."""
    day = workload.events[0].day.replace("-", "")
    merged: Counter[str] = Counter()
    with _sync_redis(pipeline) as client:
        for partition in range(PARTITIONS):
            key = day_counts_key(partition, workload.project, day)
            found = client.zrange(key, 0, -1, withscores=True)
            assert isinstance(found, list)
            for name, score in found:
                if name.decode() != ALL:
                    merged[name.decode()] += int(score)
    return dict(merged)


def stored_offsets(pipeline: Pipeline) -> list[int]:
    """Each partition's next offset as the processors stored it in Redis (-1: none yet)."""
    field_name = offset_field(pipeline.group, pipeline.topic)
    with _sync_redis(pipeline) as client:
        values = [client.hget(offsets_key(p), field_name) for p in range(PARTITIONS)]
    return [int(value) if isinstance(value, bytes) else -1 for value in values]


def archived_ids(pipeline: Pipeline, project: str) -> list[str]:
    with psycopg.connect(pipeline.database_url) as conn:
        rows = conn.execute("SELECT message_id FROM events WHERE project_id = %s", (project,))
        return [str(row[0]) for row in rows.fetchall()]


@contextlib.contextmanager
def _sync_redis(pipeline: Pipeline) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(pipeline.redis_url, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


def high_watermarks(pipeline: Pipeline) -> list[int]:
    consumer = Consumer(consumer_config(pipeline.kafka_bootstrap, f"probe-{uuid.uuid4().hex}"))
    try:
        return [
            int(consumer.get_watermark_offsets(TopicPartition(pipeline.topic, p), timeout=10)[1])
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


def committed_offsets(pipeline: Pipeline) -> list[int]:
    """The group's Kafka commits (-1: none). Reading them does not join the group."""
    consumer = Consumer(consumer_config(pipeline.kafka_bootstrap, pipeline.group))
    try:
        asked = [TopicPartition(pipeline.topic, p) for p in range(PARTITIONS)]
        found = consumer.committed(asked, timeout=10)
        return [tp.offset if tp.offset >= 0 else -1 for tp in sorted(found, key=_partition)]
    finally:
        consumer.close()


def _partition(tp: Any) -> int:
    return int(tp.partition)


def group_assignment(pipeline: Pipeline) -> list[list[int]]:
    """The partitions each member of the processors' group holds (one list per member)."""
    members = group_members(pipeline.kafka_bootstrap, pipeline.group) or []
    return sorted(partitions for _, partitions in members)


def metric(port: int, name: str) -> float:
    """One sample of a processor's Prometheus text (0 when absent: counters start unset)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


# --- Producing -------------------------------------------------------------------------------


class PacedProducer:
    """Sends a workload from a thread at a steady rate, as live traffic would arrive, so that
    faults injected meanwhile land mid-run. `hurry` sends the rest at once."""

    def __init__(self, pipeline: Pipeline, workload: Workload, *, duration_s: float) -> None:
        self._pipeline = pipeline
        self._sends = workload.sends
        self._duration_s = duration_s
        self._hurry = threading.Event()
        self._cancel = threading.Event()
        self._errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="paced-producer", daemon=True)
        self.sent = 0

    @property
    def finished(self) -> bool:
        return self.sent == len(self._sends)

    def start(self) -> PacedProducer:
        self._thread.start()
        return self

    def hurry(self) -> None:
        self._hurry.set()

    def cancel(self) -> None:
        """Stop sending (a test that failed midway); idempotent."""
        self._cancel.set()
        self._hurry.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def join(self, timeout: float = 60.0) -> None:
        """Wait until every send is acknowledged by Kafka; fail if any was not."""
        self._hurry.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the producer did not finish"
        assert not self._errors, f"produce failed: {self._errors[:3]}"
        assert self.finished, f"only {self.sent} of {len(self._sends)} sent"

    def _run(self) -> None:
        producer = Producer(producer_config(self._pipeline.kafka_bootstrap))
        tick = 0.05
        per_tick = math.ceil(len(self._sends) / (self._duration_s / tick))
        next_tick = time.monotonic()
        for start in range(0, len(self._sends), per_tick):
            if self._cancel.is_set():
                return
            for record in self._sends[start : start + per_tick]:
                self._produce(producer, record)
            producer.poll(0)
            next_tick += tick
            if not self._hurry.is_set():
                self._hurry.wait(max(0.0, next_tick - time.monotonic()))
        if producer.flush(30) > 0:
            self._errors.append("unacknowledged messages after 30 s")

    def _produce(self, producer: Producer, record: EventRecord) -> None:
        while True:
            try:
                producer.produce(
                    self._pipeline.topic, encode_record(record), record_key(record),
                    on_delivery=self._delivered,
                )  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
        self.sent += 1

    def _delivered(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self._errors.append(str(error))


# --- Processor subprocesses ------------------------------------------------------------------


@dataclass
class ProcessorProcess:
    """`python -m eventpipe processor`, as deployed, with its log in a file."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash at whatever point it reached."""
        self.popen.kill()
        self.popen.wait(10)

    def terminate(self, grace_s: float = 15.0) -> int:
        """SIGTERM and its exit status; fail (after a SIGKILL) if it outlives the grace period."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"processor ignored SIGTERM for {grace_s:.0f} s:\n{self.log_tail()}"
            ) from None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ProcessorFleet:
    """Every processor a test started; `close` kills the ones still running."""

    log_dir: Path
    started: list[ProcessorProcess] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> ProcessorProcess:
        log_path = self.log_dir / f"processor-{len(self.started)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "eventpipe", "processor"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        process = ProcessorProcess(popen, log_path)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.alive():
                process.kill()
