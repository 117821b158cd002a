"""The processor role: consumer group `eventpipe-processors` pulling `eventpipe.events`.

Per batch: poison goes to the DLQ (acknowledged first), the archive takes every row (idempotent),
then per partition one atomic Redis step applies dedupe marks, aggregate deltas and the next
offset. Offsets live in Redis with the aggregates; on assignment the consumer seeks there, so a
crash anywhere replays a batch that the archive and the step both absorb. Kafka commits follow,
for lag monitoring only.

Backpressure: while a sink is down the batch in hand waits and retries with backoff; the main
thread pauses every assigned partition and keeps polling the consumer, so the member stays in the
group (each poll resets max.poll.interval.ms) and rebalances are served. It resumes once every
sink has answered.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, TypeVar

import psycopg
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from prometheus_client import start_http_server

from eventpipe.core.config import Settings
from eventpipe.core.kafka import consumer_config, producer_config
from eventpipe.core.signals import StopFlag
from eventpipe.domain.events import EventRecord, record_key
from eventpipe.processor.archive import Archive, archive_row, ensure_partitions
from eventpipe.processor.batch import Batch, PartitionBatch, PoisonMessage, split
from eventpipe.processor.metrics import ProcessorMetrics
from eventpipe.processor.sinks import OffsetGap, RedisStep, StepResult

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
PARTITION_CHECK_S = 3600.0
LAG_CHECK_S = 5.0
# Batches read and queued for the archive beyond the one being applied (memory: a few batches).
ARCHIVE_AHEAD = 2
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
# While paused, the main thread polls Kafka at least this often (and waits this long per poll).
POLL_S = 0.2
# An archive write unanswered this long counts as an outage (a hung server raises nothing).
STALL_S = 1.0
T = TypeVar("T")


class Processor:
    def __init__(self, settings: Settings, stop: StopFlag, metrics: ProcessorMetrics) -> None:
        assert settings.kafka_bootstrap and settings.redis_url and settings.database_url  # noqa: S101
        self.settings = settings
        self.stop = stop
        self.metrics = metrics
        self.topic = settings.events_topic
        self.redis = redis.Redis.from_url(str(settings.redis_url), socket_timeout=10)
        self.step = RedisStep(
            self.redis,
            group=settings.processor_group,
            topic=self.topic,
            dedupe_ttl_s=settings.dedupe_window_s,
        )
        # Each archive thread takes a connection of its own from here for each write.
        self.archives: queue.SimpleQueue[Archive] = queue.SimpleQueue()
        for _ in range(settings.archive_connections):
            self.archives.put(Archive(str(settings.database_url)))
        self.dlq = Producer(producer_config(settings.kafka_bootstrap))
        session_ms = settings.processor_session_timeout_ms
        self.consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                settings.processor_group,
                **{
                    "session.timeout.ms": session_ms,
                    "heartbeat.interval.ms": session_ms // 3,
                    "max.poll.interval.ms": settings.processor_max_poll_interval_ms,
                },
            )
        )
        self.assigned: set[int] = set()
        # Backpressure state. The consumer is used from the main thread only; the archive thread
        # reports through `_archive_failing` (set while its write fails) and `_failure`.
        self.paused: set[int] = set()
        self._paused_since: float | None = None
        self._archive_failing = threading.Event()
        self._failure = ""
        # -inf: both checks run at start (monotonic time may be small after a boot).
        self._partitions_checked = -math.inf
        self._lag_checked = -math.inf

    # Rebalance callbacks run inside consume(): between two batches, or during an outage's polls.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            read = partial(self.step.stored_offset, tp.partition)
            stored = self._retry("redis", read, self._backoff_in_callback)
            if stored is not None:
                tp.offset = stored
        consumer.incremental_assign(partitions)
        self.assigned |= {tp.partition for tp in partitions}
        log.info("assigned %s", sorted((tp.partition, tp.offset) for tp in partitions))
        if self._paused_since is not None:
            self._pause_assigned()  # assigned during an outage: they wait with the others

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        # librdkafka keeps an application's pause on a partition across assignments: lift ours
        # before letting go, or the partition would come back paused in a later assignment.
        if held := sorted(self.paused & revoked):
            consumer.resume([TopicPartition(self.topic, p) for p in held])
            self.paused -= revoked
            self.metrics.paused_partitions.set(len(self.paused))
        self.assigned -= revoked
        log.info("revoked %s", sorted(revoked))

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
                    raise _Stopping from error
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

    def _pause(self, reason: str) -> None:
        """Stop fetching until `_resume`; the batch in hand waits, to be applied after."""
        if self._paused_since is None:
            self._paused_since = time.monotonic()
            log.warning("pausing partitions %s: %s", sorted(self.assigned), reason)
        self._pause_assigned()

    def _pause_assigned(self) -> None:
        if fresh := sorted(self.assigned - self.paused):
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
        messages = self.consumer.consume(self.settings.processor_batch_size, timeout)
        handed_out = split(messages).partitions.values() if messages else []
        for work in handed_out:
            if work.partition in self.assigned:  # else its new owner starts from Redis's offset
                self.consumer.seek(TopicPartition(self.topic, work.partition, work.first_offset))
        self._pause_assigned()

    def _resume(self) -> None:
        """Every sink answered: fetch again the partitions paused that are still assigned."""
        if self._paused_since is None:
            return
        if held := sorted(self.paused & self.assigned):
            self.consumer.resume([TopicPartition(self.topic, p) for p in held])
        log.info("resumed partitions %s after %.1fs paused",
                 held, time.monotonic() - self._paused_since)  # fmt: skip
        self.paused.clear()
        self._paused_since = None
        self.metrics.paused_partitions.set(0)

    def run(self) -> None:
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )  # fmt: skip
        log.info("processor in group %s on %s", self.settings.processor_group, self.topic)
        # Archive writes run in threads of their own, each on its own connection, while the main
        # thread reads the next batches and applies the Redis steps of those already archived:
        # PostgreSQL (the slowest sink) always has the next batch waiting. Each batch's step still
        # follows its own archive write, in order, so a crash anywhere replays safely. Two writes
        # may overlap: both are idempotent, and a retried event in both waits on the other's
        # transaction (ON CONFLICT), so the archive holds one row whichever commits first.
        writer = ThreadPoolExecutor(self.settings.archive_connections, thread_name_prefix="archive")
        pending: deque[tuple[Batch, Future[None]]] = deque()
        try:
            while not self.stop.is_set:
                self._maintain()
                messages = self.consumer.consume(
                    self.settings.processor_batch_size, self.settings.processor_batch_wait_s
                )
                if messages:
                    batch = split(messages)
                    pending.append((batch, writer.submit(self._archive, batch)))
                # Apply what is archived; wait only when too much is read ahead.
                while pending and (len(pending) > ARCHIVE_AHEAD or pending[0][1].done()):
                    self._apply(*pending.popleft())
            while pending:
                self._apply(*pending.popleft())
        except _Stopping:
            log.info("stopping with a batch not applied: it replays on the next start")
        finally:
            writer.shutdown(wait=True, cancel_futures=True)
            self.consumer.close()
            self.dlq.flush(10)
            while not self.archives.empty():
                self.archives.get().close()
            self.redis.close()
            log.info("processor left group %s", self.settings.processor_group)

    def _apply(self, batch: Batch, written: Future[None]) -> None:
        self._await(written)
        if batch.poison:
            self._retry("kafka", lambda: self._dead_letter(batch), self._backoff)
        works, answers = self._retry("redis", lambda: self._step(batch), self._backoff)
        commits = []
        for work, answer in zip(works, answers, strict=True):
            result = self._retry("redis", partial(self._settle_gap, work, answer), self._backoff)
            if result is None:
                continue
            self.metrics.events.inc(result.new)
            self.metrics.duplicates.inc(result.duplicates)
            self._observe_freshness(work.records)
            commits.append(TopicPartition(self.topic, work.partition, work.next_offset))
        self.metrics.batches.inc()
        self.metrics.last_commit.set(time.time())
        if commits:
            self.consumer.commit(offsets=commits, asynchronous=True)
        self._resume()

    def _await(self, written: Future[None]) -> None:
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
                    raise _Stopping
                self._poll_paused(POLL_S)
        written.result()  # raises what the archive raised, _Stopping included

    def _step(self, batch: Batch) -> tuple[list[PartitionBatch], list[StepResult | OffsetGap]]:
        # Chosen at each try: revoked while a sink was down, the new owner replays from Redis.
        works = [w for w in batch.partitions.values() if w.partition in self.assigned]
        answers = self.step.apply_many(
            [(w.partition, w.records, w.first_offset, w.next_offset) for w in works]
        )
        return works, answers

    def _archive(self, batch: Batch) -> None:
        rows = [
            archive_row(record) for work in batch.partitions.values() for record in work.records
        ]
        if not rows:
            return
        try:
            self._retry("postgres", partial(self._write, rows), self._backoff_in_writer)
        except psycopg.DataError:
            # A value PostgreSQL refuses (say a NUL character) must not stop the pipeline:
            # find the rows one by one; those refused go to the DLQ and are not counted.
            for work in batch.partitions.values():
                self._archive_one_by_one(work, batch)
        self._archive_failing.clear()

    def _write(self, rows: list[tuple[str | int | None, ...]]) -> None:
        archive = self.archives.get()
        try:
            archive.write(rows)
        finally:
            self.archives.put(archive)

    def _archive_one_by_one(self, work: PartitionBatch, batch: Batch) -> None:
        kept: list[tuple[EventRecord, bytes, int]] = []
        for record, encoded, offset in zip(work.records, work.encoded, work.offsets, strict=True):
            try:
                write = partial(self._write, [archive_row(record)])
                self._retry("postgres", write, self._backoff_in_writer)
            except psycopg.DataError as error:
                source = PoisonMessage(
                    self.topic, work.partition, offset, record_key(record), encoded
                )
                batch.poison.append((source, f"archive refused it: {error}"))
                continue
            kept.append((record, encoded, offset))
        work.records = [record for record, _, _ in kept]
        work.encoded = [encoded for _, encoded, _ in kept]
        work.offsets = [offset for _, _, offset in kept]

    def _settle_gap(
        self, work: PartitionBatch, answer: StepResult | OffsetGap
    ) -> StepResult | None:
        """The step's result; after a gap, None once the partition is sought back to replay."""
        if isinstance(answer, StepResult):
            return answer
        if work.partition not in self.assigned:
            return None  # revoked during a retry: its new owner settles it
        low, _high = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, work.partition), timeout=10
        )
        if answer.stored < low:
            # The missing offsets are gone from Kafka too (retention): nothing to replay.
            log.error("partition %d: offsets %d..%d expired before they were applied",
                      work.partition, answer.stored, low)  # fmt: skip
            return self.step.apply(work.partition, work.records, -1, work.next_offset)
        log.error("partition %d: Redis lost writes back to offset %d; replaying from there",
                  work.partition, answer.stored)  # fmt: skip
        self.consumer.seek(TopicPartition(self.topic, work.partition, answer.stored))
        return None

    def _dead_letter(self, batch: Batch) -> None:
        for message, problem in batch.poison:
            headers: list[tuple[str, str | bytes | None]] = [
                ("eventpipe-error", problem.encode()[:1000]),
                ("eventpipe-topic", message.topic.encode()),
                ("eventpipe-partition", str(message.partition).encode()),
                ("eventpipe-offset", str(message.offset).encode()),
            ]
            self.dlq.produce(self.settings.dlq_topic, message.value, message.key, headers=headers)
        # The poison's offset may move only once the DLQ holds it.
        if self.dlq.flush(30) > 0:
            raise KafkaException("the DLQ did not acknowledge in time")
        self.metrics.dead_letters.inc(len(batch.poison))
        log.warning("sent %d poison message(s) to %s", len(batch.poison), self.settings.dlq_topic)
        batch.poison.clear()

    def _observe_freshness(self, records: list[Any]) -> None:
        if records:
            received = datetime.fromisoformat(records[-1].received_at)
            self.metrics.freshness.observe(max(0.0, (datetime.now(UTC) - received).total_seconds()))

    def _maintain(self) -> None:
        now = time.monotonic()
        if now - self._partitions_checked > PARTITION_CHECK_S:
            self._partitions_checked = now
            self._retry("postgres", self._ensure_partitions, self._backoff)
            self._resume()
        if now - self._lag_checked > LAG_CHECK_S:
            self._lag_checked = now
            self._update_lag()

    def _ensure_partitions(self) -> None:
        ensure_partitions(
            str(self.settings.database_url),
            today=date.today(),
            ahead=self.settings.archive_days_ahead,
            retention_days=self.settings.archive_retention_days,
        )

    def _update_lag(self) -> None:
        try:
            positions = self.consumer.position(
                [TopicPartition(self.topic, p) for p in sorted(self.assigned)]
            )
        except KafkaException:
            return
        for tp in positions:
            low, high = self.consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            position = tp.offset if tp.offset >= 0 else low
            self.metrics.lag.labels(str(tp.partition)).set(max(0, high - position))


class _Stopping(Exception):
    """SIGTERM arrived while a sink was down."""


def run_processor(settings: Settings, stop: StopFlag) -> None:
    """Run until `stop` is set; the batch in hand is finished first."""
    metrics = ProcessorMetrics()
    if settings.processor_metrics_port:
        try:
            start_http_server(settings.processor_metrics_port, registry=metrics.registry)
        except OSError as error:
            # Metrics are for watching; a taken port must not stop the pipeline itself.
            log.error("no metrics on port %d: %s", settings.processor_metrics_port, error)
    Processor(settings, stop, metrics).run()
