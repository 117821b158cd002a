""" "Where is my event?": each stage one messageId reached, from the places that can tell.

- the archive row (kept for the retention): where the processor read it in Kafka, when it arrived;
- the dedupe mark (kept for the dedupe window): it was counted in the live aggregates;
- Kafka itself, the part no processor has applied yet (from the offsets stored in Redis to the end):
  accepted by the api, waiting;
- the dead-letter topic, its newest records: refused by the processor, with the reason.

The two Kafka scans read a bounded number of records, and the answer says how many were read: a
trace must stay cheap while a backlog or a large DLQ is exactly when people ask.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.core.config import Settings
from eventpipe.core.kafka import consumer_config, security_config
from eventpipe.domain.events import decode_record
from eventpipe.domain.keys import dedupe_mark, offset_field, offsets_key
from eventpipe.domain.search import get_event

SCAN_LIMIT = 100_000
SCAN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class KafkaHit:
    topic: str
    partition: int
    offset: int
    headers: dict[str, str]


@dataclass
class Scan:
    hits: list[KafkaHit] = field(default_factory=list)
    read: int = 0
    complete: bool = True


class _Match:
    """Cheap first test on the raw bytes (the id as JSON spells it), exact test on the record."""

    def __init__(self, project_id: str, message_id: str) -> None:
        self.project_id, self.message_id = project_id, message_id
        self.needle = msgspec.json.encode(message_id)

    def __call__(self, value: bytes | None) -> bool:
        if not value or self.needle not in value:
            return False
        try:
            record = decode_record(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            # Poison in the DLQ: no record to decode; the ids as JSON fields still tell.
            return self._loose(value)
        return record.project_id == self.project_id and record.message_id == self.message_id

    def _loose(self, value: bytes) -> bool:
        try:
            fields = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return False
        return (
            isinstance(fields, dict)
            and fields.get("project_id") == self.project_id
            and fields.get("message_id") == self.message_id
        )


def _headers(message: Message) -> dict[str, str]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {
        name: value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        for name, value in pairs
    }


def scan_topic(
    bootstrap: str,
    topic: str,
    starts: Callable[[int, int, int], int],
    match: Callable[[bytes | None], bool],
    *,
    security: Mapping[str, str],
) -> Scan:
    """Read `topic` from `starts(partition, low, high)` to each partition's end (at most
    SCAN_LIMIT records in all, SCAN_TIMEOUT_S seconds) and keep the messages that `match`."""
    config = consumer_config(bootstrap, f"eventpipe-trace-{uuid.uuid4()}", security=security)
    consumer = Consumer({**config, "enable.partition.eof": True})
    scan = Scan()
    try:
        ends = _assign(consumer, topic, starts)
        deadline = time.monotonic() + SCAN_TIMEOUT_S
        while ends and scan.read < SCAN_LIMIT and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                _take(message, ends, match, scan)
        scan.complete = not ends
    finally:
        consumer.close()
    return scan


def _assign(
    consumer: Consumer, topic: str, starts: Callable[[int, int, int], int]
) -> dict[int, int]:
    metadata = consumer.list_topics(topic, timeout=5)
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        return {}  # no such topic (a DLQ nothing was ever sent to): nothing to find there
    ends: dict[int, int] = {}
    assigned = []
    for partition in sorted(described.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
        start = max(low, min(high, starts(partition, low, high)))
        if start < high:
            ends[partition] = high
            assigned.append(TopicPartition(topic, partition, start))
    consumer.assign(assigned)
    return ends


def _take(
    message: Message, ends: dict[int, int], match: Callable[[bytes | None], bool], scan: Scan
) -> None:
    partition, offset = message.partition(), message.offset()
    if partition is None or offset is None or partition not in ends:
        return
    error = message.error()
    if error is not None:
        # The end moved down under the scan (retention): this partition has nothing more.
        if error.code() == KafkaError._PARTITION_EOF:
            del ends[partition]
        return
    scan.read += 1
    if match(message.value()):
        scan.hits.append(KafkaHit(message.topic() or "", partition, offset, _headers(message)))
    if offset + 1 >= ends[partition]:
        del ends[partition]


def matcher(project_id: str, message_id: str) -> Callable[[bytes | None], bool]:
    return _Match(project_id, message_id)


def stage(name: str, reached: bool, detail: str, **extra: Any) -> dict[str, Any]:
    return {"stage": name, "reached": reached, "detail": detail, **extra}


async def trace_event(
    *,
    session: AsyncSession,
    redis: AsyncRedis,
    settings: Settings,
    project_id: uuid.UUID,
    message_id: str,
) -> dict[str, Any]:
    """Every stage `message_id` of `project_id` reached, and what it means in one sentence."""
    project = str(project_id)
    row = await get_event(session, project_id=project_id, message_id=message_id)
    partition = row["kafka_partition"] if row else None
    marked = await _marked(redis, settings.partitions, project, message_id, partition)
    waiting = dead = Scan()
    if row is None and settings.kafka_bootstrap:
        match = matcher(project, message_id)
        security = security_config(settings)
        stored = await _applied_offsets(redis, settings)
        waiting = await asyncio.to_thread(
            scan_topic, settings.kafka_bootstrap, settings.events_topic,
            lambda p, low, _high: stored.get(p, low), match, security=security,
        )  # fmt: skip
        dead = await asyncio.to_thread(
            scan_topic, settings.kafka_bootstrap, settings.dlq_topic,
            lambda _p, _low, high: high - SCAN_LIMIT // settings.partitions, match,
            security=security,
        )  # fmt: skip
    return _answer(message_id, row, marked, waiting, dead, settings)


async def _marked(
    redis: AsyncRedis, partitions: int, project: str, message_id: str, partition: int | None
) -> bool:
    """Whether a dedupe mark says it was counted (in its partition, or any when unknown)."""
    where = range(partitions) if partition is None else [partition]
    found = await redis.exists(*(dedupe_mark(p, project, message_id) for p in where))
    return int(found) > 0


async def _applied_offsets(redis: AsyncRedis, settings: Settings) -> dict[int, int]:
    """Per partition, the next offset the processors will apply (what Redis holds)."""
    name = offset_field(settings.processor_group, settings.events_topic)
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(settings.partitions):
            pipe.hget(offsets_key(partition), name)
        values = await pipe.execute()
    return {p: int(v) for p, v in enumerate(values) if v is not None}


def _answer(
    message_id: str,
    row: dict[str, Any] | None,
    marked: bool,
    waiting: Scan,
    dead: Scan,
    settings: Settings,
) -> dict[str, Any]:
    stages = [
        _accepted(row, waiting, dead, settings),
        _counted(row, marked, settings),
        stage("archived", row is not None, f"stored in the archive, day {row['day']}")
        if row
        else stage("archived", False, "not in the archive"),
        _dead_lettered(dead),
    ]
    status, explanation = _status(row, marked, waiting, dead)
    checked = {
        "kafka_records_read": waiting.read,
        "kafka_scan_complete": waiting.complete,
        "dlq_records_read": dead.read,
        "dlq_scan_complete": dead.complete,
    }
    return {"message_id": message_id, "status": status, "explanation": explanation,
            "stages": stages, "checked": checked}  # fmt: skip


def _accepted(
    row: dict[str, Any] | None, waiting: Scan, dead: Scan, settings: Settings
) -> dict[str, Any]:
    if row is not None:
        where = {"topic": settings.events_topic, "partition": row["kafka_partition"],
                 "offset": row["kafka_offset"], "at": row["received_at"]}  # fmt: skip
        return stage("accepted", True, "acknowledged by the api once Kafka held it", **where)
    if waiting.hits:
        hit = waiting.hits[0]
        return stage("accepted", True, "in Kafka, not yet applied by a processor",
                     topic=hit.topic, partition=hit.partition, offset=hit.offset)  # fmt: skip
    if dead.hits:
        origin = dead.hits[0].headers
        return stage("accepted", True, "acknowledged by the api, then refused by the processor",
                     topic=origin.get("eventpipe-topic"),
                     partition=_int(origin.get("eventpipe-partition")),
                     offset=_int(origin.get("eventpipe-offset")))  # fmt: skip
    return stage("accepted", False, "not found in Kafka's unprocessed records nor in the archive")


def _counted(row: dict[str, Any] | None, marked: bool, settings: Settings) -> dict[str, Any]:
    if marked:
        return stage("counted", True, "counted once in the live aggregates (its dedupe mark)")
    if row is None:
        return stage("counted", False, "no dedupe mark in the live aggregates")
    received = datetime.fromisoformat(row["received_at"])
    if datetime.now(UTC) - received > timedelta(seconds=settings.dedupe_window_s):
        # The count follows the archive write in the same batch; only the mark has expired.
        return stage("counted", True, "counted; its dedupe mark expired with the dedupe window")
    return stage("counted", False, "archived, count not applied yet (it follows the archive)")


def _dead_lettered(dead: Scan) -> dict[str, Any]:
    if not dead.hits:
        return stage("dead_lettered", False, "not in the dead-letter topic's newest records")
    hit = dead.hits[-1]
    return stage("dead_lettered", True, "sent to the dead-letter topic", topic=hit.topic,
                 partition=hit.partition, offset=hit.offset,
                 reason=hit.headers.get("eventpipe-error", ""))  # fmt: skip


def _status(row: dict[str, Any] | None, marked: bool, waiting: Scan, dead: Scan) -> tuple[str, str]:
    if row is not None:
        return "archived", "Accepted, counted and stored in the archive."
    if dead.hits:
        reason = dead.hits[-1].headers.get("eventpipe-error", "no reason recorded")
        return "dead_lettered", (
            f"The processor refused it: {reason}. Once the cause is fixed, "
            "`eventpipe dlq replay` sends it back."
        )
    if waiting.hits:
        return "in_kafka", (
            "Accepted by the api and waiting in Kafka: no processor has applied it yet. "
            "Is a processor running? Its lag is on its /metrics."
        )
    if marked:
        return "counted", "Counted in the live aggregates; the archive write is still to come."
    return "unknown", (
        "No trace of this messageId in this project: not in the archive, the live aggregates' "
        "dedupe marks, Kafka's unprocessed records or the dead-letter topic's newest. The api "
        "did not acknowledge it for this project (check the write key's project and the answer "
        "the sender got), or it left every place before the retention."
    )


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
