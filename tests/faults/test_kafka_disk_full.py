"""Kafka's disk fills up under ingest: the api answers 503, never 200 for an event the broker
could not store, and /readyz says Kafka is down; once space is freed and the broker restarted,
ingest resumes and every acknowledged event is there exactly once.

What Kafka 4.4 does on ENOSPC (seen here, in its log): the append fails with
`java.io.IOException: No space left on device`, the log directory is marked offline ("Stopping
serving replicas in dir ... because the log directory has failed"), and with no log directory left
the broker halts at once ("Shutdown broker because all log dirs in ... have failed", exit status
1). It does not stay up refusing writes: to its clients a full disk looks like a dead broker. A
restart over the same data, once there is room again, recovers every acknowledged record.

The broker's data directory is a tmpfs of its own (as root, or through `sudo -n`), unmounted
whatever happens; Redis and PostgreSQL are the shared ones.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from eventpipe.core.config import Settings
from eventpipe.local.kafka import start_kafka
from eventpipe.local.process import ManagedProcess, free_port
from eventpipe.local.stack import StackUrls
from tests.faults.checker import check
from tests.faults.load import Answer, Load
from tests.integration.pipeline_support import live_pipeline
from tests.integration.support import wait_for

# Kafka's own files need a few MB (sparse 10 MB indexes cost only what they hold).
DISK_SIZE = "48m"
ACK_TIMEOUT_S = 2.0
# The Kafka process exits on its own: it must not be left running on a full disk for long.
HALT_TIMEOUT_S = 30.0


@dataclass
class SmallDiskBroker:
    """A broker whose data directory is a small filesystem; restarted on the same port."""

    state_dir: Path
    cache_dir: Path
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "kafka" / "data"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.process is not None:
            self.process.kill()  # reaps it and releases its data lock
        _, self.process = start_kafka(self.state_dir, self.cache_dir, port=self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose Kafka data directory is a tmpfs of DISK_SIZE."""
    state = tmp_path / "kafka-state"
    data = state / "kafka" / "data"
    data.mkdir(parents=True)
    owner = f"uid={os.getuid()},gid={os.getgid()},mode=0700"
    _as_root(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},{owner}", "tmpfs", str(data)])
    try:
        yield state
    finally:
        unmount(data)


@pytest.fixture
def broker(small_disk: Path) -> Iterator[SmallDiskBroker]:
    own = SmallDiskBroker(small_disk, Settings().cache_dir)
    own.start()
    try:
        yield own
    finally:
        own.stop()  # before the unmount: a running broker keeps its files open


def test_full_disk_answers_503_and_loses_nothing(
    broker: SmallDiskBroker, stack_urls: StackUrls, tmp_path: Path
) -> None:
    stack = StackUrls(broker.bootstrap, stack_urls.redis_url, stack_urls.database_url)
    overrides = {"EVENTPIPE_INGEST_ACK_TIMEOUT_S": str(ACK_TIMEOUT_S)}
    with live_pipeline(stack, tmp_path, overrides) as live:
        project, key = live.project_key()
        load = Load(live.url, key, rate=300, batch=10, connections=4).start()
        timings: dict[str, float] = {}
        try:
            wait_for(lambda: load.acknowledged_count() >= 500, 60, "ingest under way")
            filled = time.monotonic()
            fill(broker.data_dir)
            halted = wait_halted(broker)
            timings["notice"] = halted - filled
            assert_refusing(load, since=halted)
            assert_readyz_says_kafka(live.url)

            (broker.data_dir / "filler").unlink()
            restarting = time.monotonic()
            broker.start()
            timings["restart"] = time.monotonic() - restarting
            recovered = wait_accepting(load, since=restarting)
            timings["recover"] = recovered - restarting
            ready = httpx.get(f"{live.url}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
        finally:
            result = load.stop()
        tally = check("kafka disk full", result, live.pipeline, project, timings=timings)
    tally.assert_exact()
    assert set(result.refused) == {"503"}, result.refused


def fill(directory: Path) -> None:
    """Write a filler file until the filesystem has no byte left."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
        with pytest.raises(OSError) as full:
            os.write(fd, b"\0")
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def wait_halted(broker: SmallDiskBroker) -> float:
    """When the broker stopped on its own; fails unless it was for the full disk."""
    process = broker.process
    assert process is not None
    wait_for(lambda: not process.alive(), HALT_TIMEOUT_S, "Kafka to stop on the full disk")
    halted = time.monotonic()
    log = process.log_tail(400)
    assert "No space left on device" in log, log
    assert "have failed" in log, log  # "Shutdown broker because all log dirs in ... have failed"
    assert process.popen.returncode == 1, process.popen.returncode
    return halted


def assert_refusing(load: Load, *, since: float) -> None:
    """Every request sent after the broker went is refused with 503 and Retry-After."""

    def answered() -> list[Answer]:
        return [a for a in load.answers_since(since) if a.status or a.error]

    wait_for(lambda: len(answered()) >= 8, 30, "answers while the disk is full")
    statuses = [(a.status, a.retry_after) for a in answered()]
    assert all(status == 503 and after for status, after in statuses), statuses


def assert_readyz_says_kafka(url: str) -> None:
    answer = httpx.get(f"{url}/readyz", timeout=10)
    assert answer.status_code == 503, answer.text
    checks = answer.json()["checks"]
    assert checks["kafka"]["status"] == "down", checks
    assert "no broker answered" in checks["kafka"]["detail"], checks
    assert checks["redis"]["status"] == checks["postgres"]["status"] == "ok", checks


def wait_accepting(load: Load, *, since: float) -> float:
    """When requests sent after `since` started to succeed again for good (10 in a row)."""

    def streak() -> list[Answer]:
        answers = sorted(load.answers_since(since), key=lambda a: a.at)
        tail: list[Answer] = []
        for answer in reversed(answers):
            if answer.status != 200:
                break
            tail.append(answer)
        return tail

    wait_for(lambda: len(streak()) >= 10, 60, "ingest to succeed again")
    return min(a.at + a.took_s for a in streak())


def unmount(directory: Path) -> None:
    """Unmount, lazily if something still holds a file there (a broker that would not die)."""
    if subprocess.run(_root_prefix() + ["umount", str(directory)], check=False).returncode:
        _as_root(["umount", "-l", str(directory)])


def _as_root(args: list[str]) -> None:
    subprocess.run(_root_prefix() + args, check=True, capture_output=True)


def _root_prefix() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]
