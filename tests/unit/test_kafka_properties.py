"""The server.properties eventpipe.local writes for a Kafka node: alone, in a cluster, behind a
proxy (no JVM started here)."""

from __future__ import annotations

from pathlib import Path

from eventpipe.local.kafka import NodeRole, _server_properties


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_a_single_node_replicates_nothing_and_advertises_where_it_listens() -> None:
    found = properties(_server_properties(Path("/data"), 9092, NodeRole(), {1: 9093}))
    assert found["node.id"] == "1"
    assert found["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert found["listeners"] == found["advertised.listeners"]
    assert found["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    replication = {key: value for key, value in found.items() if "replication" in key}
    assert set(replication.values()) == {"1"} and len(replication) == 4
    assert found["min.insync.replicas"] == found["transaction.state.log.min.isr"] == "1"


def test_a_cluster_node_knows_every_voter_and_replicates_three_times() -> None:
    role = NodeRole(2, {1: 7001, 2: 7002, 3: 7003}, replicas=3, min_insync=2)
    found = properties(_server_properties(Path("/data"), 9092, role, role.voters))
    assert found["node.id"] == "2"
    voters = "1@127.0.0.1:7001,2@127.0.0.1:7002,3@127.0.0.1:7003"
    assert found["controller.quorum.voters"] == voters
    assert found["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:7002"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert found[key] == "3", key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert found[key] == "2", key
    assert found["unclean.leader.election.enable"] == "false"


def test_a_node_behind_a_proxy_advertises_the_proxy() -> None:
    text = _server_properties(Path("/data"), 9092, NodeRole(), {1: 9093}, advertised_port=19092)
    found = properties(text)
    assert found["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert (
        found["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:9093"
    )
