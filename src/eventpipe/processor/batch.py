"""Splitting what one consume() returned into per-partition work, poison set aside."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from confluent_kafka import KafkaError, Message

from eventpipe.domain.events import EventRecord, decode_record


@dataclass
class PartitionBatch:
    partition: int
    records: list[EventRecord] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    next_offset: int = 0


@dataclass
class Batch:
    partitions: dict[int, PartitionBatch] = field(default_factory=dict)
    poison: list[tuple[Message, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(p.records) for p in self.partitions.values())


def split(messages: list[Message]) -> Batch:
    batch = Batch()
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(f"consume failed: {error}")
            continue
        partition = message.partition()
        assert partition is not None  # noqa: S101 - a message without error has one
        offset = message.offset()
        assert offset is not None  # noqa: S101
        work = batch.partitions.setdefault(partition, PartitionBatch(partition))
        work.next_offset = offset + 1
        value = message.value() or b""
        try:
            record = decode_record(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as problem:
            batch.poison.append((message, str(problem)))
            continue
        work.records.append(record)
        work.encoded.append(value)
    return batch
