"""A three-node Kafka cluster (replication 3, min.insync.replicas 2) under ingest through the api
and a processor: the leader of the busiest partitions killed and restarted, then two nodes
killed at once and restarted.

No acknowledged event may be lost or counted twice; while no two replicas of a partition can
take a write (two nodes dead), every request is answered 503 with Retry-After, never 200: an
acks=all write to a partition with fewer than `min.insync.replicas` in sync fails with
NOT_ENOUGH_REPLICAS (or, with the quorum of controllers gone too, waits for followers that are
not there), which the api's producer retries until its ack timeout and then refuses.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

from eventpipe.core.config import Settings
from eventpipe.core.kafka import admin_client
from eventpipe.local.kafka_cluster import KafkaCluster
from eventpipe.local.process import running
from eventpipe.local.stack import LocalStack, StackUrls
from tests.faults.checker import check
from tests.faults.load import Answer, Load
from tests.integration.pipeline_support import LivePipeline, live_pipeline
from tests.integration.processor_support import PARTITIONS, Pipeline, high_watermarks
from tests.integration.support import wait_for

pytestmark = [pytest.mark.nightly, pytest.mark.timeout(900)]

NODES = 3
ACK_TIMEOUT_S = 3.0
API_OVERRIDES = {"EVENTPIPE_INGEST_ACK_TIMEOUT_S": str(ACK_TIMEOUT_S)}
# Figures of the whole module, printed with the first scenario's tally.
CLUSTER: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    own = KafkaCluster(tmp_path_factory.mktemp("cluster"), Settings().cache_dir, nodes=NODES)
    started = time.monotonic()
    with own:
        CLUSTER["cluster_start"] = time.monotonic() - started
        yield own


@pytest.fixture(scope="module")
def stack(cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUrls]:
    """Redis and PostgreSQL of this module's own, beside the cluster (no fourth JVM)."""
    state = tmp_path_factory.mktemp("stack")
    with LocalStack(Settings(state_dir=state, kafka_bootstrap=cluster.bootstrap)) as local:
        yield local.urls


def test_busiest_leader_killed_and_restarted(
    cluster: KafkaCluster, stack: StackUrls, tmp_path: Path
) -> None:
    with live_pipeline(stack, tmp_path, API_OVERRIDES) as live:
        project, key = live.project_key()
        assert_replicated(cluster, live.pipeline.topic)
        load = Load(live.url, key).start()
        timings = dict(CLUSTER)
        try:
            wait_for(lambda: load.acknowledged_count() >= 2_000, 90, "ingest under way")
            victim = busiest_leader(cluster, live.pipeline)
            metadata = cluster.metadata(live.pipeline.topic)
            led = [partition for partition, (leader, _) in metadata.items() if leader == victim]
            killed = time.monotonic()
            cluster.kill(victim)
            wait_for(lambda: moved_away(cluster, live, led, victim), 60, "new leaders")
            timings["notice"] = time.monotonic() - killed
            timings["recover"] = wait_accepting(load, since=killed) - killed
            timings["stall"] = max((a.took_s for a in load.answers_since(killed)), default=0.0)

            restarting = time.monotonic()
            cluster.start(victim)
            timings["restart"] = time.monotonic() - restarting
            wait_for(lambda: in_sync(cluster, live, NODES), 120, "the node back in sync")
            timings["rejoin"] = time.monotonic() - restarting
            wait_accepting(load, since=time.monotonic())
        finally:
            result = load.stop()
        tally = check(
            "kafka cluster: leader killed", result, live.pipeline, project, timings=timings
        )
        report_memory(cluster)
    tally.assert_exact()
    assert set(result.refused) <= {"503"}, result.refused
    assert_retry_after(result.answers)


