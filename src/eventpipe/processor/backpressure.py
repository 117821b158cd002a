"""Backpressure for the processor: while a sink is down the batch in hand waits and retries with
backoff; the main thread pauses every assigned partition and keeps polling the consumer, so the
member stays in the group (each poll resets max.poll.interval.ms) and rebalances are served. It
resumes once every sink has answered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import TypeVar

import psycopg
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition

from eventpipe.core.signals import StopFlag
from eventpipe.processor.batch import split
from eventpipe.processor.metrics import ProcessorMetrics

log = logging.getLogger(__name__)
# Worth waiting out: a server away or overloaded. Anything else is a bug or bad data, not retried.
SINK_ERRORS = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    KafkaException,
    OSError,
)
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
# While paused, the main thread polls Kafka at least this often (and waits this long per poll).
POLL_S = 0.2
# An archive write unanswered this long counts as an outage (a hung server raises nothing):
# well above a 5,000-row write on a busy machine, well below the shortest max.poll.interval.ms.
STALL_S = 3.0
T = TypeVar("T")


class Stopping(Exception):
    """SIGTERM arrived while a sink was down."""


class Backpressure:
    """The processor's retries and pauses while a sink is down.

    `retry` runs on the main thread, `retry_in_writer` on an archive thread, `retry_in_callback`
    inside a rebalance callback; each raises `Stopping` when SIGTERM arrives meanwhile.
    """

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        metrics: ProcessorMetrics,
        stop: StopFlag,
        *,
        batch_size: int,
        assigned: Callable[[], set[int]],
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.metrics = metrics
        self.stop = stop
        self.batch_size = batch_size
        self._assigned = assigned
        # The consumer is used from the main thread only; the archive thread reports through
        # `_archive_failing` (set while its write fails) and `_failure`.
        self.paused: set[int] = set()
        self._paused_since: float | None = None
        self._archive_failing = threading.Event()
        self._failure = ""

    def retry(self, sink: str, action: Callable[[], T]) -> T:
        return self._retry(sink, action, self._backoff)

    def retry_in_writer(self, sink: str, action: Callable[[], T]) -> T:
        return self._retry(sink, action, self._backoff_in_writer)

    def retry_in_callback(self, sink: str, action: Callable[[], T]) -> T:
        return self._retry(sink, action, self._backoff_in_callback)

    def _retry(self, sink: str, action: Callable[[], T], backoff: Callable[[float], bool]) -> T:
        """`action()`, tried again after `backoff(delay)` while `sink` is unavailable; backoff
        returns True when the process is stopping."""
        delay = FIRST_BACKOFF_S
        while True:
            try:
                return action()
            except SINK_ERRORS as error:
                self.metrics.sink_errors.labels(sink).inc()
                self._failure = f"{sink} unavailable: {error}"
                # Pausing logs the outage once and resuming its end; the tries only at debug.
                log.debug("%s; retrying in %.1fs", self._failure, delay)
                if backoff(delay):
                    raise Stopping from error
                delay = min(delay * 2, MAX_BACKOFF_S)

    def _backoff(self, delay: float) -> bool:
        """The main thread's wait between two tries: partitions paused, the consumer polled."""
        self._pause(self._failure)
        deadline = time.monotonic() + delay
        while not self.stop.is_set and (left := deadline - time.monotonic()) > 0:
            self._poll_paused(min(POLL_S, left))
        return self.stop.is_set

    def _backoff_in_writer(self, delay: float) -> bool:
        # The archive thread must not touch the consumer: the main thread sees the flag and pauses.
        self._archive_failing.set()
        return self.stop.wait(delay)

    def _backoff_in_callback(self, delay: float) -> bool:
        # A rebalance callback runs inside consume() and cannot poll; librdkafka does not count
        # time spent inside consume() against max.poll.interval.ms, so only the rebalance waits.
        if delay == FIRST_BACKOFF_S:
            log.warning("%s; the assignment waits for it", self._failure)
        return self.stop.wait(delay)

    def archive_answered(self) -> None:
        """Called by the archive thread once its write is done: it no longer fails."""
        self._archive_failing.clear()

    def on_assigned(self) -> None:
        if self._paused_since is not None:
            self._pause_assigned()  # assigned during an outage: they wait with the others

    def on_revoked(self, revoked: set[int]) -> None:
        # librdkafka keeps an application's pause on a partition across assignments: lift ours
        # before letting go, or the partition would come back paused in a later assignment.
        if held := sorted(self.paused & revoked):
            self.consumer.resume([TopicPartition(self.topic, p) for p in held])
            self.paused -= revoked
            self.metrics.paused_partitions.set(len(self.paused))

    def _pause(self, reason: str) -> None:
        """Stop fetching until `resume`; the batch in hand waits, to be applied after."""
        if self._paused_since is None:
            self._paused_since = time.monotonic()
            log.warning("pausing partitions %s: %s", sorted(self._assigned()), reason)
        self._pause_assigned()

    def _pause_assigned(self) -> None:
        if fresh := sorted(self._assigned() - self.paused):
            self.consumer.pause([TopicPartition(self.topic, p) for p in fresh])
            self.paused.update(fresh)
        self.metrics.paused_partitions.set(len(self.paused))

    def _poll_paused(self, timeout: float) -> None:
        """Poll while paused: this keeps the member in the group and serves rebalances.

        librdkafka drops what it had prefetched for a paused partition and, on resume, fetches
        again from the application's position at the pause. Should a poll hand out a message all
        the same (a race), keeping it for the next batch would put it there twice, its refetched
        copy after it. Its partition is sought back to it instead, which makes the restart point
        explicit: nothing is lost, nothing doubled, the batch in hand is untouched.
        """
        self.metrics.heartbeat.beat()
        messages = self.consumer.consume(self.batch_size, timeout)
        handed_out = split(messages).partitions.values() if messages else []
        for work in handed_out:
            if work.partition in self._assigned():  # else its new owner starts from Redis's offset
                self.consumer.seek(TopicPartition(self.topic, work.partition, work.first_offset))
        self._pause_assigned()

    def resume(self) -> None:
        """Every sink answered: fetch again the partitions paused that are still assigned."""
        if self._paused_since is None:
            return
        if held := sorted(self.paused & self._assigned()):
            self.consumer.resume([TopicPartition(self.topic, p) for p in held])
        log.info("resumed partitions %s after %.1fs paused",
                 held, time.monotonic() - self._paused_since)  # fmt: skip
        self.paused.clear()
        self._paused_since = None
        self.metrics.paused_partitions.set(0)

    def await_archive(self, written: Future[None]) -> None:
        """The archive write's outcome; while it retries or hangs, pause and poll meanwhile."""
        started = time.monotonic()
        while not wait([written], timeout=POLL_S).done:
            if self._paused_since is None:
                if self._archive_failing.is_set():
                    self._pause(self._failure)
                elif time.monotonic() - started > STALL_S:
                    self._pause(f"the archive has not answered for {STALL_S:.0f}s")
            if self._paused_since is not None:
                if self.stop.is_set:
                    raise Stopping
                self._poll_paused(POLL_S)
        written.result()  # raises what the archive raised, Stopping included
