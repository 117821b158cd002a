"""The processor under faults: SIGKILLed and restarted, scaled up and down, Redis SIGKILLed,
PostgreSQL stopped. Each run must end with exact aggregates and an exact archive: every
acknowledged event counted once, every client retry dropped, nothing missing.

Faults land at random points; the seed is logged (set EVENTPIPE_FAULT_SEED to replay a run's
choices, though not its timing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import pytest

from eventpipe.core.kafka import admin_client, ensure_topics
from eventpipe.local.postgres import start_postgres
from eventpipe.local.process import ManagedProcess, free_port
from eventpipe.local.redis import start_redis
from eventpipe.local.stack import StackUrls
from eventpipe.migrations.runner import upgrade
from tests.integration.processor_support import (
    PacedProducer,
    Pipeline,
    ProcessorFleet,
    ProcessorProcess,
    Workload,
    archived_ids,
    committed_offsets,
    group_assignment,
    high_watermarks,
    metric,
    read_hourly,
    read_top,
    read_totals,
    stored_offsets,
)
from tests.integration.support import wait_for

log = logging.getLogger(__name__)
K = TypeVar("K")
Traffic = Callable[[Pipeline, Workload, float], PacedProducer]

# A restarted processor waits for the killed one's session to expire before it gets partitions.
# Generous: on 2 shared cores a rebalance can take several heartbeat rounds.
RESUME_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 90.0


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("EVENTPIPE_FAULT_SEED") or random.SystemRandom().getrandbits(32))
    log.info("fault seed %d", seed)
    return random.Random(seed)  # noqa: S311 - fault timing, not secrets


@contextlib.contextmanager
def pipeline_on(
    stack_urls: StackUrls, topic: str, *, redis_url: str, database_url: str
) -> Iterator[Pipeline]:
    """This test's topic (and its DLQ) over the given Redis and a migrated database."""
    pipeline = Pipeline(stack_urls.kafka_bootstrap, redis_url, database_url, topic)
    upgrade(database_url)
    ensure_topics(pipeline.kafka_bootstrap, {pipeline.dlq_topic: 1})
    try:
        yield pipeline
    finally:
        admin = admin_client(pipeline.kafka_bootstrap)
        for future in admin.delete_topics([pipeline.dlq_topic], operation_timeout=10).values():
            future.result(timeout=15)


@pytest.fixture
def pipeline(stack_urls: StackUrls, topic: str, database_url: str) -> Iterator[Pipeline]:
    """The shared servers, with a fresh database."""
    with pipeline_on(
        stack_urls, topic, redis_url=stack_urls.redis_url, database_url=database_url
    ) as value:
        yield value


@pytest.fixture
def traffic() -> Iterator[Traffic]:
    """Starts a paced producer of a workload; stops the ones still sending when the test ends."""
    producers: list[PacedProducer] = []

    def start(pipeline: Pipeline, workload: Workload, duration_s: float) -> PacedProducer:
        producers.append(PacedProducer(pipeline, workload, duration_s=duration_s).start())
        return producers[-1]

    yield start
    for producer in producers:
        producer.cancel()


@dataclass
class OwnServer:
    """A server of this test's own, restartable on the same port under its clients' feet."""

    url: str
    process: ManagedProcess
    restart: Callable[[], tuple[str, ManagedProcess]]

    def start_again(self) -> None:
        url, self.process = self.restart()
        assert url == self.url


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServer]:
    state_dir, port = tmp_path_factory.mktemp("redis-state"), free_port()
    url, process = start_redis(state_dir, port=port)
    server = OwnServer(url, process, lambda: start_redis(state_dir, port=port))
    yield server
    server.process.stop()


@pytest.fixture
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServer]:
    # synchronous_commit stays on (the default): a commit the processor saw must survive.
    state_dir, port = tmp_path_factory.mktemp("postgres-state"), free_port()
    url, process = start_postgres(state_dir, port=port)
    server = OwnServer(url, process, lambda: start_postgres(state_dir, port=port))
    yield server
    server.process.stop()