def test_two_nodes_killed_at_once(cluster: KafkaCluster, stack: StackUrls, tmp_path: Path) -> None:
    with live_pipeline(stack, tmp_path, API_OVERRIDES) as live:
        project, key = live.project_key()
        wait_for(lambda: in_sync(cluster, live, NODES), 60, "every replica in sync")
        load = Load(live.url, key).start()
        timings: dict[str, float] = {}
        try:
            wait_for(lambda: load.acknowledged_count() >= 2_000, 90, "ingest under way")
            survivor = busiest_leader(cluster, live.pipeline)
            victims = [node for node in cluster.nodes if node != survivor]
            cluster.kill(*victims)
            dead = time.monotonic()  # both reaped: from now on no partition has two replicas
            refusing = wait_refused(load, since=dead, count=3 * load.connections)
            timings["notice"] = refusing - dead
            outage = load.answers_since(dead)  # each one answered before the restart below

            restarting = time.monotonic()
            cluster.start_nodes(victims)
            timings["restart"] = time.monotonic() - restarting
            timings["recover"] = wait_accepting(load, since=restarting) - restarting
            wait_for(lambda: in_sync(cluster, live, NODES), 120, "every replica in sync")
            timings["rejoin"] = time.monotonic() - restarting
        finally:
            result = load.stop()
        tally = check(
            "kafka cluster: two nodes killed", result, live.pipeline, project, timings=timings
        )
        report_memory(cluster)
    tally.assert_exact()
    assert set(result.refused) == {"503"}, result.refused
    assert len(outage) >= 3 * load.connections
    assert {(a.status, a.retry_after is not None) for a in outage} == {(503, True)}, Counter(
        (a.status, a.retry_after) for a in outage
    )
    assert_retry_after(result.answers)


def assert_replicated(cluster: KafkaCluster, topic: str) -> None:
    """The events topic as the cluster should make it: three replicas, two needed in sync."""
    partitions = cluster.metadata(topic)
    assert len(partitions) == PARTITIONS
    assert all(len(isr) == NODES for _, isr in partitions.values()), partitions
    admin = admin_client(cluster.bootstrap)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(timeout=15)
    assert config["min.insync.replicas"].value == "2"
    assert config["unclean.leader.election.enable"].value == "false"


def busiest_leader(cluster: KafkaCluster, pipeline: Pipeline) -> int:
    """The node leading the partitions that hold the most records of the events topic."""
    records: Counter[int] = Counter()
    leaders = cluster.metadata(pipeline.topic)
    for partition, end in enumerate(high_watermarks(pipeline)):
        records[leaders[partition][0]] += end
    return records.most_common(1)[0][0]


def moved_away(cluster: KafkaCluster, live: LivePipeline, partitions: list[int], gone: int) -> bool:
    """Each of `partitions` has a live leader again, in sync, and `gone` is out of its ISR."""
    metadata = cluster.metadata(live.pipeline.topic)
    return all(metadata[p][0] not in (gone, -1) and gone not in metadata[p][1] for p in partitions)


def in_sync(cluster: KafkaCluster, live: LivePipeline, replicas: int) -> bool:
    metadata = cluster.metadata(live.pipeline.topic)
    return all(leader != -1 and len(isr) == replicas for leader, isr in metadata.values())


def wait_accepting(load: Load, *, since: float, streak: int = 20) -> float:
    """When requests sent after `since` started to succeed for good (`streak` in a row)."""

    def tail() -> list[Answer]:
        answers = sorted(load.answers_since(since), key=lambda a: a.at)
        found: list[Answer] = []
        for answer in reversed(answers):
            if answer.status != 200:
                break
            found.append(answer)
        return found

    wait_for(lambda: len(tail()) >= streak, 120, f"{streak} successes in a row")
    return min(a.at + a.took_s for a in tail())


def wait_refused(load: Load, *, since: float, count: int) -> float:
    """When the first request sent after `since` was refused, once `count` have been answered."""
    wait_for(lambda: len(load.answers_since(since)) >= count, 60, f"{count} answers")
    refused = [a.at + a.took_s for a in load.answers_since(since) if a.status != 200]
    assert refused, "no request was refused with two of three nodes dead"
    return min(refused)


def assert_retry_after(answers: list[Answer]) -> None:
    """Every refusal tells the client when to come back."""
    missing = [a for a in answers if a.status == 503 and not a.retry_after]
    assert not missing, missing[:5]


def report_memory(cluster: KafkaCluster) -> None:
    resident = {
        node: _resident_mb(process.pid)
        for node, process in cluster.processes.items()
        if running(process.pid)
    }
    total = sum(resident.values())
    print(f"  Kafka nodes resident: {resident} MB, {total} MB in all")  # noqa: T201


def _resident_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0
