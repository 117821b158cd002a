"""`eventpipe dlq replay` against real Kafka: dead letters back on their topic with their exact key
and value, DLQ offsets committed only after, dry runs touching nothing, letters for another topic
refused and kept, bad settings reported in one line. The CLI runs as a subprocess, as deployed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from eventpipe.core.kafka import admin_client, consumer_config, ensure_topics, producer_config
from eventpipe.domain.events import EventRecord, encode_record, record_key
from eventpipe.domain.keys import ALL
from eventpipe.local.stack import StackUrls
from eventpipe.migrations.runner import upgrade
from eventpipe.processor.dlq import REPLAY_GROUP
from tests.integration.processor_support import (
    Pipeline,
    ProcessorFleet,
    archived_ids,
    high_watermarks,
    read_totals,
    stored_offsets,
)
from tests.integration.support import free_port, wait_for

DLQ_PARTITIONS = 2
JSON_ERROR = "JSON is malformed: invalid character (byte 1)"


@dataclass(frozen=True)
class Letter:
    """A dead letter as the processor writes it; `topic` None leaves the topic header out."""

    key: bytes | None
    value: bytes
    topic: str | None
    partition: int = 0
    error: str = JSON_ERROR


@pytest.fixture
def dlq_topic(stack_urls: StackUrls, topic: str) -> Iterator[str]:
    name = f"{topic}.dlq"
    ensure_topics(stack_urls.kafka_bootstrap, {name: DLQ_PARTITIONS})
    yield name
    admin = admin_client(stack_urls.kafka_bootstrap)
    for future in admin.delete_topics([name], operation_timeout=10).values():
        future.result(timeout=15)


@pytest.fixture
def dlq_env(stack_urls: StackUrls, topic: str, dlq_topic: str, tmp_path: Path) -> dict[str, str]:
    """The environment of an `eventpipe dlq` subprocess on this test's topics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(
        EVENTPIPE_KAFKA_BOOTSTRAP=stack_urls.kafka_bootstrap,
        EVENTPIPE_EVENTS_TOPIC=topic,
        EVENTPIPE_DLQ_TOPIC=dlq_topic,
        EVENTPIPE_STATE_DIR=str(tmp_path),
    )
    return env


def run_dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", "dlq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines a run printed, once it exited 0."""
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout.splitlines()


def dead_letter(bootstrap: str, dlq_topic: str, letters: list[Letter]) -> None:
    """Write `letters` to the DLQ with the headers the processor's `_dead_letter` writes."""
    producer = Producer(producer_config(bootstrap))
    for origin_offset, letter in enumerate(letters, start=100):
        headers: list[tuple[str, str | bytes | None]] = [
            ("eventpipe-error", letter.error.encode()),
            ("eventpipe-partition", b"1"),
            ("eventpipe-offset", str(origin_offset).encode()),
        ]
        if letter.topic is not None:
            headers.append(("eventpipe-topic", letter.topic.encode()))
        producer.produce(
            dlq_topic, letter.value, letter.key, partition=letter.partition, headers=headers
        )
    assert producer.flush(30) == 0