@pytest.fixture
def pipeline_own_redis(
    stack_urls: StackUrls, topic: str, database_url: str, own_redis: OwnServer
) -> Iterator[Pipeline]:
    with pipeline_on(
        stack_urls, topic, redis_url=own_redis.url, database_url=database_url
    ) as value:
        yield value


@pytest.fixture
def pipeline_own_postgres(
    stack_urls: StackUrls, topic: str, own_postgres: OwnServer
) -> Iterator[Pipeline]:
    with pipeline_on(
        stack_urls, topic, redis_url=stack_urls.redis_url, database_url=own_postgres.url
    ) as value:
        yield value


# --- Waiting and checking ----------------------------------------------------------------------


def applied(pipeline: Pipeline) -> int:
    """Messages the processors have applied so far, over all partitions."""
    return sum(max(0, offset) for offset in stored_offsets(pipeline))


def wait_for_progress(pipeline: Pipeline, *, beyond: int, what: str) -> int:
    """Wait until the processors apply a batch past `beyond` applied messages; return the count."""
    seen = [beyond]

    def moved() -> bool:
        seen[0] = applied(pipeline)
        return seen[0] > beyond

    wait_for(moved, timeout=RESUME_TIMEOUT_S, what=what, detail=lambda: f"applied {seen[0]}")
    return seen[0]


def wait_until_drained(pipeline: Pipeline) -> None:
    """Every message of the topic applied: the stored offsets reached the end of each partition."""
    ends = high_watermarks(pipeline)
    wait_for(
        lambda: stored_offsets(pipeline) == ends,
        timeout=DRAIN_TIMEOUT_S,
        what=f"stored offsets to reach {ends}",
        detail=lambda: f"stored {stored_offsets(pipeline)}",
    )


def assert_exact(pipeline: Pipeline, workload: Workload) -> None:
    """Aggregates and archive hold each distinct event exactly once, retries none."""
    totals = read_totals(pipeline, workload.project)
    assert totals == workload.expected_totals(), _diff(totals, workload.expected_totals())
    hourly = read_hourly(pipeline, workload)
    assert hourly == workload.expected_hourly(), _diff(hourly, workload.expected_hourly())
    top = read_top(pipeline, workload)
    assert top == workload.expected_top(), _diff(top, workload.expected_top())
    ids = archived_ids(pipeline, workload.project)
    twice = [message for message, n in Counter(ids).items() if n > 1]
    assert not twice, f"{len(twice)} message ids archived more than once, e.g. {twice[:5]}"
    missing, extra = workload.message_ids - set(ids), set(ids) - workload.message_ids
    assert not missing and not extra, (
        f"archive: {len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(extra)} unexpected"
    )


def _diff(found: Mapping[K, int], expected: Mapping[K, int]) -> str:
    keys = sorted(set(found) | set(expected), key=str)
    wrong = {k: (found.get(k), expected.get(k)) for k in keys if found.get(k) != expected.get(k)}
    return f"(found, expected) differ at {wrong}"


def stop_gracefully(process: ProcessorProcess) -> None:
    """SIGTERM: the batch in hand is finished, offsets committed, the group left, status 0."""
    status = process.terminate(grace_s=15.0)
    assert status == 0, f"processor exited {status} on SIGTERM:\n{process.log_tail()}"
    assert "stopping with a batch not applied" not in process.log_path.read_text()


def assert_group_left_and_committed(pipeline: Pipeline) -> None:
    """After a graceful stop of every processor: no member lingers until its session expires, and
    Kafka's commits match the offsets applied in Redis."""
    assert group_assignment(pipeline) == [], "a stopped processor is still a group member"
    assert committed_offsets(pipeline) == stored_offsets(pipeline)


# --- The tests ---------------------------------------------------------------------------------


