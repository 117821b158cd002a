"""Backpressure: PostgreSQL, then Redis, down for longer than max.poll.interval.ms while events keep
arriving. The processor pauses its partitions and keeps polling: it stays the group's one member
throughout (no rebalance, no new member id) and resumes when each server is back. Then SIGTERM
while paused: it exits at once, and its successor replays the batch. Everything ends exact.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventpipe.local.postgres import start_postgres
from eventpipe.local.process import free_port
from eventpipe.local.redis import start_redis
from eventpipe.local.stack import StackUrls
from tests.integration.processor_support import (
    PARTITIONS,
    PacedProducer,
    Pipeline,
    ProcessorFleet,
    ProcessorProcess,
    Workload,
    metric,
)
from tests.integration.support import group_members, wait_for
from tests.integration.test_processor_faults import (
    OwnServer,
    assert_exact,
    assert_group_left_and_committed,
    pipeline_on,
    stop_gracefully,
    wait_for_progress,
    wait_until_drained,
)

# The smallest the setting allows; each outage below lasts longer than this.
MAX_POLL_INTERVAL_MS = 10_000
OUTAGE_S = MAX_POLL_INTERVAL_MS / 1000 + 2.0
EVERY_PARTITION = list(range(PARTITIONS))


@pytest.fixture
def own_sinks(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OwnServer, OwnServer]]:
    """A PostgreSQL and a Redis of this test's own, restartable on their ports."""
    pg_dir, pg_port = tmp_path_factory.mktemp("postgres-state"), free_port()
    pg_url, pg_process = start_postgres(pg_dir, port=pg_port)
    postgres = OwnServer(pg_url, pg_process, lambda: start_postgres(pg_dir, port=pg_port))
    redis_dir, redis_port = tmp_path_factory.mktemp("redis-state"), free_port()
    redis_url, redis_process = start_redis(redis_dir, port=redis_port)
    redis = OwnServer(redis_url, redis_process, lambda: start_redis(redis_dir, port=redis_port))
    yield postgres, redis
    redis.process.stop()
    postgres.process.stop()


@pytest.fixture
def pipeline(
    stack_urls: StackUrls, topic: str, own_sinks: tuple[OwnServer, OwnServer]
) -> Iterator[Pipeline]:
    postgres, redis = own_sinks
    with pipeline_on(stack_urls, topic, redis_url=redis.url, database_url=postgres.url) as value:
        yield value


def the_one_member(pipeline: Pipeline) -> str:
    """Wait until a single member holds every partition; its member id."""
    seen: list[list[tuple[str, list[int]]]] = [[]]

    def one() -> bool:
        seen[0] = group_members(pipeline.kafka_bootstrap, pipeline.group) or []
        return len(seen[0]) == 1 and seen[0][0][1] == EVERY_PARTITION

    wait_for(one, timeout=60, what="one member holding every partition", detail=lambda: str(seen))
    return seen[0][0][0]


def hold_outage(pipeline: Pipeline, member: str, seconds: float) -> None:
    """Keep a sink down for `seconds`, checking all along that `member` stays in the group with
    every partition: thrown out for not polling, it would vanish, and rejoin as another member."""
    deadline = time.monotonic() + seconds

    def held() -> bool:
        members = group_members(pipeline.kafka_bootstrap, pipeline.group) or []
        assert members == [(member, EVERY_PARTITION)], f"the group changed mid-outage: {members}"
        return time.monotonic() > deadline

    wait_for(held, timeout=seconds + 30, what=f"an outage of {seconds:.0f} s")


def paused_partitions(port: int) -> float:
    return metric(port, "eventpipe_paused_partitions")


def wait_until_paused(port: int, processor: ProcessorProcess) -> None:
    wait_for(
        lambda: paused_partitions(port) == PARTITIONS,
        timeout=30,
        what="every partition paused",
        detail=processor.log_tail,
    )


def test_outages_longer_than_the_poll_interval_pause_and_keep_the_member(
    pipeline: Pipeline, own_sinks: tuple[OwnServer, OwnServer], tmp_path: Path
) -> None:
    workload = Workload.build(random.Random(20_251_125), events=20_000)  # noqa: S311 - test data
    producer = PacedProducer(pipeline, workload, duration_s=60.0).start()
    fleet = ProcessorFleet(tmp_path)
    try:
        port = free_port()
        env = pipeline.processor_env(batch_size=200, metrics_port=port)
        env["EVENTPIPE_PROCESSOR_MAX_POLL_INTERVAL_MS"] = str(MAX_POLL_INTERVAL_MS)
        processor = fleet.start(env)
        done = wait_for_progress(pipeline, beyond=0, what="progress before the outages")
        member = the_one_member(pipeline)
        for sink in own_sinks:
            sink.process.stop()
            wait_until_paused(port, processor)
            hold_outage(pipeline, member, OUTAGE_S)
            assert not producer.finished, "the traffic ended during the outage"
            sink.start_again()
            wait_for(lambda: paused_partitions(port) == 0, timeout=30, what="resumed")
            done = wait_for_progress(pipeline, beyond=done, what="progress after the outage")
        log = processor.log_path.read_text()
        # One assignment, at the start; a warning at each pause and a line at each resume.
        assert log.count("eventpipe.processor.app assigned ") == 1, processor.log_tail()
        assert "eventpipe.processor.app revoked " not in log
        assert log.count("WARNING eventpipe.processor.backpressure pausing partitions") == 2
        assert log.count("INFO eventpipe.processor.backpressure resumed partitions") == 2

        # SIGTERM while paused (a rolling deploy during an outage): out at once, batch unapplied.
        postgres = own_sinks[0]
        postgres.process.stop()
        wait_until_paused(port, processor)
        assert not producer.finished, "the traffic ended before the last outage"
        status = processor.terminate(grace_s=5.0)
        assert status == 0, f"processor exited {status} on SIGTERM:\n{processor.log_tail()}"
        assert "stopping with a batch not applied" in processor.log_path.read_text()
        postgres.start_again()
        successor = fleet.start(env)
        producer.join()
        wait_until_drained(pipeline)
        assert_exact(pipeline, workload)
        stop_gracefully(successor)
        assert_group_left_and_committed(pipeline)
    finally:
        producer.cancel()
        fleet.close()
