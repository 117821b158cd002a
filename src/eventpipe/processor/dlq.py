"""`eventpipe dlq replay`: dead letters sent back to the events topic once their cause is fixed.

The replay reads the DLQ in its own consumer group, from that group's committed offsets up to the
high watermarks seen at start, so poison that comes back while it runs (still poison) waits for
the next run instead of looping. Each batch is re-produced and acknowledged by Kafka before its DLQ
offsets are committed: a crash replays that batch again rather than losing it (at least once; the
processor drops a replayed event whose messageId it has already counted).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from eventpipe.core.config import Settings
from eventpipe.core.kafka import consumer_config, producer_config, security_config
from eventpipe.core.signals import StopFlag

log = logging.getLogger(__name__)

REPLAY_GROUP = "eventpipe-dlq-replay"
BATCH = 500
KAFKA_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 30.0
# Everything below the start's high watermarks is there to read: this long without a message
# means the broker went away (librdkafka would retry forever).
STALL_S = 30.0


class DlqError(Exception):
    """Why a replay stopped, in one line; the batches committed before it stay committed."""


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ message and what the processor wrote in its headers."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    target: str
    error: str
    origin: str

    @classmethod
    def from_message(cls, message: Message, default_topic: str) -> DeadLetter:
        headers = _text_headers(message)
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # noqa: S101 - a message, not an error
        origin = (
            f"partition {headers.get('eventpipe-partition', '?')} "
            f"offset {headers.get('eventpipe-offset', '?')}"
        )
        return cls(
            partition=partition,
            offset=offset,
            key=message.key(),
            value=message.value(),
            target=headers.get("eventpipe-topic", default_topic),
            error=" ".join(headers.get("eventpipe-error", "(no error header)").split()),
            origin=origin,
        )

    @property
    def where(self) -> str:
        return f"partition {self.partition} offset {self.offset}"


def _text_headers(message: Message) -> dict[str, str]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {
        name: value.decode(errors="replace") if isinstance(value, bytes) else value
        for name, value in pairs
        if value is not None
    }


def refusal(letter: DeadLetter, *, events_topic: str, topics: Collection[str]) -> str | None:
    """Why `letter` must stay in the DLQ, or None: only the events topic is ever written to, so
    a stray header can neither feed another consumer nor auto-create a topic."""
    if letter.target == events_topic:
        return None
    if letter.target not in topics:
        return f"names topic {letter.target!r}, which is not on the broker"
    return f"names topic {letter.target!r}, not the events topic {events_topic!r}"


@dataclass
class ReplayReport:
    dlq_topic: str
    dry_run: bool
    replayed: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    unread: int = 0
    interrupted: bool = False

    def summary(self) -> str:
        """One line: what was replayed per topic, what stayed, what remains."""
        per_topic = ", ".join(f"{topic}: {n}" for topic, n in sorted(self.replayed.items()))
        verb = "would replay" if self.dry_run else "replayed"
        parts = [f"{verb} {self.replayed.total()} from {self.dlq_topic}"]
        if per_topic:
            parts[0] += f" ({per_topic})"
        parts.append(f"skipped {self.skipped}" + (" (left in the DLQ)" if self.skipped else ""))
        if self.unread:
            parts.append(f"{self.unread} not read yet")
        if self.interrupted:
            parts.append("interrupted")
        if self.dry_run:
            parts.append("nothing committed")
        return "; ".join(parts)


def replay_dead_letters(
    settings: Settings,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    say: Callable[[str], None],
    stop: StopFlag | None = None,
) -> ReplayReport:
    """Replay (or with `dry_run` only list) the DLQ up to its end as seen at start, or `limit`
    messages; `say` gets one line per message skipped, and in a dry run per message listed."""
    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        raise DlqError("EVENTPIPE_KAFKA_BOOTSTRAP is not set")
    # librdkafka logs every failed connection attempt (hundreds while a broker is away); what
    # matters reaches the operator as this command's one-line error. DEBUG shows them all.
    quiet = {} if log.isEnabledFor(logging.DEBUG) else {"log_level": 2}
    security = security_config(settings)
    consumer = Consumer(consumer_config(bootstrap, REPLAY_GROUP, security=security, **quiet))
    producer = None
    if not dry_run:
        producer = Producer(producer_config(bootstrap, security=security, **quiet))
    try:
        replay = _Replay(settings, consumer, producer, say, stop or StopFlag())
        return replay.run(limit)
    except KafkaException as error:
        raise DlqError(f"Kafka at {bootstrap}: {_reason(error)}") from error
    finally:
        consumer.close()


def _reason(error: KafkaException) -> str:
    first = error.args[0] if error.args else None
    return first.str() if isinstance(first, KafkaError) else str(error)


class _Replay:
    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        producer: Producer | None,
        say: Callable[[str], None],
        stop: StopFlag,
    ) -> None:
        self.settings = settings
        self.dlq = settings.dlq_topic
        self.consumer = consumer
        self.producer = producer
        self.say = say
        self.stop = stop
        self.report = ReplayReport(self.dlq, dry_run=producer is None)
        self.topics: set[str] = set()
        self.next: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        self.failures: list[str] = []
        self.last_error = ""

    def run(self, limit: int | None) -> ReplayReport:
        self._plan()
        budget = limit
        progressed = time.monotonic()
        while self._pending() and budget != 0 and not self.stop.is_set:
            letters = self._read(self.consumer.consume(BATCH, 1.0))[:budget]
            if letters:
                self._settle(letters)
                budget = None if budget is None else budget - len(letters)
                progressed = time.monotonic()
            elif not self._catch_up() and time.monotonic() - progressed > STALL_S:
                raise DlqError(f"no message from {self.dlq} in {STALL_S:.0f} s, {self._left()}")
        self.report.unread = sum(self.ends[p] - self.next[p] for p in self.ends)
        self.report.interrupted = self.stop.is_set and self.report.unread > 0
        return self.report

    def _plan(self) -> None:
        """Each DLQ partition from the group's committed offset to today's high watermark."""
        self.topics = set(self.consumer.list_topics(timeout=KAFKA_TIMEOUT_S).topics)
        for name, variable in (
            (self.dlq, "DLQ_TOPIC"),
            (self.settings.events_topic, "EVENTS_TOPIC"),
        ):
            if name not in self.topics:
                raise DlqError(f"no topic {name!r} on the broker (EVENTPIPE_{variable}?)")
        metadata = self.consumer.list_topics(self.dlq, timeout=KAFKA_TIMEOUT_S)
        asked = [TopicPartition(self.dlq, p) for p in sorted(metadata.topics[self.dlq].partitions)]
        for tp in self.consumer.committed(asked, timeout=KAFKA_TIMEOUT_S):
            if tp.error is not None:
                # Starting from the beginning instead would replay what was replayed before.
                raise DlqError(f"committed offsets of {REPLAY_GROUP}: {tp.error.str()}")
            low, high = self.consumer.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S)
            if 0 <= tp.offset < low:
                log.warning("%s partition %d: offsets %d..%d expired before they were replayed",
                            self.dlq, tp.partition, tp.offset, low - 1)  # fmt: skip
            self.next[tp.partition] = tp.offset if low <= tp.offset <= high else low
            self.ends[tp.partition] = high
        self.consumer.assign(
            [TopicPartition(self.dlq, p, self.next[p]) for p in self.ends if self._pending(p)]
        )

    def _pending(self, partition: int | None = None) -> bool:
        chosen = self.ends if partition is None else [partition]
        return any(self.next[p] < self.ends[p] for p in chosen)

    def _left(self) -> str:
        left = [f"{p}: {self.next[p]}..{self.ends[p] - 1}" for p in self.ends if self._pending(p)]
        last = f"; {self.last_error}" if self.last_error else ""
        return f"partitions left {', '.join(left)}{last}"

    def _read(self, messages: list[Message]) -> list[DeadLetter]:
        letters = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                self.last_error = str(error)  # a broker away: librdkafka retries by itself
                continue
            letter = DeadLetter.from_message(message, self.settings.events_topic)
            # Arrived after the start (say the processor dead-lettering a replayed message again).
            if letter.offset < self.ends[letter.partition]:
                letters.append(letter)
        return letters

    def _catch_up(self) -> bool:
        """Move past offsets that hold no message (expired meanwhile); True if any moved."""
        moved = False
        pending = [TopicPartition(self.dlq, p) for p in self.ends if self._pending(p)]
        for tp in self.consumer.position(pending):
            if tp.offset > self.next[tp.partition]:
                self.next[tp.partition] = min(tp.offset, self.ends[tp.partition])
                moved = True
        return moved

    def _settle(self, letters: list[DeadLetter]) -> None:
        sent: Counter[str] = Counter()
        for letter in letters:
            reason = refusal(letter, events_topic=self.settings.events_topic, topics=self.topics)
            if reason is not None:
                self.report.skipped += 1
                self.say(f"{letter.where}: skipped, {reason}: {letter.error}")
            elif self.producer is None:
                sent[letter.target] += 1
                self.say(
                    f"{letter.where}: replay to {letter.target} ({letter.origin}): {letter.error}"
                )
            else:
                # The key picks the partition as the api's producer did, so a replayed event
                # meets its earlier copy's dedupe marks.
                self.producer.produce(
                    letter.target, letter.value, letter.key, on_delivery=self._delivered
                )
                sent[letter.target] += 1
        if self.producer is not None:
            self._acknowledge(self.producer, letters)
        for letter in letters:
            self.next[letter.partition] = letter.offset + 1
        self.report.replayed.update(sent)

    def _acknowledge(self, producer: Producer, letters: list[DeadLetter]) -> None:
        """Wait for Kafka's acknowledgement of the batch, then commit past it (skipped included)."""
        unacknowledged = producer.flush(ACK_TIMEOUT_S)
        if unacknowledged or self.failures:
            problem = self.failures[0] if self.failures else f"{unacknowledged} unacknowledged"
            raise DlqError(
                f"replay not acknowledged ({problem}): its batch stays in the DLQ, uncommitted; "
                f"{self.report.replayed.total()} replayed and committed before it"
            )
        ends: dict[int, int] = {}
        for letter in letters:
            ends[letter.partition] = letter.offset + 1
        offsets = [TopicPartition(self.dlq, p, o) for p, o in ends.items()]
        for tp in self.consumer.commit(offsets=offsets, asynchronous=False):
            if tp.error is not None:
                raise DlqError(f"commit of {self.dlq} partition {tp.partition}: {tp.error.str()}")

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.failures.append(error.str())
