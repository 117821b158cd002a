"""Kafka clients configured through EVENTPIPE_KAFKA_SECURITY_PROTOCOL and EVENTPIPE_KAFKA_SASL_*,
against a broker of this module's own whose SASL_PLAINTEXT listener takes one PLAIN user.

PLAIN over SASL_PLAINTEXT is what Confluent Cloud's SASL_SSL is without the TLS: the settings,
their path to every client and the broker's verdict on the password are the same.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from eventpipe.core.config import Settings
from eventpipe.core.kafka import (
    admin_client,
    consumer_config,
    ensure_topics,
    kafka_ready,
    producer_config,
    security_config,
)
from eventpipe.local.kafka import KafkaBroker, start_kafka_broker
from tests.integration.test_migrate import migrate

pytestmark = pytest.mark.integration

USER = "eventpipe-app"
PASSWORD = "s3cret-for-the-sasl-test"
# A refused password is reported on the first connection: a second or two, not a timeout.
REFUSAL_BOUND_S = 15.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    state_dir = tmp_path_factory.mktemp("sasl-kafka")
    own = start_kafka_broker(state_dir, Settings().cache_dir, sasl_users={USER: PASSWORD})
    try:
        yield own
    finally:
        own.process.stop()


@pytest.fixture
def sasl_bootstrap(broker: KafkaBroker) -> str:
    assert broker.sasl_bootstrap is not None
    assert broker.sasl_bootstrap != broker.bootstrap
    return broker.sasl_bootstrap


def sasl_settings(password: str = PASSWORD) -> Settings:
    return Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username=USER,
        kafka_sasl_password=password,  # pydantic makes it a SecretStr
    )


def test_topics_and_a_round_trip_through_the_sasl_listener(
    sasl_bootstrap: str, unique: str
) -> None:
    security = security_config(sasl_settings())
    topic = f"sasl.{unique}"
    ensure_topics(sasl_bootstrap, {topic: 2}, security=security)
    assert kafka_ready(sasl_bootstrap, 10, security=security)

    producer = Producer(producer_config(sasl_bootstrap, security=security))
    reports: list[KafkaError | None] = []
    producer.produce(topic, b"value", key=b"key", on_delivery=lambda e, _m: reports.append(e))
    assert producer.flush(15) == 0
    assert reports == [None]

    consumer = Consumer(consumer_config(sasl_bootstrap, f"sasl-{unique}", security=security))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + 20
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        assert message is not None, "nothing consumed through the SASL listener in 20 s"
        assert message.error() is None, message.error()
        assert (message.key(), message.value()) == (b"key", b"value")
    finally:
        consumer.close()


def test_a_wrong_password_is_refused_as_an_authentication_error(sasl_bootstrap: str) -> None:
    security = security_config(sasl_settings(password="not-the-password"))
    refused = threading.Event()
    errors: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        errors.append(error)
        if error.code() == KafkaError._AUTHENTICATION:
            refused.set()

    config = producer_config(sasl_bootstrap, security=security, error_cb=on_error)
    producer = Producer(config)
    started = time.monotonic()
    while not refused.is_set() and time.monotonic() - started < REFUSAL_BOUND_S:
        producer.poll(0.2)  # connects, and serves error_cb
    assert refused.is_set(), f"no authentication error in {REFUSAL_BOUND_S:g} s: {errors}"
    assert "not-the-password" not in " ".join(e.str() for e in errors)
    # The readiness probe calls it down too, in its own bounded time.
    assert not kafka_ready(sasl_bootstrap, 3, security=security)


def test_migrate_creates_the_topics_through_the_sasl_listener(
    sasl_bootstrap: str, database_url: str, unique: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    topic = f"sasl.migrate.{unique}"
    env.update(
        EVENTPIPE_DATABASE_URL=database_url,
        EVENTPIPE_KAFKA_BOOTSTRAP=sasl_bootstrap,
        EVENTPIPE_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        EVENTPIPE_KAFKA_SASL_MECHANISM="PLAIN",
        EVENTPIPE_KAFKA_SASL_USERNAME=USER,
        EVENTPIPE_KAFKA_SASL_PASSWORD=PASSWORD,
        EVENTPIPE_EVENTS_TOPIC=topic,
        EVENTPIPE_DLQ_TOPIC=f"{topic}.dlq",
        EVENTPIPE_PARTITIONS="2",
    )
    done = migrate(env)
    assert done.returncode == 0, done.stderr
    assert f"topics {topic}, {topic}.dlq present" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr

    security = security_config(sasl_settings())
    found = admin_client(sasl_bootstrap, security=security).list_topics(timeout=10).topics
    assert {name: len(found[name].partitions) for name in (topic, f"{topic}.dlq")} == {
        topic: 2,
        f"{topic}.dlq": 2,
    }
