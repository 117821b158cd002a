"""A single-node Apache Kafka (KRaft, broker and controller in one JVM) run from Maven jars."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from eventpipe.local.process import (
    ManagedProcess,
    ServerFailed,
    free_port,
    lock_file,
    port_open,
    retry_port_clash,
    spawn,
    tail_lines,
    wait_until,
    write_lock_pid,
)

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
READY_TIMEOUT_S = 90.0
_MAVEN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
_HOST = "127.0.0.1"
_HEAP_MB = 512
_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:+ExitOnOutOfMemoryError",
    # No /tmp/hsperfdata_<user>/<pid> files.
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
    # Without this, log4j's own shutdown hook closes the log before Kafka's last lines.
    "-Dlog4j2.shutdownHookEnabled=false",
)
# C1 only: a start takes about half as long; costs broker CPU per record (not for benchmarks).
_FAST_FLAGS = ("-XX:TieredStopAtLevel=1",)
# A JVM killed while it writes the archive leaves a partial file, which only a clean exit avoids.
_CLEAN_EXIT = frozenset({0, 128 + signal.SIGTERM})
_STALE_DUMP_S = 86_400.0
_SASL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class NodeRole:
    """A node's place in its cluster: its id, the controller port of every voter of the quorum,
    and the replication its topics get (`replicas` copies, `min_insync` of them written before
    an acks=all write is acknowledged)."""

    node_id: int = 1
    # Node id -> controller port; empty: a node alone, its controller on a fresh port each start.
    voters: Mapping[int, int] = field(default_factory=dict)
    replicas: int = 1
    min_insync: int = 1


@dataclass(frozen=True)
class KafkaBroker:
    """A started broker: its PLAINTEXT address, and its SASL_PLAINTEXT one if it has users."""

    bootstrap: str
    process: ManagedProcess
    sasl_bootstrap: str | None = None


def start_kafka(
    state_dir: Path,
    cache_dir: Path,
    *,
    fast_start: bool = True,
    port: int | None = None,
    advertised_port: int | None = None,
) -> tuple[str, ManagedProcess]:
    """Start Kafka over the data in `state_dir/kafka`; return its bootstrap address.

    The PLAINTEXT port is a fresh one unless given (a test restarting a broker under its
    clients' feet); the controller's port is always fresh. Data written by an earlier start is
    kept, whatever ports that start used. Topics are the caller's business
    (`auto.create.topics.enable=false`).

    With `advertised_port`, the broker binds `port` but tells clients to connect to
    `advertised_port` (a fault proxy listening there and forwarding to `port`); the address
    returned is then the advertised one.
    """
    broker = start_kafka_broker(
        state_dir, cache_dir, fast_start=fast_start, port=port, advertised_port=advertised_port
    )
    return broker.bootstrap, broker.process


def start_kafka_broker(
    state_dir: Path,
    cache_dir: Path,
    *,
    fast_start: bool = True,
    port: int | None = None,
    sasl_users: Mapping[str, str] | None = None,
    advertised_port: int | None = None,
) -> KafkaBroker:
    """`start_kafka`, and with `sasl_users` (name: password) a SASL_PLAINTEXT listener too, on a
    fresh loopback port, taking those users with the PLAIN mechanism: what a client configured
    for a managed Kafka's SASL is tested against. The broker and controller keep talking
    PLAINTEXT between themselves, and the PLAINTEXT listener stays open.
    """
    home = ensure_jars(cache_dir)
    kafka_dir = state_dir.resolve() / "kafka"
    # Kafka's own lock comes too late: a second broker can damage the first one's metadata log.
    lock_fd = lock_file(kafka_dir / "eventpipe.lock", owner="kafka broker")
    try:
        launcher = Launcher(
            home,
            kafka_dir,
            fast_start=fast_start,
            sasl_users=sasl_users,
            advertised_port=advertised_port,
        )
        return retry_port_clash(
            lambda: launcher.start(lock_fd, port or free_port()), attempts=1 if port else 3
        )
    finally:
        os.close(lock_fd)


def ensure_jars(cache_dir: Path) -> Path:
    """The Kafka home in the cache (pom.xml, lib/), downloading the jars with Maven if needed."""
    home = cache_dir.resolve() / f"kafka-{KAFKA_VERSION}"
    pom = resources.files(__package__).joinpath("kafka-pom.xml").read_bytes()
    marker = home / "lib" / ".complete"
    digest = hashlib.sha256(pom).hexdigest()
    if _read_text(marker) == digest:
        return home
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".install.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close
        # Another process may have finished the download while we waited for the lock.
        if _read_text(marker) != digest:
            _download_jars(home, pom)
            marker.write_text(digest)
    return home


class Launcher:
    """Everything one start of a node needs: the JVM command line, the data, the archive of
    classes. `kafka_dir` holds the node's configuration, log and data; `cluster_id` the file
    keeping the id its data was formatted with (beside the data unless every node shares one).
    """

    def __init__(
        self,
        home: Path,
        kafka_dir: Path,
        *,
        fast_start: bool,
        sasl_users: Mapping[str, str] | None = None,
        advertised_port: int | None = None,
        role: NodeRole | None = None,
        heap_mb: int = _HEAP_MB,
        cluster_id: Path | None = None,
    ) -> None:
        self.home = home
        self.kafka_dir = kafka_dir
        self.fast_start = fast_start
        self.sasl_users = dict(sasl_users) if sasl_users is not None else None
        self.advertised_port = advertised_port
        self.role = role or NodeRole()
        self.heap_mb = heap_mb
        self.cluster_id = cluster_id or kafka_dir / "cluster.id"
        self.java = _find_tool("java", os.environ.get("JAVA_HOME"))
        self.classpath = ":".join(sorted(str(jar) for jar in (home / "lib").glob("*.jar")))
        self.archive = home / "kafka.jsa"
        self.log_path = kafka_dir / "server.log"

    def start(self, lock_fd: int, port: int) -> KafkaBroker:
        try:
            return self._start_once(lock_fd, port)
        except ServerFailed as error:
            # A damaged archive can crash the JVM: never let it prevent a start.
            if error.port_clash or not (self.fast_start and self.archive.exists()):
                raise
            logger.warning("Kafka failed using archive %s: retrying without it", self.archive)
            self.archive.unlink(missing_ok=True)
            return self._start_once(lock_fd, port)

    def _start_once(self, lock_fd: int, port: int) -> KafkaBroker:
        voters = dict(self.role.voters)
        if not voters:
            # A given port is not retried on a clash, so never pick it for the controller too.
            controller_port = free_port()
            while controller_port == port:
                controller_port = free_port()
            voters = {self.role.node_id: controller_port}
        controller_port = voters[self.role.node_id]
        sasl_port = None
        if self.sasl_users is not None:
            sasl_port = free_port()
            while sasl_port in (port, controller_port):
                sasl_port = free_port()
        properties = self.kafka_dir / "server.properties"
        data_dir = self.kafka_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        properties.write_text(
            _server_properties(
                data_dir,
                port,
                self.role,
                voters,
                sasl_port=sasl_port,
                sasl_users=self.sasl_users,
                advertised_port=self.advertised_port,
            )
        )
        use_archive = self.fast_start and self._archive_usable()
        self._format_once(data_dir, properties, use_archive=use_archive)
        # Without a usable archive, this start writes one when it exits (promoted if clean).
        dump_to = None
        if self.fast_start and not use_archive:
            dump_to = self._new_dump_path()
        args = [*self._jvm(use_archive, dump_to), "kafka.Kafka", str(properties)]
        name = "kafka" if not self.role.voters else f"kafka node {self.role.node_id}"
        process = spawn(
            name, args, log_path=self.log_path, lock_fd=os.dup(lock_fd), cwd=self.kafka_dir
        )
        if dump_to is not None:
            process.on_exit = functools.partial(_promote_archive, dump_to, self.archive)
        write_lock_pid(lock_fd, process.pid)
        wait_ready(process, port)
        bootstrap = f"{_HOST}:{self.advertised_port or port}"
        if sasl_port is None:
            return KafkaBroker(bootstrap, process)
        # Opened with the PLAINTEXT one, but a client must not race it.
        what = f"listening for SASL on port {sasl_port}"
        wait_until(lambda: port_open(sasl_port), timeout=10, process=process, what=what)
        return KafkaBroker(bootstrap, process, f"{_HOST}:{sasl_port}")

    def _jvm(self, use_archive: bool, dump_to: Path | None = None) -> list[str]:
        heap = [f"-Xms{min(256, self.heap_mb)}m", f"-Xmx{self.heap_mb}m"]
        args = [self.java, *heap, *_JVM_FLAGS, *self._logging_flags()]
        if self.fast_start:
            args += _FAST_FLAGS
        if use_archive:
            args.append(f"-XX:SharedArchiveFile={self.archive}")
        elif dump_to is not None:
            # The dump's "Skipping ...: Not linked" warnings would bury the broker's log.
            args += [f"-XX:ArchiveClassesAtExit={dump_to}", "-Xlog:cds=error"]
        return [*args, "-cp", self.classpath]

    def _logging_flags(self) -> list[str]:
        config = self.kafka_dir / "log4j2.xml"
        text = resources.files(__package__).joinpath("kafka-log4j2.xml").read_text()
        if _read_text(config) != text:
            config.write_text(text)
        return [f"-Dlog4j2.configurationFile={config}", f"-Dkafka.logs.dir={self.kafka_dir}"]

    def _format_once(self, data_dir: Path, properties: Path, *, use_archive: bool) -> None:
        """Format the data directory on the first start only, with a cluster id kept beside it."""
        if (data_dir / "meta.properties").exists():
            return
        cluster_id = ensure_cluster_id(self.cluster_id)
        # No --standalone: with the static `controller.quorum.voters` the controller's
        # address stays out of the metadata log, so later starts may pick other ports.
        args = [*self._jvm(use_archive), "kafka.tools.StorageTool", "format", "--ignore-formatted"]
        args += ["-t", cluster_id, "-c", str(properties)]
        logger.info("formatting Kafka's data directory %s", data_dir)
        with self.log_path.open("ab") as log:
            offset = log.tell()
            result = subprocess.run(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.kafka_dir,  # where a JVM crash report would go
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
            )
        if result.returncode != 0:
            tail = tail_lines(self.log_path, start=offset)
            raise ServerFailed("kafka", f"formatting failed with status {result.returncode}", tail)

    def _new_dump_path(self) -> Path:
        # A dump whose broker outlived its launcher is never promoted: drop it after a day.
        for stale in self.home.glob("kafka.jsa.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - stale.stat().st_mtime > _STALE_DUMP_S:
                    stale.unlink()
        return self.home / f"kafka.jsa.{uuid.uuid4().hex}.tmp"

    def _archive_usable(self) -> bool:
        """Whether the archive maps: a truncated one crashed the JVM (SIGBUS), not ignored."""
        if not self.archive.exists():
            return False
        crash_report = self.home / "archive-probe-hs_err.log"
        probe = [self.java, "-XX:-UsePerfData", f"-XX:ErrorFile={crash_report}", "-Xshare:on"]
        probe += [f"-XX:SharedArchiveFile={self.archive}", "-cp", self.classpath, "-version"]
        result = subprocess.run(probe, capture_output=True, timeout=60, check=False)
        crash_report.unlink(missing_ok=True)  # the crash is the answer, not news
        if result.returncode == 0:
            return True
        logger.warning("Kafka's class-data archive %s does not map; making a new one", self.archive)
        self.archive.unlink(missing_ok=True)
        return False


def _promote_archive(pending: Path, archive: Path, status: int) -> None:
    if status in _CLEAN_EXIT and pending.exists():
        os.replace(pending, archive)
        logger.info("saved Kafka's class-data archive %s for faster starts", archive)
    else:
        pending.unlink(missing_ok=True)


def wait_ready(process: ManagedProcess, port: int) -> None:
    """Ready when the PLAINTEXT port (it opens last) accepts and the broker answers metadata."""
    admin: AdminClient | None = None

    def answers() -> bool:
        nonlocal admin
        if not port_open(port):
            return False
        if admin is None:
            # The port is open, but stay quiet about the refusals of a broker still starting.
            url = f"{_HOST}:{port}"
            admin = AdminClient({"bootstrap.servers": url, "log_level": 0}, error_cb=lambda _: None)
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except KafkaException:
            return False

    started = time.monotonic()
    wait_until(answers, timeout=READY_TIMEOUT_S, process=process, what=f"ready on port {port}")
    logger.info("Kafka ready on %s:%d in %.1f s", _HOST, port, time.monotonic() - started)


def _server_properties(
    data_dir: Path,
    port: int,
    role: NodeRole,
    voters: Mapping[int, int],
    *,
    sasl_port: int | None = None,
    sasl_users: Mapping[str, str] | None = None,
    advertised_port: int | None = None,
) -> str:
    controller = f"CONTROLLER://{_HOST}:{voters[role.node_id]}"
    listeners = f"PLAINTEXT://{_HOST}:{port},{controller}"
    # Clients (and other brokers) connect where it advertises: perhaps a proxy in front of it.
    advertised = f"PLAINTEXT://{_HOST}:{advertised_port or port},{controller}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if sasl_port is not None:
        listeners += f",SASL_PLAINTEXT://{_HOST}:{sasl_port}"
        advertised += f",SASL_PLAINTEXT://{_HOST}:{sasl_port}"
        protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
    quorum = ",".join(f"{node}@{_HOST}:{cport}" for node, cport in sorted(voters.items()))
    replicas, min_insync = str(role.replicas), str(role.min_insync)
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(role.node_id),
        "controller.quorum.voters": quorum,
        "listeners": listeners,
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
        "log.dirs": str(data_dir),
        "auto.create.topics.enable": "false",
        # Internal topics too: a single broker's must make do with one replica.
        "default.replication.factor": replicas,
        "min.insync.replicas": min_insync,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_insync,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_insync,
        # A replica that missed acknowledged writes never becomes leader (the default, pinned).
        "unclean.leader.election.enable": "false",
        # The default 50 partitions make a first consumer group join take ~5 s instead of ~1.7 s.
        "offsets.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After a crash, the restarted broker cannot register until the dead one's session
        # expires (DUPLICATE_BROKER_REGISTRATION): 4 s instead of the default 9 s.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
    }
    if sasl_port is not None:
        # Clients only: the broker and its controller keep talking PLAINTEXT.
        settings["sasl.enabled.mechanisms"] = "PLAIN"
        jaas = _sasl_jaas(sasl_users or {})
        settings["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = jaas
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _sasl_jaas(users: Mapping[str, str]) -> str:
    """The broker's PLAIN login module taking `users` (name: password)."""
    for name, password in users.items():
        # Both go inside a JAAS option, on a line of a properties file: keep them plain.
        if not _SASL_NAME.match(name) or not password.isprintable() or {'"', "\\"} & set(password):
            raise ValueError(f"unsupported SASL user name or password (user {name!r})")
    options = "".join(f' user_{name}="{password}"' for name, password in users.items())
    return f"org.apache.kafka.common.security.plain.PlainLoginModule required{options};"


def ensure_cluster_id(path: Path) -> str:
    """The cluster id kept in the state directory: formatting with another one fails later."""
    existing = _read_text(path)
    if existing:
        return existing
    cluster_id = "-"
    while cluster_id.startswith("-"):  # Kafka avoids ids that look like a command-line option.
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.write_text(cluster_id)
    return cluster_id


def _download_jars(home: Path, pom: bytes) -> None:
    mvn = _find_tool("mvn", os.environ.get("MAVEN_HOME"))
    shutil.rmtree(home / "lib", ignore_errors=True)  # a half download is redone from scratch
    (home / "kafka.jsa").unlink(missing_ok=True)  # it names the jars it was made from
    (home / "pom.xml").write_bytes(pom)
    logger.info("downloading Kafka %s jars with Maven into %s (once)", KAFKA_VERSION, home)
    result = subprocess.run(
        [mvn, "-q", "-B", "dependency:copy-dependencies"],
        cwd=home,
        capture_output=True,
        timeout=_MAVEN_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0 or not (home / "lib" / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        output = (result.stdout + result.stderr).decode(errors="replace").splitlines()
        what = f"downloading the jars with Maven failed (status {result.returncode})"
        raise ServerFailed("kafka", what, "\n".join(output[-20:]))


def _find_tool(name: str, home: str | None) -> str:
    if home and (Path(home) / "bin" / name).is_file():
        return str(Path(home) / "bin" / name)
    found = shutil.which(name)
    if found is None:
        raise ServerFailed("kafka", f"{name} not found: a local Kafka needs Java 17+ and Maven")
    return found


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
