"""The Kafka producer of the api: a request is answered only after every event is acknowledged."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from eventpipe.core.kafka import NO_SECURITY, producer_config

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge every event in time, or refused one; the client may retry."""


# How often the event loop serves the producer's delivery reports while a request waits for
# them (each is at most this late), and while none does (errors and fatal states are noticed).
POLL_S = 0.001
IDLE_POLL_S = 0.1
QUEUE_FULL = "the Kafka send queue is full"


class _Waiter:
    """One request's messages: settled when the last delivery report is in."""

    __slots__ = ("deadline", "failures", "future", "producer", "remaining")

    def __init__(self, producer: EventProducer, future: asyncio.Future[None], count: int) -> None:
        self.producer = producer
        self.future = future
        self.remaining = count
        self.failures: list[KafkaError] = []
        self.deadline = future.get_loop().time() + producer.ack_timeout_s + 1

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.failures.append(error)
        self.remaining -= 1
        if self.remaining == 0:
            self.producer.settle(self)


class EventProducer:
    """One confluent-kafka producer per api process, served by the process's event loop.

    The loop calls `poll(0)` every millisecond while a request waits: its delivery reports are
    handled where the request's future lives, with no thread to wake, no GIL to hand over and no
    cross-thread call per request (a poll thread cost each request a wake-up of the loop). A
    request waits at most its messages' timeout (`message.timeout.ms`, librdkafka reports every
    message by then) plus a second, checked by the same timer.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        ack_timeout_s: float,
        security: Mapping[str, str] = NO_SECURITY,
        linger_ms: float = 20,
    ) -> None:
        self.topic = topic
        self.ack_timeout_s = ack_timeout_s
        self._config = producer_config(
            bootstrap,
            security=security,
            # Give up on a message when the request gives up on it, so no late write surprises.
            **{
                "message.timeout.ms": int(ack_timeout_s * 1000),
                "linger.ms": linger_ms,
                "error_cb": self._on_error,
            },
        )
        self._producer = Producer(self._config)
        self._fatal = False
        self._closed = False
        self._waiting: deque[_Waiter] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._timer: asyncio.TimerHandle | None = None

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            # An idempotent producer that hit a fatal error can send nothing more: replace it.
            log.error("fatal Kafka producer error, replacing the producer: %s", error)
            self._fatal = True
        else:
            log.warning("Kafka producer: %s", error)

    def _replace_if_fatal(self) -> None:
        if self._fatal:
            self._fatal = False
            old, self._producer = self._producer, Producer(self._config)
            old.purge()
            old.flush(0)  # fires the purged messages' callbacks, so their requests get 503

    def _serve(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._producer.poll(0)
        waiting = self._waiting
        while waiting and waiting[0].future.done():
            waiting.popleft()
        assert self._loop is not None  # noqa: S101 - set by the send that started the timer
        now = self._loop.time()
        while waiting and waiting[0].deadline <= now:
            late = waiting.popleft()
            if not late.future.done():
                message = f"Kafka did not acknowledge within {self.ack_timeout_s:g}s"
                late.future.set_exception(KafkaUnavailable(message))
        self._timer = self._loop.call_later(POLL_S if waiting else IDLE_POLL_S, self._serve)

    def settle(self, waiter: _Waiter) -> None:
        """Called with a request's last delivery report: on the loop, or from `close`'s flush."""
        if threading.get_ident() == self._loop_thread:
            _settle(waiter)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(_settle, waiter)

    async def send(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce (key, value) pairs; return once the broker has acknowledged all of them."""
        if not messages:
            return
        self._replace_if_fatal()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        waiter = _Waiter(self, self._loop.create_future(), len(messages))
        self._produce_all(messages, waiter.on_delivery)
        idle = not self._waiting
        self._waiting.append(waiter)
        if idle or self._timer is None:
            self._wake()
        await waiter.future
        if waiter.failures:
            errors = waiter.failures
            raise KafkaUnavailable(f"Kafka refused {len(errors)} event(s): {errors[0].str()}")

    def _wake(self) -> None:
        # The timer may be at its idle pace: serve this request's reports at the busy one.
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None  # noqa: S101 - set by send
        self._timer = self._loop.call_later(POLL_S, self._serve)

    def _produce_all(self, messages: Sequence[tuple[bytes, bytes]], on_delivery: Any) -> None:
        # One call for the request: produce_batch partitions by key as produce does (the same
        # partitioner, checked by a test) and costs about a fifth less per message (measured).
        batch = [{"key": key, "value": value} for key, value in messages]
        # The local queue is full (Kafka is slow or away): those already queued still settle.
        try:
            queued = self._producer.produce_batch(self.topic, batch, on_delivery=on_delivery)
        except BufferError as error:
            raise KafkaUnavailable(QUEUE_FULL) from error
        if queued != len(batch):
            raise KafkaUnavailable(QUEUE_FULL)

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued (from any thread: the reports it fires reach the loop)."""
        self._closed = True
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("%d events were not acknowledged before shutdown", remaining)


def _settle(waiter: _Waiter) -> None:
    if not waiter.future.done():
        waiter.future.set_result(None)
