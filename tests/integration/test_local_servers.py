"""eventpipe.local against the real servers: start, answer, keep data across restarts, stop.

Kafka starts are the slow part: this module starts it twice, both in the stack test.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from eventpipe.core.config import Settings
from eventpipe.local.postgres import start_postgres
from eventpipe.local.process import (
    AlreadyRunning,
    ManagedProcess,
    ServerFailed,
    descendants,
    running,
)
from eventpipe.local.redis import start_redis
from eventpipe.local.stack import LocalStack, StackUrls

pytestmark = pytest.mark.integration

TOPIC = "test.local-servers"


def all_gone(pids: list[int]) -> bool:
    return not any(running(pid) for pid in pids)


def server_pids(processes: list[ManagedProcess]) -> list[int]:
    """Each server and everything it started (PostgreSQL's children have their own sessions)."""
    return [pid for process in processes for pid in (process.pid, *descendants(process.pid))]


def produce_one(bootstrap: str, value: bytes) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, num_partitions=1)]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(TOPIC, value)
    assert producer.flush(30) == 0


def consume_one(bootstrap: str, group: str) -> bytes:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([TOPIC])
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                value = message.value()
                assert isinstance(value, bytes)
                return value
    finally:
        consumer.close()
    raise AssertionError(f"no record on {TOPIC} within 60 s")


def write_state(urls: StackUrls) -> None:
    produce_one(urls.kafka_bootstrap, b"kept")
    with redis.Redis.from_url(urls.redis_url) as client:
        client.set("test:kept", "yes")
    with psycopg.connect(urls.database_url) as connection:
        connection.execute("CREATE TABLE kept (value text)")
        connection.execute("INSERT INTO kept VALUES ('yes')")


def test_stack_runs_servers_and_keeps_their_data(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    stack = LocalStack(settings)
    first = stack.start()
    try:
        with pytest.raises(AlreadyRunning, match="already running on"):
            LocalStack(settings).start()
        write_state(first)
        assert consume_one(first.kafka_bootstrap, "first") == b"kept"
        stack.check()
        assert list(stack.processes) == ["kafka", "redis", "postgres"]
        pids = server_pids(list(stack.processes.values()))
        assert len(pids) > 3  # PostgreSQL's own children are there
    finally:
        stack.stop()
    assert all_gone(pids)

    # Every port changes on a restart; the data stays (Kafka's too: static controller quorum).
    with LocalStack(settings) as again:
        second = again.urls
        assert consume_one(second.kafka_bootstrap, "second") == b"kept"
        with redis.Redis.from_url(second.redis_url) as client:
            assert client.get("test:kept") == b"yes"
        with psycopg.connect(second.database_url) as connection:
            assert connection.execute("SELECT value FROM kept").fetchall() == [("yes",)]
        pids = server_pids(list(again.processes.values()))
        again.processes["redis"].kill()
        with pytest.raises(ServerFailed, match="redis: exited unexpectedly"):
            again.check()
    assert all_gone(pids)


def test_stack_passes_configured_urls_through(tmp_path: Path) -> None:
    configured = "redis://127.0.0.1:6399/3"
    settings = Settings(
        state_dir=tmp_path,
        kafka_bootstrap="127.0.0.1:19092",
        redis_url=configured,
        database_url="postgresql://app@127.0.0.1:5499/app",
    )
    with LocalStack(settings) as stack:
        assert stack.processes == {}
        assert stack.urls == StackUrls(
            "127.0.0.1:19092", configured, "postgresql://app@127.0.0.1:5499/app"
        )


def test_redis_keeps_data_across_a_stop_and_a_crash(tmp_path: Path) -> None:
    url, process = start_redis(tmp_path)
    try:
        with pytest.raises(AlreadyRunning, match="redis-server pid"):
            start_redis(tmp_path)
        with redis.Redis.from_url(url) as client:
            assert client.set("stopped", "kept")
    finally:
        process.stop()
    url, process = start_redis(tmp_path)
    try:
        with redis.Redis.from_url(url) as client:
            assert client.get("stopped") == b"kept"
            # The AOF is written before the reply: a crash right after it loses nothing.
            assert client.set("killed", "kept")
    finally:
        process.kill()
    port = urlsplit(url).port
    url, process = start_redis(tmp_path, port=port)  # where its clients expect it
    try:
        assert urlsplit(url).port == port
        with redis.Redis.from_url(url) as client:
            assert client.mget("stopped", "killed") == [b"kept", b"kept"]
    finally:
        process.stop()


def test_postgres_keeps_committed_data_across_a_crash(tmp_path: Path) -> None:
    url, process = start_postgres(tmp_path)
    try:
        assert url.endswith("/eventpipe")
        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT 1, current_database()").fetchone()
            assert row == (1, "eventpipe")
            connection.execute("CREATE TABLE kept AS SELECT 42 AS answer")
        pids = server_pids([process])
    finally:
        process.kill()
    assert all_gone(pids)
    url, process = start_postgres(tmp_path)
    try:
        with psycopg.connect(url) as connection:
            assert connection.execute("SELECT answer FROM kept").fetchone() == (42,)
    finally:
        process.stop()
