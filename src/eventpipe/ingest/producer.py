"""The Kafka producer of the api: a request is answered only after every event is acknowledged."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from eventpipe.core.kafka import NO_SECURITY, producer_config

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge every event in time, or refused one; the client may retry."""


class EventProducer:
    """One confluent-kafka producer per api process, polled by a thread of its own."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        ack_timeout_s: float,
        security: Mapping[str, str] = NO_SECURITY,
    ) -> None:
        self.topic = topic
        self.ack_timeout_s = ack_timeout_s
        self._config = producer_config(
            bootstrap,
            security=security,
            # Give up on a message when the request gives up on it, so no late write surprises.
            **{"message.timeout.ms": int(ack_timeout_s * 1000), "error_cb": self._on_error},
        )
        self._producer = Producer(self._config)
        self._fatal = False
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._poller.start()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            # An idempotent producer that hit a fatal error can send nothing more: replace it.
            log.error("fatal Kafka producer error, replacing the producer: %s", error)
            self._fatal = True
        else:
            log.warning("Kafka producer: %s", error)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.05)

    def _replace_if_fatal(self) -> None:
        if self._fatal:
            self._fatal = False
            old, self._producer = self._producer, Producer(self._config)
            old.purge()
            old.flush(0)  # fires the purged messages' callbacks, so their requests get 503

    async def send(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce (key, value) pairs; return once the broker has acknowledged all of them."""
        if not messages:
            return
        self._replace_if_fatal()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[KafkaError]] = loop.create_future()
        failures: list[KafkaError] = []
        remaining = len(messages)

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            # Runs on the poll thread only, so the counter needs no lock.
            nonlocal remaining
            if error is not None:
                failures.append(error)
            remaining -= 1
            if remaining == 0:
                loop.call_soon_threadsafe(_settle, done, failures)

        self._produce_all(messages, on_delivery)
        try:
            errors = await asyncio.wait_for(done, self.ack_timeout_s + 1)
        except TimeoutError as error:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge within {self.ack_timeout_s:g}s"
            ) from error
        if errors:
            raise KafkaUnavailable(f"Kafka refused {len(errors)} event(s): {errors[0].str()}")

    def _produce_all(self, messages: Sequence[tuple[bytes, bytes]], on_delivery: Any) -> None:
        produce = self._producer.produce
        try:
            for key, value in messages:
                produce(self.topic, value, key, on_delivery=on_delivery)
        except BufferError as error:
            # The local queue is full: Kafka is slow or away. Those already queued still settle.
            raise KafkaUnavailable("the Kafka send queue is full") from error

    def close(self, timeout: float = 10.0) -> None:
        remaining = self._producer.flush(timeout)
        self._stopping.set()
        self._poller.join(timeout)
        if remaining:
            log.warning("%d events were not acknowledged before shutdown", remaining)


def _settle(future: asyncio.Future[list[KafkaError]], failures: list[KafkaError]) -> None:
    if not future.done():
        future.set_result(failures)
