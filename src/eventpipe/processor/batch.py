"""Splitting what one consume() returned into per-partition work, poison set aside."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import msgspec
from confluent_kafka import Message

from eventpipe.domain.events import EventRecord, decode_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoisonMessage:
    """A message that cannot be counted, with where it came from, for the DLQ's headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class PartitionBatch:
    partition: int
    records: list[EventRecord] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    first_offset: int = -1
    next_offset: int = 0


@dataclass
class Batch:
    partitions: dict[int, PartitionBatch] = field(default_factory=dict)
    poison: list[tuple[PoisonMessage, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(p.records) for p in self.partitions.values())


def split(messages: list[Message]) -> Batch:
    batch = Batch()
    for message in messages:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise RuntimeError(f"consume failed: {error}")
            # Not fatal (a poll interval exceeded during a long sink outage, a broker away):
            # librdkafka rejoins by itself and the assignment seeks to Redis's offsets again.
            log.warning("consumer: %s", error)
            continue
        partition = message.partition()
        assert partition is not None  # noqa: S101 - a message without error has one
        offset = message.offset()
        assert offset is not None  # noqa: S101 - likewise
        work = batch.partitions.setdefault(
            partition, PartitionBatch(partition, first_offset=offset)
        )
        work.next_offset = offset + 1
        value = message.value() or b""
        try:
            record = decode_record(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as problem:
            source = PoisonMessage(message.topic() or "", partition, offset, message.key(), value)
            batch.poison.append((source, str(problem)))
            continue
        work.records.append(record)
        work.encoded.append(value)
        work.offsets.append(offset)
    return batch