def read_topic(bootstrap: str, topic: str, count: int) -> list[Message]:
    """The first `count` messages of `topic`, by partition and offset, read in a fresh group."""
    consumer = Consumer(consumer_config(bootstrap, f"reader-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    found: list[Message] = []

    def read_enough() -> bool:
        found.extend(m for m in consumer.consume(100, 0.5) if m.error() is None)
        return len(found) >= count

    try:
        wait_for(read_enough, what=f"{count} messages on {topic}", detail=lambda: str(len(found)))
    finally:
        consumer.close()
    return sorted(found, key=lambda m: (m.partition() or 0, m.offset() or 0))


def size(bootstrap: str, topic: str) -> int:
    """How many messages `topic` holds: exact, and no waiting."""
    consumer = Consumer(consumer_config(bootstrap, f"probe-{uuid.uuid4().hex}"))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions
        ]
    finally:
        consumer.close()
    return sum(high - low for low, high in marks)


def committed(bootstrap: str, dlq_topic: str) -> list[int]:
    """The replay group's committed offset per DLQ partition (-1: none). Does not join it."""
    consumer = Consumer(consumer_config(bootstrap, REPLAY_GROUP))
    try:
        asked = [TopicPartition(dlq_topic, p) for p in range(DLQ_PARTITIONS)]
        found = consumer.committed(asked, timeout=10)
    finally:
        consumer.close()
    return [max(tp.offset, -1) for tp in sorted(found, key=lambda tp: tp.partition)]


def pairs(messages: list[Message]) -> list[tuple[bytes | None, bytes | None]]:
    return sorted(((m.key(), m.value()) for m in messages), key=repr)


def test_replay_puts_back_exact_keys_and_values_and_commits(
    stack_urls: StackUrls, topic: str, dlq_topic: str, dlq_env: dict[str, str]
) -> None:
    bootstrap = stack_urls.kafka_bootstrap
    letters = [
        Letter(b"project:user-1", b'{"v": 2, "messageId": "m-1"}', topic),
        Letter(None, b"{not json", topic),
        Letter(b"project:user-2", b"\x00\xffbinary", topic, partition=1),
    ]
    dead_letter(bootstrap, dlq_topic, letters)

    assert succeeded(run_dlq(dlq_env, "replay")) == [
        f"replayed 3 from {dlq_topic} ({topic}: 3); skipped 0"
    ]
    assert pairs(read_topic(bootstrap, topic, 3)) == pairs_of(letters)
    assert committed(bootstrap, dlq_topic) == [2, 1]

    # The offsets are committed: a second run finds nothing, and the DLQ itself is unchanged.
    assert succeeded(run_dlq(dlq_env, "replay")) == [f"replayed 0 from {dlq_topic}; skipped 0"]
    assert size(bootstrap, topic) == 3
    assert size(bootstrap, dlq_topic) == 3


def pairs_of(letters: list[Letter]) -> list[tuple[bytes | None, bytes | None]]:
    return sorted(((letter.key, letter.value) for letter in letters), key=repr)


def test_dry_run_lists_and_changes_nothing_and_limit_takes_part(
    stack_urls: StackUrls, topic: str, dlq_topic: str, dlq_env: dict[str, str]
) -> None:
    bootstrap = stack_urls.kafka_bootstrap
    dead_letter(
        bootstrap,
        dlq_topic,
        [Letter(b"k1", b"{not json", topic), Letter(b"k2", b"[]", topic, error="Expected object")],
    )
    listing = [
        f"partition 0 offset 0: replay to {topic} (partition 1 offset 100): {JSON_ERROR}",
        f"partition 0 offset 1: replay to {topic} (partition 1 offset 101): Expected object",
        f"would replay 2 from {dlq_topic} ({topic}: 2); skipped 0; nothing committed",
    ]
    assert succeeded(run_dlq(dlq_env, "replay", "--dry-run")) == listing
    assert succeeded(run_dlq(dlq_env, "list")) == listing
    assert size(bootstrap, topic) == 0
    assert committed(bootstrap, dlq_topic) == [-1, -1]

    assert succeeded(run_dlq(dlq_env, "replay", "--limit", "1")) == [
        f"replayed 1 from {dlq_topic} ({topic}: 1); skipped 0; 1 not read yet"
    ]
    assert committed(bootstrap, dlq_topic) == [1, -1]
    assert pairs(read_topic(bootstrap, topic, 1)) == [(b"k1", b"{not json")]
    assert succeeded(run_dlq(dlq_env, "replay")) == [
        f"replayed 1 from {dlq_topic} ({topic}: 1); skipped 0"
    ]
    assert size(bootstrap, topic) == 2


def test_a_letter_for_another_topic_is_skipped_and_stays_in_the_dlq(
    stack_urls: StackUrls, topic: str, dlq_topic: str, dlq_env: dict[str, str], unique: str
) -> None:
    bootstrap = stack_urls.kafka_bootstrap
    nowhere = f"test.nowhere.{unique}"
    letters = [
        Letter(b"a", b"good-1", topic),
        Letter(b"b", b"for-the-dlq-itself", dlq_topic),
        Letter(b"c", b"for-nowhere", nowhere),
        Letter(b"d", b"no-topic-header", None),  # the events topic by default
        Letter(b"e", b"good-2", topic),
    ]
    dead_letter(bootstrap, dlq_topic, letters)

    assert succeeded(run_dlq(dlq_env, "replay")) == [
        f"partition 0 offset 1: skipped, names topic {dlq_topic!r}, not the events topic "
        f"{topic!r}: {JSON_ERROR}",
        f"partition 0 offset 2: skipped, names topic {nowhere!r}, which is not on the broker: "
        f"{JSON_ERROR}",
        f"replayed 3 from {dlq_topic} ({topic}: 3); skipped 2 (left in the DLQ)",
    ]
    replayed = [letters[0], letters[3], letters[4]]
    assert pairs(read_topic(bootstrap, topic, 3)) == pairs_of(replayed)
    assert size(bootstrap, topic) == 3
    # Refused means not produced anywhere: the DLQ got nothing back, no topic was auto-created.
    assert pairs(read_topic(bootstrap, dlq_topic, 5)) == pairs_of(letters)
    assert size(bootstrap, dlq_topic) == 5
    assert nowhere not in admin_client(bootstrap).list_topics(timeout=10).topics


def test_missing_bootstrap_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env["EVENTPIPE_STATE_DIR"] = str(tmp_path)
    result = run_dlq(env, "replay")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "eventpipe: EVENTPIPE_KAFKA_BOOTSTRAP is not set (or run everything with `eventpipe up`)"
    ]