def test_sigkill_at_random_points_ten_times_stays_exact(
    pipeline: Pipeline, fleet: ProcessorFleet, traffic: Traffic, rng: random.Random
) -> None:
    workload = Workload.build(rng, events=50_000)
    producer = traffic(pipeline, workload, 90.0)
    env = pipeline.processor_env(batch_size=200)
    processor = fleet.start(env)
    done = 0
    for kill in range(10):
        # A SIGKILLed member holds its partitions until its Kafka session expires: a restart
        # resumes after EVENTPIPE_PROCESSOR_SESSION_TIMEOUT_MS (librdkafka's default is 45 s).
        what = f"progress before kill {kill + 1} (the killed member's session must expire)"
        done = wait_for_progress(pipeline, beyond=done, what=what)
        time.sleep(rng.uniform(0.0, 0.5))  # a random point of the run, not a wait
        processor.kill()
        # Still mid-run: traffic flowing, so the kill interrupted real work.
        assert not producer.finished, f"the traffic ended before kill {kill + 1}"
        done = applied(pipeline)
        between = (
            len(archived_ids(pipeline, workload.project))
            - read_totals(pipeline, workload.project)["$all"]
        )
        log.info("kill %d after %d applied (archive ahead of Redis by %d)", kill + 1, done, between)
        processor = fleet.start(env)
    producer.join()
    wait_until_drained(pipeline)
    assert_exact(pipeline, workload)
    stop_gracefully(processor)
    assert group_assignment(pipeline) == [], "a stopped processor is still a group member"


def test_two_then_three_then_one_processors_stay_exact(
    pipeline: Pipeline, fleet: ProcessorFleet, traffic: Traffic, rng: random.Random
) -> None:
    workload = Workload.build(rng, events=30_000)
    producer = traffic(pipeline, workload, 25.0)
    env = pipeline.processor_env(batch_size=200)
    first, second = fleet.start(env), fleet.start(env)
    done = wait_for_members(pipeline, 2, beyond=0)
    time.sleep(rng.uniform(0.5, 2.0))
    third = fleet.start(env)
    done = wait_for_members(pipeline, 3, beyond=done)
    time.sleep(rng.uniform(0.5, 2.0))
    for leaving in rng.sample([first, second, third], 2):
        assert not producer.finished, "the traffic ended before the scale-down"
        stop_gracefully(leaving)
    remaining = next(p for p in (first, second, third) if p.alive())
    wait_for_members(pipeline, 1, beyond=done)
    producer.join()
    wait_until_drained(pipeline)
    assert_exact(pipeline, workload)
    stop_gracefully(remaining)
    assert_group_left_and_committed(pipeline)


def wait_for_members(pipeline: Pipeline, members: int, *, beyond: int) -> int:
    """Wait until `members` processors share all partitions, then until they apply a batch."""
    everyone = list(range(3))
    wait_for(
        lambda: _shared(group_assignment(pipeline), members) == everyone,
        timeout=RESUME_TIMEOUT_S,
        what=f"{members} members sharing every partition",
        detail=lambda: f"assignment {group_assignment(pipeline)}",
    )
    return wait_for_progress(pipeline, beyond=beyond, what=f"progress with {members} members")


def _shared(assignment: list[list[int]], members: int) -> list[int]:
    if len(assignment) != members or not all(assignment):
        return []
    return sorted(p for partitions in assignment for p in partitions)


