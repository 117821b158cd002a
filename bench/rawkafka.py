"""The raw producer rate of confluent-kafka in one process, for the records the api would write.

The records are the load generator's events turned into `EventRecord`s by the api's own code
(`build_records`, `encode_record`, `record_key`): the same sizes and the same keys. The producer
has the api's settings (`eventpipe.core.kafka.producer_config`) and a delivery callback on every
record, as the api has. The rate counts acknowledged records only, until the last is acknowledged.

    uv run python -m bench.rawkafka --bootstrap 127.0.0.1:9092 --topic eventpipe.events
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import orjson
from confluent_kafka import KafkaError, Message, Producer

from bench.loadgen import iso_ms, make_events
from eventpipe.core.kafka import producer_config
from eventpipe.domain.events import encode_record, record_key
from eventpipe.ingest.segment import Envelope, build_records

Record = tuple[bytes, bytes]
# Records are produced in rounds of this many between two polls.
_ROUND = 1_000
_FLUSH_TIMEOUT_S = 60.0


def sample_records(count: int, *, project_id: str | None = None, seed: int = 7) -> list[Record]:
    """`count` (key, value) pairs exactly as the api would produce them for generated events."""
    now = datetime.now(UTC)
    project = project_id or str(uuid.uuid4())
    rng = random.Random(seed)
    pairs: list[Record] = []
    while len(pairs) < count:
        # One request's worth at a time: the api refuses batches of more than 2,500 events.
        events = make_events(rng, min(1_000, count - len(pairs)), now)
        envelope = Envelope(
            items=[msgspec.Raw(orjson.dumps(event)) for event in events],
            write_key=None,
            sent_at=iso_ms(now),
        )
        records = build_records(envelope, project_id=project, received_at=now)
        pairs += [(record_key(record), encode_record(record)) for record in records]
    return pairs


@dataclass(frozen=True)
class RawResult:
    acked: int
    failed: int
    seconds: float
    cpu_s: float
    mean_value_bytes: float

    @property
    def per_s(self) -> float:
        return self.acked / self.seconds


class _Deliveries:
    """The delivery callback: counts acknowledgements and failures (runs in poll/flush)."""

    def __init__(self) -> None:
        self.acked = 0
        self.failed = 0

    def __call__(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.acked += 1
        else:
            self.failed += 1


def _produce_round(producer: Producer, topic: str, records: list[Record], on: _Deliveries) -> None:
    produce = producer.produce
    for key, value in records:
        while True:
            try:
                produce(topic, value, key, on_delivery=on)
                break
            except BufferError:
                producer.poll(0.005)  # the local queue is full: let the broker catch up


def measure_raw(bootstrap: str, topic: str, records: list[Record], seconds: float) -> RawResult:
    """Produce `records` round after round for `seconds`, then wait for every acknowledgement."""
    producer = Producer(producer_config(bootstrap))
    deliveries = _Deliveries()
    rounds = [records[start : start + _ROUND] for start in range(0, len(records), _ROUND)]
    cpu, started = time.process_time(), time.perf_counter()
    deadline, turn = started + seconds, 0
    while time.perf_counter() < deadline:
        _produce_round(producer, topic, rounds[turn % len(rounds)], deliveries)
        producer.poll(0)
        turn += 1
    left = producer.flush(_FLUSH_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    return RawResult(
        acked=deliveries.acked,
        failed=deliveries.failed + left,
        seconds=elapsed,
        cpu_s=time.process_time() - cpu,
        mean_value_bytes=sum(len(value) for _, value in records) / len(records),
    )


def describe(result: RawResult) -> str:
    return (
        f"raw producer: {result.per_s:,.0f} records/s ({result.acked:,} acknowledged, "
        f"{result.failed} failed, {result.seconds:.1f} s, {result.mean_value_bytes:.0f} bytes "
        f"per record, client CPU {result.cpu_s / result.seconds:.2f} cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Raw confluent-kafka producer rate.")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--records", type=int, default=20_000, help="distinct records cycled")
    args = parser.parse_args()
    records = sample_records(args.records)
    print(describe(measure_raw(args.bootstrap, args.topic, records, args.seconds)))


if __name__ == "__main__":
    main()
