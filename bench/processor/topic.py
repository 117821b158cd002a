"""The benchmark's Kafka topic: loading it, warming the broker, its offsets."""

from __future__ import annotations

import time
import uuid

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.processor.context import Context
from bench.processor.data import PARTITIONS, Pair
from eventpipe.core.kafka import consumer_config, ensure_topics, producer_config
from eventpipe.domain.keys import offset_field, offsets_key


def produce(bootstrap: str, topic: str, pairs: list[Pair]) -> None:
    producer = Producer(producer_config(bootstrap))
    for key, value in pairs:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.005)
    if producer.flush(60) > 0:
        raise RuntimeError(f"records not acknowledged by the broker for {topic}")


def warm_broker(bootstrap: str, pairs: list[Pair], seconds: float) -> int:
    """Produce the set again and again into a scratch topic: the broker's first minute is slow."""
    topic = f"bench.warm.{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {topic: PARTITIONS})
    deadline, sent = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        produce(bootstrap, topic, pairs[:50_000])
        sent += 50_000
    return sent


def stored_offsets(client: redis.Redis, env: dict[str, str]) -> list[int]:
    """The next offset of each partition as the processor's Redis step stored it (0: none)."""
    name = offset_field(env["EVENTPIPE_PROCESSOR_GROUP"], env["EVENTPIPE_EVENTS_TOPIC"])
    with client.pipeline(transaction=False) as pipe:
        for partition in range(PARTITIONS):
            pipe.hget(offsets_key(partition), name)
        answers = pipe.execute()
    return [int(a) if a is not None else 0 for a in answers]


def end_offsets(bootstrap: str, topic: str) -> list[int]:
    consumer = Consumer(consumer_config(bootstrap, f"bench-ends-{uuid.uuid4().hex[:8]}"))
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


def seed_offsets(client: redis.Redis, env: dict[str, str], ends: list[int]) -> None:
    """Start the processor at the end of the topic: what came before is not its work here.

    It seeks to its Redis-stored offsets on assignment (app.py `_on_assign`).
    """
    name = offset_field(env["EVENTPIPE_PROCESSOR_GROUP"], env["EVENTPIPE_EVENTS_TOPIC"])
    for partition, end in enumerate(ends):
        client.hset(offsets_key(partition), name, str(end))


def wait_for_load(bootstrap: str, topic: str, ends: list[int], events: float) -> None:
    """Until the paced load has put about `events` records into the topic."""
    deadline = time.monotonic() + 60
    while sum(end_offsets(bootstrap, topic)) - sum(ends) < events:
        if time.monotonic() > deadline:
            raise RuntimeError("the paced load did not reach the topic within 60 s")
        time.sleep(0.1)


def load_topic(ctx: Context, pairs: list[Pair]) -> list[int]:
    bootstrap = ctx.urls.kafka_bootstrap
    ctx.topic = "bench.processor"
    ensure_topics(bootstrap, {ctx.topic: PARTITIONS, f"{ctx.topic}.dlq": 1})
    produce(bootstrap, ctx.topic, pairs)
    ends = end_offsets(bootstrap, ctx.topic)
    ctx.clock.say(f"{sum(ends):,} records in {ctx.topic}; warming the broker")
    sent = warm_broker(bootstrap, pairs, ctx.args.warm_seconds)
    ctx.clock.say(f"broker warmed by {sent:,} records")
    return ends
