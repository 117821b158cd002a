"""The processor against real Kafka, Redis and PostgreSQL: exact counts, archive, DLQ."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date

import httpx
import msgspec
import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Message, Producer
from redis.asyncio import Redis as AsyncRedis

from eventpipe.core.config import Settings
from eventpipe.core.kafka import consumer_config, ensure_topics, producer_config
from eventpipe.core.signals import StopFlag
from eventpipe.domain import aggregates
from eventpipe.domain.events import EventRecord, decode_record, encode_record, record_key
from eventpipe.domain.keys import offset_field, offsets_key
from eventpipe.migrations.runner import upgrade
from eventpipe.processor.app import run_processor
from eventpipe.processor.archive import Archive, archive_row, ensure_partitions
from eventpipe.processor.sinks import OffsetGap, RedisStep, StepResult
from tests.integration.support import free_port, wait_for

PARTITIONS = 3


def make_record(project: str, message_id: str, user: str, name: str) -> EventRecord:
    now = "2026-11-25T14:03:59.123Z"
    return EventRecord(
        project_id=project, message_id=message_id, type="track", received_at=now,
        timestamp=now, day="2026-11-25", user_id=user, event=name,
        properties=msgspec.Raw(b'{"n": 1}'),
    )  # fmt: skip


def dead_letters(settings: Settings, count: int = 1) -> list[Message]:
    """Wait for the DLQ to hold `count` messages; the messages read."""
    consumer = Consumer(consumer_config(settings.kafka_bootstrap or "", f"dlq-{uuid.uuid4().hex}"))
    consumer.subscribe([settings.dlq_topic])
    found: list[Message] = []

    def dead_lettered() -> bool:
        found.extend(consumer.consume(10, 0.5))
        return len(found) >= count

    wait_for(dead_lettered, what=f"{count} DLQ message(s)")
    consumer.close()
    return found


@pytest.fixture
def processor_settings(settings: Settings, topic: str) -> Settings:
    assert settings.database_url is not None
    upgrade(str(settings.database_url))
    ensure_topics(settings.kafka_bootstrap or "", {f"{topic}.dlq": 1})
    return settings.model_copy(
        update={
            "events_topic": topic,
            "dlq_topic": f"{topic}.dlq",
            "processor_group": f"{topic}-processors",
            "processor_metrics_port": 0,
            "processor_batch_size": 500,
        }
    )


@pytest.fixture
def running_processor(processor_settings: Settings) -> Iterator[StopFlag]:
    stop = StopFlag()
    thread = threading.Thread(target=run_processor, args=(processor_settings, stop))
    thread.start()
    yield stop
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()


def produce(settings: Settings, records: list[EventRecord], raw: tuple[bytes, ...] = ()) -> None:
    producer = Producer(producer_config(settings.kafka_bootstrap or ""))
    for record in records:
        producer.produce(settings.events_topic, encode_record(record), record_key(record))
    for value in raw:
        producer.produce(settings.events_topic, value, b"poison")
    assert producer.flush(30) == 0


def totals(settings: Settings, project: str) -> dict[str, int]:
    async def read() -> dict[str, int]:
        client = AsyncRedis.from_url(str(settings.redis_url))
        try:
            return await aggregates.totals(client, project_id=project, partitions=PARTITIONS)
        finally:
            await client.aclose()

    return asyncio.run(read())


def archived(settings: Settings, project: str) -> int:
    with psycopg.connect(str(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE project_id = %s", (project,)
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.usefixtures("running_processor")
def test_duplicates_are_counted_once_and_archived_once(processor_settings: Settings) -> None:
    project = str(uuid.uuid4())
    users = [f"user-{i}" for i in range(50)]
    records = [
        make_record(project, f"m-{i}", users[i % len(users)], "Click" if i % 3 else "Buy")
        for i in range(600)
    ]
    retried = records[100:250]  # a client resending part of its batches
    produce(processor_settings, records + retried)
    expected = {"Click": 400, "Buy": 200, "$all": 600}
    wait_for(lambda: totals(processor_settings, project) == expected, 60, "exact totals")
    assert archived(processor_settings, project) == 600

    async def uniques() -> int:
        client = AsyncRedis.from_url(str(processor_settings.redis_url))
        count = await aggregates.unique_users(
            client, project_id=project, partitions=PARTITIONS, period="day", bucket="20261125"
        )
        await client.aclose()
        return count

    # Within HyperLogLog's error (0.81 % standard error; a hash collision can cost one user).
    assert abs(asyncio.run(uniques()) - len(users)) <= 2


@pytest.mark.usefixtures("running_processor")
def test_poison_goes_to_the_dlq_and_the_partition_keeps_flowing(
    processor_settings: Settings,
) -> None:
    project = str(uuid.uuid4())
    newer = encode_record(msgspec.structs.replace(make_record(project, "v2", "u", "A"), v=2))
    produce(processor_settings, [make_record(project, "before", "u", "A")], (b"{not json", newer))
    produce(processor_settings, [make_record(project, "after", "u", "A")])
    wait_for(lambda: totals(processor_settings, project).get("A") == 2, what="both good events")
    found = {message.value(): message for message in dead_letters(processor_settings, 2)}
    assert set(found) == {b"{not json", newer}
    headers = dict(found[b"{not json"].headers() or [])
    assert headers["eventpipe-topic"] == processor_settings.events_topic.encode()
    error = headers["eventpipe-error"]
    assert isinstance(error, bytes) and b"JSON" in error
    error = dict(found[newer].headers() or [])["eventpipe-error"]
    assert isinstance(error, bytes) and b"record version 2" in error
    assert archived(processor_settings, project) == 2


def test_metrics_are_served_in_prometheus_format(processor_settings: Settings) -> None:
    port = free_port()
    with_metrics = processor_settings.model_copy(update={"processor_metrics_port": port})
    stop = StopFlag()
    thread = threading.Thread(target=run_processor, args=(with_metrics, stop))
    thread.start()
    try:
        project = str(uuid.uuid4())
        record = make_record(project, "m-1", "u", "A")
        produce(with_metrics, [record, record])
        wait_for(lambda: totals(with_metrics, project).get("A") == 1, what="the event")

        def metric(name: str) -> float:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            line = next(x for x in text.splitlines() if x.startswith(name + " "))
            return float(line.split()[1])

        wait_for(lambda: metric("eventpipe_duplicates_dropped_total") == 1, what="dup metric")
        assert metric("eventpipe_events_processed_total") == 1
        assert metric("eventpipe_batches_total") >= 1
        assert metric("eventpipe_freshness_seconds_count") >= 1
        assert metric("eventpipe_last_commit_timestamp") > time.time() - 60
    finally:
        stop.set()
        thread.join(timeout=60)


def test_redis_step_refuses_a_batch_past_a_lost_offset(processor_settings: Settings) -> None:
    client = redis.Redis.from_url(str(processor_settings.redis_url))
    step = RedisStep(client, group=processor_settings.processor_group, topic="t", dedupe_ttl_s=60)
    project = str(uuid.uuid4())
    first = [make_record(project, f"a{i}", "u", "A") for i in range(10)]
    assert step.apply(0, first, 0, 10).new == 10
    assert step.apply(0, first, 0, 10) == StepResult(0, 0, True)  # a replay changes nothing
    # Redis comes back from a failover missing its last writes: the offset is behind.
    client.hset(offsets_key(0), offset_field(processor_settings.processor_group, "t"), "5")
    later = [make_record(project, f"b{i}", "u", "A") for i in range(10)]
    with pytest.raises(OffsetGap) as gap:
        step.apply(0, later, 10, 20)
    assert gap.value.stored == 5
    assert step.stored_offset(0) == 5
    assert step.apply(0, later, -1, 20).new == 10  # what retention already deleted is skipped
    client.close()


@pytest.mark.usefixtures("running_processor")
def test_a_row_the_archive_refuses_goes_to_the_dlq_and_the_rest_flows(
    processor_settings: Settings,
) -> None:
    project = str(uuid.uuid4())
    bad = msgspec.structs.replace(
        make_record(project, "bad", "u", "A"), properties=msgspec.Raw(b'{"a": "\\u0000"}')
    )
    good = [make_record(project, f"g{i}", "u", "A") for i in range(5)]
    produce(processor_settings, [good[0], bad, *good[1:]])
    wait_for(lambda: totals(processor_settings, project).get("A") == 5, what="the good events")
    assert archived(processor_settings, project) == 5
    found = dead_letters(processor_settings)
    assert decode_record(found[0].value() or b"").message_id == "bad"
    headers = dict(found[0].headers() or [])
    error = headers["eventpipe-error"]
    assert isinstance(error, bytes) and error.startswith(b"archive refused it")


def test_processors_starting_together_create_partitions_once(database_url: str) -> None:
    upgrade(database_url)
    errors: list[str] = []

    def maintain() -> None:
        try:
            ensure_partitions(database_url, today=date(2030, 1, 1), ahead=7, retention_days=90)
        except psycopg.Error as error:
            errors.append(repr(error))

    threads = [threading.Thread(target=maintain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = 'events'"
        ).fetchone()
    assert rows is not None and rows[0] == 1 + 9  # the default partition, and 9 days


def test_two_archive_writers_with_the_same_retried_events_do_not_deadlock(
    database_url: str,
) -> None:
    """The processor's two archive connections may write two batches holding the same retried
    events, in any order; the archive keeps one row each and neither write fails."""
    upgrade(database_url)
    ensure_partitions(database_url, today=date(2026, 11, 25), ahead=1, retention_days=90)
    project = str(uuid.uuid4())

    def rows(prefix: str, count: int) -> list[tuple[str | int | None, ...]]:
        return [
            archive_row(make_record(project, f"{prefix}-{i}", "u", "A"), 0, i) for i in range(count)
        ]

    shared = rows("m", 300)
    batches = [shared + rows("a", 100), shared[::-1] + rows("b", 100)]
    errors: list[str] = []
    start = threading.Barrier(2)

    def write(rows: list[tuple[str | int | None, ...]]) -> None:
        archive = Archive(database_url)
        try:
            archive.write([])  # connected, so both writes start together
            start.wait(timeout=30)
            for _ in range(20):
                archive.write(rows)
        except psycopg.Error as error:
            errors.append(repr(error))
        finally:
            archive.close()

    threads = [threading.Thread(target=write, args=(rows,)) for rows in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert archived_count(database_url, project) == 500


def archived_count(database_url: str, project: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE project_id = %s", (project,)
        ).fetchone()
    return int(row[0]) if row else 0