def test_redis_sigkill_and_restart_stays_exact(
    pipeline_own_redis: Pipeline,
    own_redis: OwnServer,
    fleet: ProcessorFleet,
    traffic: Traffic,
    rng: random.Random,
) -> None:
    # AOF (appendfsync always): a SIGKILLed Redis loses nothing it acknowledged.
    pipeline = pipeline_own_redis
    workload = Workload.build(rng, events=40_000)
    producer = traffic(pipeline, workload, 25.0)
    processor = fleet.start(pipeline.processor_env(batch_size=200))
    done = 0
    for kill in range(5):
        done = wait_for_progress(pipeline, beyond=done, what=f"progress before kill {kill + 1}")
        time.sleep(rng.uniform(0.0, 0.5))  # a random point of the run, not a wait
        own_redis.process.kill()
        assert not producer.finished, f"the traffic ended before Redis kill {kill + 1}"
        time.sleep(rng.uniform(0.5, 3.0))  # Redis stays down a while
        own_redis.start_again()
        done = applied(pipeline)
    producer.join()
    wait_until_drained(pipeline)
    assert_exact(pipeline, workload)
    assert processor.alive(), "a Redis outage must not stop the processor"
    stop_gracefully(processor)
    assert_group_left_and_committed(pipeline)


def test_postgres_outage_pauses_then_catches_up_exactly(
    pipeline_own_postgres: Pipeline,
    own_postgres: OwnServer,
    fleet: ProcessorFleet,
    traffic: Traffic,
    rng: random.Random,
) -> None:
    pipeline = pipeline_own_postgres
    workload = Workload.build(rng, events=30_000)
    producer = traffic(pipeline, workload, 40.0)
    port = free_port()
    processor = fleet.start(pipeline.processor_env(batch_size=200, metrics_port=port))
    wait_for_progress(pipeline, beyond=0, what="progress before the outage")
    time.sleep(rng.uniform(0.0, 1.0))  # a random point of the run, not a wait
    own_postgres.process.stop()  # SIGINT: a fast shutdown, its clients cut off
    paused_at = wait_for_pause(pipeline, port)
    time.sleep(rng.uniform(3.0, 6.0))  # PostgreSQL stays down a while
    # The archive goes first: without it, nothing may be counted.
    assert applied(pipeline) == paused_at, "the aggregates moved while the archive was down"
    assert not producer.finished, "the traffic ended during the outage"
    own_postgres.start_again()
    wait_for_progress(pipeline, beyond=paused_at, what="catching up after the outage")
    assert processor.alive(), "a PostgreSQL outage must not stop the processor"
    producer.join()
    wait_until_drained(pipeline)
    assert_exact(pipeline, workload)
    stop_gracefully(processor)
    assert_group_left_and_committed(pipeline)


def test_sigterm_during_a_postgres_outage_exits_0_and_the_batch_replays(
    pipeline_own_postgres: Pipeline,
    own_postgres: OwnServer,
    fleet: ProcessorFleet,
    traffic: Traffic,
    rng: random.Random,
) -> None:
    pipeline = pipeline_own_postgres
    workload = Workload.build(rng, events=10_000)
    producer = traffic(pipeline, workload, 20.0)
    port = free_port()
    processor = fleet.start(pipeline.processor_env(batch_size=200, metrics_port=port))
    wait_for_progress(pipeline, beyond=0, what="progress before the outage")
    own_postgres.process.stop()
    paused_at = wait_for_pause(pipeline, port)
    # A rolling deploy while the database is down: the processor must not hang in its retries.
    status = processor.terminate(grace_s=15.0)
    assert status == 0, f"processor exited {status} on SIGTERM:\n{processor.log_tail()}"
    assert "stopping with a batch not applied" in processor.log_path.read_text()
    assert applied(pipeline) == paused_at
    own_postgres.start_again()
    successor = fleet.start(pipeline.processor_env(batch_size=200))
    producer.join()
    wait_until_drained(pipeline)
    assert_exact(pipeline, workload)
    stop_gracefully(successor)
    assert_group_left_and_committed(pipeline)


def wait_for_pause(pipeline: Pipeline, metrics_port: int) -> int:
    """Wait until the processor fails an archive write (it then holds its batch and retries);
    return how many messages it had applied."""
    wait_for(
        lambda: metric(metrics_port, 'eventpipe_sink_errors_total{sink="postgres"}') > 0,
        timeout=RESUME_TIMEOUT_S,
        what="the processor to notice PostgreSQL is down",
    )
    return applied(pipeline)
