"""The processor role: consumer group `eventpipe-processors` pulling `eventpipe.events`.

Per batch: poison goes to the DLQ (acknowledged first), the archive takes every row (idempotent),
then per partition one atomic Redis step applies dedupe marks, aggregate deltas and the next
offset. Offsets live in Redis with the aggregates; on assignment the consumer seeks there, so a
crash anywhere replays a batch that the archive and the step both absorb. Kafka commits follow,
for lag monitoring only.

While a sink is down, `Backpressure` (backpressure.py) holds the batch in hand, pauses the
partitions and keeps the member in the group until every sink has answered.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

import psycopg
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from eventpipe.core.config import Settings
from eventpipe.core.health import serve_health
from eventpipe.core.kafka import consumer_config, producer_config, security_config
from eventpipe.core.signals import StopFlag
from eventpipe.domain.events import EventRecord, record_key
from eventpipe.processor.archive import Archive, archive_row, ensure_partitions

# Re-exported (`X as X`): defined here before backpressure.py, and still importable from here.
from eventpipe.processor.backpressure import FIRST_BACKOFF_S as FIRST_BACKOFF_S
from eventpipe.processor.backpressure import MAX_BACKOFF_S as MAX_BACKOFF_S
from eventpipe.processor.backpressure import POLL_S as POLL_S
from eventpipe.processor.backpressure import SINK_ERRORS as SINK_ERRORS
from eventpipe.processor.backpressure import STALL_S as STALL_S
from eventpipe.processor.backpressure import Backpressure, Stopping
from eventpipe.processor.batch import Batch, PartitionBatch, PoisonMessage, split
from eventpipe.processor.live import LivePublisher
from eventpipe.processor.metrics import ProcessorMetrics
from eventpipe.processor.sinks import OffsetGap, RedisStep, StepResult

log = logging.getLogger(__name__)
PARTITION_CHECK_S = 3600.0
LAG_CHECK_S = 5.0
# Batches read and queued for the archive beyond the one being applied (memory: a few batches).
ARCHIVE_AHEAD = 2


class Processor:
    def __init__(self, settings: Settings, stop: StopFlag, metrics: ProcessorMetrics) -> None:
        # The processor command checks these first (cli.require).
        assert settings.kafka_bootstrap and settings.redis_url and settings.database_url  # noqa: S101
        self.settings = settings
        self.stop = stop
        self.metrics = metrics
        self.topic = settings.events_topic
        # 5 s for a reply and for a connection, as the other roles: a stalled Redis is noticed
        # (and the partitions paused) that soon.
        self.redis = redis.Redis.from_url(
            str(settings.redis_url), socket_timeout=5, socket_connect_timeout=5
        )
        self.step = RedisStep(
            self.redis,
            group=settings.processor_group,
            topic=self.topic,
            dedupe_ttl_s=settings.dedupe_window_s,
        )
        self.live = LivePublisher(self.redis)
        # Each archive thread takes a connection of its own from here for each write.
        self.archives: queue.SimpleQueue[Archive] = queue.SimpleQueue()
        for _ in range(settings.archive_connections):
            self.archives.put(Archive(str(settings.database_url)))
        security = security_config(settings)
        self.dlq = Producer(producer_config(settings.kafka_bootstrap, security=security))
        session_ms = settings.processor_session_timeout_ms
        self.consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                settings.processor_group,
                security=security,
                **{
                    "session.timeout.ms": session_ms,
                    "heartbeat.interval.ms": session_ms // 3,
                    "max.poll.interval.ms": settings.processor_max_poll_interval_ms,
                },
            )
        )
        self.assigned: set[int] = set()
        self.backpressure = Backpressure(
            self.consumer, self.topic, metrics, stop,
            batch_size=settings.processor_batch_size, assigned=lambda: self.assigned,
        )  # fmt: skip
        # -inf: both checks run at start (monotonic time may be small after a boot).
        self._partitions_checked = -math.inf
        self._lag_checked = -math.inf

    # Rebalance callbacks run inside consume(): between two batches, or during an outage's polls.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            read = partial(self.step.stored_offset, tp.partition)
            stored = self.backpressure.retry_in_callback("redis", read)
            if stored is not None:
                tp.offset = stored
        consumer.incremental_assign(partitions)
        self.assigned |= {tp.partition for tp in partitions}
        log.info("assigned %s", sorted((tp.partition, tp.offset) for tp in partitions))
        self.backpressure.on_assigned()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        self.backpressure.on_revoked(revoked)
        self.assigned -= revoked
        log.info("revoked %s", sorted(revoked))

    def readiness(self) -> tuple[bool, str]:
        """Ready while no sink is down (a paused processor holds its partitions, idle)."""
        if self.backpressure.paused:
            return False, f"{len(self.backpressure.paused)} partitions paused: a sink is down"
        return True, f"consuming {len(self.assigned)} partitions of {self.topic}"

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
                self.metrics.heartbeat.beat()
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
        except Stopping:
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
        self.backpressure.await_archive(written)
        if batch.poison:
            self.backpressure.retry("kafka", lambda: self._dead_letter(batch))
        works, answers = self.backpressure.retry("redis", lambda: self._step(batch))
        commits, applied = [], []
        for work, answer in zip(works, answers, strict=True):
            result = self.backpressure.retry("redis", partial(self._settle_gap, work, answer))
            if result is None:
                continue
            self.metrics.events.inc(result.new)
            self.metrics.duplicates.inc(result.duplicates)
            self._observe_freshness(work.records)
            if result.new:
                applied.append((work, result))
            commits.append(TopicPartition(self.topic, work.partition, work.next_offset))
        if applied:
            self.live.publish(applied)
        self.metrics.batches.inc()
        self.metrics.last_commit.set(time.time())
        if commits:
            self.consumer.commit(offsets=commits, asynchronous=True)
        self.backpressure.resume()

    def _step(self, batch: Batch) -> tuple[list[PartitionBatch], list[StepResult | OffsetGap]]:
        # Chosen at each try: revoked while a sink was down, the new owner replays from Redis.
        works = [w for w in batch.partitions.values() if w.partition in self.assigned]
        answers = self.step.apply_many(
            [(w.partition, w.records, w.first_offset, w.next_offset) for w in works]
        )
        return works, answers

    def _archive(self, batch: Batch) -> None:
        rows = [
            archive_row(record, work.partition, offset)
            for work in batch.partitions.values()
            for record, offset in zip(work.records, work.offsets, strict=True)
        ]
        if not rows:
            return
        try:
            self.backpressure.retry_in_writer("postgres", partial(self._write, rows))
        except psycopg.DataError:
            # A value PostgreSQL refuses (say a NUL character) must not stop the pipeline:
            # find the rows one by one; those refused go to the DLQ and are not counted.
            for work in batch.partitions.values():
                self._archive_one_by_one(work, batch)
        self.backpressure.archive_answered()

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
                write = partial(self._write, [archive_row(record, work.partition, offset)])
                self.backpressure.retry_in_writer("postgres", write)
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
            self.backpressure.retry("postgres", self._ensure_partitions)
            self.backpressure.resume()
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


def run_processor(settings: Settings, stop: StopFlag) -> None:
    """Run until `stop` is set; the batch in hand is finished first."""
    metrics = ProcessorMetrics()
    processor = Processor(settings, stop, metrics)
    if settings.processor_metrics_port:
        serve_health(
            settings.processor_metrics_port,
            registry=metrics.registry,
            # Kafka gives a member's partitions away after this long without a poll: so do we.
            liveness=metrics.heartbeat.liveness(settings.processor_max_poll_interval_ms / 1000),
            readiness=processor.readiness,
        )
    processor.run()
