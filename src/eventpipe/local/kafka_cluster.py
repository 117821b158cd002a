"""A Kafka cluster of KRaft nodes on loopback, each broker and controller in one JVM, for the
fault suite: every partition on three nodes, a write acknowledged once two of them have it.

Nodes are killed and started again on the ports they had, so clients keep their bootstrap list
and the static quorum its voters.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from eventpipe.local.kafka import (
    READY_TIMEOUT_S,
    Launcher,
    NodeRole,
    ensure_cluster_id,
    ensure_jars,
)
from eventpipe.local.process import (
    ManagedProcess,
    ServerFailed,
    free_port,
    lock_file,
    retry_port_clash,
)

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
# Three JVMs share two cores and a few GB with the rest of a test run: a modest heap each.
_HEAP_MB = 384
# Stopped together, the last nodes wait for a quorum that is leaving too.
_STOP_TIMEOUT_S = 20.0


class KafkaCluster:
    """`nodes` KRaft nodes (ids 1..nodes) over the data in `state_dir/kafka-cluster/node-K`:
    replication `nodes` (internal topics too), `min.insync.replicas` `min_insync`, no unclean
    leader election. Use as a context manager, or `start_all` then `stop`."""

    def __init__(
        self,
        state_dir: Path,
        cache_dir: Path,
        *,
        nodes: int = 3,
        min_insync: int = 2,
        fast_start: bool = True,
        heap_mb: int = _HEAP_MB,
    ) -> None:
        self.root = state_dir.resolve() / "kafka-cluster"
        self.cache_dir = cache_dir
        self.nodes = list(range(1, nodes + 1))
        self.min_insync = min_insync
        self.fast_start = fast_start
        self.heap_mb = heap_mb
        self.processes: dict[int, ManagedProcess] = {}
        self._ports: dict[int, int] = {}
        self._voters: dict[int, int] = {}
        self._home: Path | None = None
        self._admin: AdminClient | None = None

    @property
    def bootstrap(self) -> str:
        """Every node's PLAINTEXT address: valid across restarts of any of them."""
        if not self._ports:
            raise RuntimeError("the Kafka cluster is not started")
        return ",".join(self.address(node) for node in self.nodes)

    def address(self, node: int) -> str:
        return f"{_HOST}:{self._ports[node]}"

    def start_all(self) -> KafkaCluster:
        """Start every node at once (a node waits for a quorum of the others to be ready);
        nothing if they are running already."""
        if any(process.alive() for process in self.processes.values()):
            return self
        self._home = ensure_jars(self.cache_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        # Before the nodes start in parallel: each formats its data with this id.
        ensure_cluster_id(self.root / "cluster.id")
        started = time.monotonic()
        retry_port_clash(self._start_on_fresh_ports)
        logger.info("Kafka cluster of %d nodes ready in %.1f s", len(self.nodes), _since(started))
        return self

    def kill(self, *nodes: int) -> None:
        """SIGKILL these nodes at once (a crash: no controlled shutdown)."""
        # Frozen together first: none sees another go, or moves a partition meanwhile.
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                if self.processes[node].alive():
                    os.kill(self.processes[node].pid, signal.SIGSTOP)
        for node in nodes:
            self.processes[node].kill()

    def start(self, node: int) -> None:
        """Start a killed or stopped node again over its data, on the same ports."""
        self.start_nodes([node])

    def start_nodes(self, nodes: Iterable[int]) -> None:
        """Start these nodes again, in parallel (two of three are needed for a quorum)."""
        nodes = list(nodes)
        running = [node for node in nodes if self.processes[node].alive()]
        if running:
            raise RuntimeError(f"Kafka nodes {running} are running")
        for node in nodes:
            self.processes[node].kill()  # reaps it and releases its data lock
        self._start_nodes(nodes)

    def stop(self) -> None:
        """SIGTERM every node at once, SIGKILL those still there after a while; idempotent."""
        with ThreadPoolExecutor(max(1, len(self.processes))) as pool:
            for process in self.processes.values():
                pool.submit(process.stop, _STOP_TIMEOUT_S)

    def metadata(self, topic: str) -> dict[int, tuple[int, list[int]]]:
        """Partition -> (leader, in-sync replicas) of `topic`, as a live node tells it (leader
        -1: none)."""
        try:
            found = self._admin_client().list_topics(topic, timeout=10).topics[topic]
        except KafkaException as error:
            raise RuntimeError(f"no metadata for {topic}: {error}") from error
        if found.error is not None:
            raise RuntimeError(f"no metadata for {topic}: {found.error}")
        return {p.id: (p.leader, sorted(p.isrs)) for p in found.partitions.values()}

    def leader_of(self, topic: str, partition: int) -> int:
        """The node leading `partition` of `topic` (-1 while it has none)."""
        return self.metadata(topic)[partition][0]

    def registered(self) -> set[int]:
        """The nodes a live node lists as brokers (a fenced or dead one is left out)."""
        try:
            return set(self._admin_client().list_topics(timeout=2).brokers)
        except KafkaException:
            return set()

    def __enter__(self) -> KafkaCluster:
        return self.start_all()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            # Quiet: a node being killed or still starting is what this cluster is for.
            config: dict[str, str | int | float | bool] = {
                "bootstrap.servers": self.bootstrap,
                "log_level": 0,
            }
            self._admin = AdminClient(config, error_cb=lambda _: None)
        return self._admin

    def _start_on_fresh_ports(self) -> None:
        # The static voters stay out of the metadata log: new ports suit formatted data too.
        taken: set[int] = set()
        self._admin = None
        for ports in (self._ports, self._voters):
            for node in self.nodes:
                ports[node] = _fresh_port(taken)
        try:
            self._start_nodes(self.nodes)
        except BaseException:
            self.stop()
            raise

    def _start_nodes(self, nodes: list[int]) -> None:
        """Start `nodes` in parallel, keep every process started even if another fails, and
        wait until the cluster lists them as brokers."""
        with ThreadPoolExecutor(len(nodes), thread_name_prefix="kafka-node") as pool:
            futures = {node: pool.submit(self._start_node, node) for node in nodes}
            wait(futures.values())
        failure = _collect(futures, self.processes)
        if failure is not None:
            raise failure
        self._wait_registered(nodes)

    def _start_node(self, node: int) -> ManagedProcess:
        if self._home is None:
            raise RuntimeError("start_all comes first")
        node_dir = self.root / f"node-{node}"
        # Kafka's own lock comes too late: a second JVM can damage the first one's metadata log.
        lock_fd = lock_file(node_dir / "eventpipe.lock", owner=f"kafka node {node}")
        try:
            replicas = len(self.nodes)
            role = NodeRole(node, dict(self._voters), replicas, self.min_insync)
            launcher = Launcher(
                self._home,
                node_dir,
                fast_start=self.fast_start,
                role=role,
                heap_mb=self.heap_mb,
                cluster_id=self.root / "cluster.id",
            )
            return launcher.start(lock_fd, self._ports[node]).process
        finally:
            os.close(lock_fd)

    def _wait_registered(self, nodes: list[int]) -> None:
        """Until a live node lists every node in `nodes` as a broker (unfenced): before that, a
        topic of replication 3 cannot be created, nor a restarted node rejoin any ISR."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not set(nodes) <= self.registered():
            dead = [node for node in nodes if not self.processes[node].alive()]
            if dead:
                raise self.processes[dead[0]].failure("exited before it registered as a broker")
            if time.monotonic() > deadline:
                what = f"brokers {self.registered()} after {READY_TIMEOUT_S:.0f} s, not {nodes}"
                raise ServerFailed("kafka cluster", what)
            time.sleep(0.1)


def _collect(
    futures: dict[int, Future[ManagedProcess]], processes: dict[int, ManagedProcess]
) -> BaseException | None:
    """Record each started process; the first failure, if any."""
    failure: BaseException | None = None
    for node, future in futures.items():
        error = future.exception()
        if error is None:
            processes[node] = future.result()
        elif failure is None:
            failure = error
    return failure


def _fresh_port(taken: set[int]) -> int:
    port = free_port()
    while port in taken:
        port = free_port()
    taken.add(port)
    return port


def _since(moment: float) -> float:
    return time.monotonic() - moment