def test_an_unreachable_broker_is_one_line_and_exit_1_in_bounded_time(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    bootstrap = f"127.0.0.1:{free_port()}"
    env.update(EVENTPIPE_KAFKA_BOOTSTRAP=bootstrap, EVENTPIPE_STATE_DIR=str(tmp_path))
    started = time.monotonic()
    result = run_dlq(env, "replay")
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"eventpipe: Kafka at {bootstrap}: ")


# --- With a processor: the replayed messages are what it reads ---------------------------------


@pytest.fixture
def pipeline(stack_urls: StackUrls, topic: str, dlq_topic: str, database_url: str) -> Pipeline:
    upgrade(database_url)
    pipeline = Pipeline(stack_urls.kafka_bootstrap, stack_urls.redis_url, database_url, topic)
    assert pipeline.dlq_topic == dlq_topic
    return pipeline


def test_a_processor_counts_a_replayed_event_once_and_dead_letters_poison_again(
    pipeline: Pipeline, fleet: ProcessorFleet
) -> None:
    bootstrap, dlq = pipeline.kafka_bootstrap, pipeline.dlq_topic
    env = pipeline.processor_env()
    fleet.start(env)
    producer = Producer(producer_config(bootstrap))
    producer.produce(pipeline.topic, b"{not json", b"poison")
    assert producer.flush(30) == 0
    wait_for(lambda: size(bootstrap, dlq) == 1, 60, "the processor's own dead letter")

    # An event a since-fixed bug dead-lettered, twice (say two processors hit the bug).
    project = str(uuid.uuid4())
    now = "2026-11-25T14:03:59.123Z"
    record = EventRecord(
        project_id=project, message_id="m-1", type="track", received_at=now, timestamp=now,
        day="2026-11-25", user_id="u", event="A", properties=msgspec.Raw(b'{"n": 1}'),
    )  # fmt: skip
    fixed = Letter(record_key(record), encode_record(record), pipeline.topic, error="a bug")
    dead_letter(bootstrap, dlq, [fixed, fixed])

    assert succeeded(run_dlq(env, "replay")) == [
        f"replayed 3 from {dlq} ({pipeline.topic}: 3); skipped 0"
    ]

    def drained() -> bool:
        return [max(o, 0) for o in stored_offsets(pipeline)] == high_watermarks(pipeline)

    wait_for(
        drained, 60, "the processor to apply everything", lambda: str(stored_offsets(pipeline))
    )
    assert read_totals(pipeline, project) == {"A": 1, ALL: 1}
    assert archived_ids(pipeline, project) == ["m-1"]

    # Still poison: the processor dead-letters it again, after the run's end; the next run takes
    # that copy alone.
    wait_for(lambda: size(bootstrap, dlq) == 4, 60, "the poison back in the DLQ")
    poison = [m.key() for m in read_topic(bootstrap, dlq, 4) if m.value() == b"{not json"]
    assert poison == [b"poison", b"poison"]
    assert succeeded(run_dlq(env, "replay", "--dry-run"))[-1] == (
        f"would replay 1 from {dlq} ({pipeline.topic}: 1); skipped 0; nothing committed"
    )
