"""Helpers shared by the integration tests: bounded waits and free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from confluent_kafka import KafkaError, KafkaException

from eventpipe.core.config import Settings
from eventpipe.core.kafka import admin_client
from eventpipe.local.databases import fresh_database

__all__ = ["fresh_database"]  # moved to eventpipe.local; the tests import it from here


def wait_for(
    check: Callable[[], bool],
    timeout: float = 30.0,
    what: str = "condition",
    detail: Callable[[], str] = str,
) -> None:
    """Poll `check` until it holds; fail with `detail()` (the last state seen) after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {detail()}")
        time.sleep(0.05)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_api(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`python -m eventpipe api` as a real process (port from EVENTPIPE_HTTP_PORT); its URL."""
    url = f"http://127.0.0.1:{env['EVENTPIPE_HTTP_PORT']}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "api"], env=env, stdout=log, stderr=log
        )
    try:
        wait_until_healthy(process, url, log_path)
        yield url
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout`."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def wait_until_healthy(
    process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 60.0
) -> None:
    """Wait for an api process's /healthz; fail with its log if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if process.poll() is not None:
            raise AssertionError(f"api exited {process.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"api not healthy in time:\n{log_path.read_text()}")
        time.sleep(0.1)


def group_members(bootstrap: str, group: str) -> list[tuple[str, list[int]]] | None:
    """(member id, partitions held) of each member of a consumer group, sorted; None while a
    fresh broker still loads its group state (no members known yet)."""
    # Hold the client until the answer is in: a collected AdminClient never resolves its futures.
    admin = admin_client(bootstrap)
    futures = admin.describe_consumer_groups([group], request_timeout=10)
    try:
        description = futures[group].result(timeout=15)
    except KafkaException as error:
        if error.args[0].code() == KafkaError.COORDINATOR_LOAD_IN_PROGRESS:
            return None
        raise
    return sorted(
        (member.member_id, sorted(tp.partition for tp in member.assignment.topic_partitions))
        for member in description.members
    )


def api_env(settings: Settings, port: int, state_dir: Path) -> dict[str, str]:
    """The environment of an `eventpipe api` process using this test's servers, topic and keys."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTPIPE_")}
    env.update(
        {
            "EVENTPIPE_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
            "EVENTPIPE_REDIS_URL": str(settings.redis_url),
            "EVENTPIPE_DATABASE_URL": str(settings.database_url),
            "EVENTPIPE_EVENTS_TOPIC": settings.events_topic,
            "EVENTPIPE_DLQ_TOPIC": settings.dlq_topic,
            "EVENTPIPE_PROCESSOR_GROUP": settings.processor_group,
            "EVENTPIPE_JWT_KEYS_DIR": str(settings.jwt_keys_dir),
            "EVENTPIPE_STATE_DIR": str(state_dir),
            "EVENTPIPE_HTTP_PORT": str(port),
            "EVENTPIPE_PASSWORD_TIME_COST": str(settings.password_time_cost),
            "EVENTPIPE_PASSWORD_MEMORY_KIB": str(settings.password_memory_kib),
        }
    )
    return env


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete those of `names` that exist."""
    admin = admin_client(bootstrap)
    present = [name for name in names if name in admin.list_topics(timeout=10).topics]
    if present:
        for future in admin.delete_topics(present, operation_timeout=10).values():
            future.result(timeout=15)


# Partitions of every test topic: more than one, so keys are seen to decide the partition.
TOPIC_PARTITIONS = 3
