"""Kafka client settings shared by every role, and topic bootstrap."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from eventpipe.core.config import Settings
from eventpipe.core.logging import LIBRDKAFKA_LOGGER, RepeatFilter

log = logging.getLogger(__name__)

_QUIET = logging.getLogger(LIBRDKAFKA_LOGGER)
# Every process with a Kafka client gets it, whoever set up its logging (uvicorn's workers too).
_QUIET.addFilter(RepeatFilter())

# PLAINTEXT: what a client given a bootstrap address only (tests, benchmarks) talks.
NO_SECURITY: Mapping[str, str] = MappingProxyType({})


def security_config(settings: Settings) -> dict[str, str]:
    """librdkafka's security settings from EVENTPIPE_KAFKA_*: the same for every client.

    Holds the SASL password in clear, as librdkafka needs it: never log it or put it in a
    message.
    """
    config: dict[str, str] = {"security.protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism is not None:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username is not None:
        config["sasl.username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password is not None:
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    files = {
        "ssl.ca.location": settings.kafka_ssl_ca_location,
        "ssl.certificate.location": settings.kafka_ssl_certificate_location,
        "ssl.key.location": settings.kafka_ssl_key_location,
    }
    config.update({key: str(path) for key, path in files.items() if path is not None})
    return config


def producer_config(
    bootstrap: str, *, security: Mapping[str, str] = NO_SECURITY, **overrides: Any
) -> dict[str, Any]:
    """Producer settings for events: nothing acknowledged is lost, nothing reordered per key.

    `security` is `security_config(settings)` (PLAINTEXT when not given), as for every client."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # Idempotence implies acks=all and bounded in-flight requests, so a retried send is
        # neither duplicated nor reordered by the broker.
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "message.timeout.ms": 10_000,
        # Java's partitioner, so any client maps a key to the same partition as ours.
        "partitioner": "murmur2_random",
        "logger": _QUIET,
        **security,
    }
    config.update(overrides)
    return config


def consumer_config(
    bootstrap: str, group: str, *, security: Mapping[str, str] = NO_SECURITY, **overrides: Any
) -> dict[str, Any]:
    """Consumer settings for the processors: pull at our own pace, commit only what is applied."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # Only records of committed producer transactions; harmless without transactions.
        "isolation.level": "read_committed",
        "logger": _QUIET,
        **security,
    }
    config.update(overrides)
    return config


def admin_client(bootstrap: str, *, security: Mapping[str, str] = NO_SECURITY) -> AdminClient:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _QUIET, **security}
    return AdminClient(config)


def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    *,
    timeout: float = 30.0,
    security: Mapping[str, str] = NO_SECURITY,
) -> None:
    """Create each topic with its partition count unless it already exists, replicated as the
    brokers' `default.replication.factor` says (1 on a local broker, 3 on the local cluster)."""
    admin = admin_client(bootstrap, security=security)
    existing = admin.list_topics(timeout=timeout).topics
    missing = [
        # -1: the brokers' default, so a topic is replicated as the cluster it lives on allows.
        NewTopic(name, num_partitions=count, replication_factor=-1)
        for name, count in topics.items()
        if name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as error:
            if error.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
        log.info("created topic %s", name)


def kafka_ready(
    bootstrap: str, timeout: float, *, security: Mapping[str, str] = NO_SECURITY
) -> bool:
    """True when a broker answers a metadata request within `timeout` seconds."""
    try:
        metadata = admin_client(bootstrap, security=security).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)
