"""The project's own Kafka, Redis and PostgreSQL settings, used against the real servers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer
from fastapi.testclient import TestClient

from eventpipe.api.app import create_app
from eventpipe.core.config import Settings
from eventpipe.core.kafka import consumer_config, producer_config
from eventpipe.core.signals import StopFlag
from eventpipe.local.stack import StackUrls
from eventpipe.migrations.runner import downgrade, upgrade
from eventpipe.processor.app import run_processor
from tests.integration.support import free_port, group_members, wait_for


def test_produce_and_consume_with_project_settings(
    stack_urls: StackUrls, topic: str, group_id: str
) -> None:
    producer = Producer(producer_config(stack_urls.kafka_bootstrap))
    delivered: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
        else:
            delivered.append(message)

    sent = {f"user-{i}".encode(): f"event-{i}".encode() for i in range(20)}
    for key, value in sent.items():
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert not errors
    assert len(delivered) == len(sent)

    consumer = Consumer(consumer_config(stack_urls.kafka_bootstrap, group_id))
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}

    def consumed_all() -> bool:
        for message in consumer.consume(num_messages=100, timeout=0.5):
            assert message.error() is None
            key, value = message.key(), message.value()
            assert key is not None and value is not None
            received[key] = value
            # Auto-store is off: an offset moves only once its record is handled.
            consumer.store_offsets(message)
        return len(received) == len(sent)

    wait_for(consumed_all, what="every produced record")
    committed = consumer.commit(asynchronous=False)
    consumer.close()
    assert received == sent
    assert committed is not None
    assert sum(part.offset for part in committed) == len(sent)


def test_redis_round_trip_with_persistence_on(stack_urls: StackUrls, redis_prefix: str) -> None:
    client = redis.Redis.from_url(stack_urls.redis_url)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.set(f"{redis_prefix}greeting", b"hello", ex=60)
    assert client.get(f"{redis_prefix}greeting") == b"hello"
    ttl = client.ttl(f"{redis_prefix}greeting")
    assert isinstance(ttl, int) and 0 < ttl <= 60
    client.close()


def _tables(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def test_migrations_up_and_down(database_url: str) -> None:
    upgrade(database_url)
    assert {"users", "projects", "memberships", "alembic_version"} <= _tables(database_url)
    downgrade(database_url, "base")
    assert _tables(database_url) == {"alembic_version"}
    upgrade(database_url)
    assert "users" in _tables(database_url)


def test_readyz_reports_every_dependency_ok(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        response = client.get("/readyz")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert {name: check["status"] for name, check in checks.items()} == {
        "kafka": "ok",
        "redis": "ok",
        "postgres": "ok",
    }


def test_readyz_is_503_while_a_dependency_is_down(settings: Settings) -> None:
    broken = settings.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",
            "probe_timeout_s": 1.0,
        }
    )
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["kafka"]["status"] == "down"
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["postgres"]["status"] == "ok"


def test_unknown_route_answers_json(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def _member_count(bootstrap: str, group: str) -> int | None:
    members = group_members(bootstrap, group)
    return None if members is None else len(members)


def test_processor_joins_its_group_and_leaves_on_stop(settings: Settings, topic: str) -> None:
    assert settings.kafka_bootstrap is not None
    group = f"{topic}-processors"
    upgrade(str(settings.database_url))
    processor_settings = settings.model_copy(
        update={"events_topic": topic, "processor_group": group, "processor_metrics_port": 0}
    )
    stop = StopFlag()
    thread = threading.Thread(target=run_processor, args=(processor_settings, stop))
    thread.start()
    try:
        wait_for(lambda: _member_count(settings.kafka_bootstrap or "", group) == 1, what="join")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert _member_count(settings.kafka_bootstrap, group) == 0


def _doctor(env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_doctor_passes_on_working_servers_and_names_a_broken_one(
    stack_urls: StackUrls, tmp_path: Path
) -> None:
    good = {
        "EVENTPIPE_KAFKA_BOOTSTRAP": stack_urls.kafka_bootstrap,
        "EVENTPIPE_REDIS_URL": stack_urls.redis_url,
        "EVENTPIPE_DATABASE_URL": stack_urls.database_url,
        "EVENTPIPE_STATE_DIR": str(tmp_path),
        "EVENTPIPE_HTTP_PORT": str(free_port()),
    }
    result = _doctor(good)
    assert result.returncode == 0, result.stdout
    assert {line.split(":")[0] for line in result.stdout.splitlines()} >= {
        "ok   kafka",
        "ok   redis",
        "ok   postgres",
    }
    broken = _doctor({**good, "EVENTPIPE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert broken.returncode == 1
    assert "FAIL redis" in broken.stdout
    assert "fix: check EVENTPIPE_REDIS_URL" in broken.stdout
    assert "Traceback" not in broken.stdout + broken.stderr
