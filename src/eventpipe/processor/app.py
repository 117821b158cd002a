"""The processor role: a consumer in group `eventpipe-processors` on the events topic.

For now it joins the group and holds its partitions; aggregation and archiving come with the
stream-processor issue. It commits nothing, so no event is marked done before it is applied.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer

from eventpipe.core.config import Settings
from eventpipe.core.kafka import consumer_config
from eventpipe.core.signals import StopFlag

log = logging.getLogger(__name__)


def _log_assignment(_consumer: Any, partitions: list[Any]) -> None:
    log.info("assigned %s", sorted(p.partition for p in partitions))


def _log_revocation(_consumer: Any, partitions: list[Any]) -> None:
    log.info("revoked %s", sorted(p.partition for p in partitions))


def run_processor(settings: Settings, stop: StopFlag) -> None:
    """Join the consumer group and poll until `stop` is set, then leave the group."""
    assert settings.kafka_bootstrap is not None  # noqa: S101 - checked by the CLI
    consumer = Consumer(consumer_config(settings.kafka_bootstrap, settings.processor_group))
    consumer.subscribe(
        [settings.events_topic], on_assign=_log_assignment, on_revoke=_log_revocation
    )
    log.info("processor joined group %s on %s", settings.processor_group, settings.events_topic)
    try:
        while not stop.is_set:
            consumer.poll(0.5)
    finally:
        # close() commits nothing (auto-commit is off) and leaves the group at once.
        consumer.close()
        log.info("processor left group %s", settings.processor_group)
