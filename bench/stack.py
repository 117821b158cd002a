"""The setup every ingest-side benchmark repeats, as one context manager: the servers
(eventpipe.local's LocalStack, or the EVENTPIPE_*_URL ones), a topic, a migrated database, a
write key, and the environment of an api using them. Also where each server's process is, so
its CPU can be counted, whether this benchmark started it or not."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.auth.accounts import create_user
from eventpipe.auth.keys import generate_key_file
from eventpipe.auth.passwords import Passwords
from eventpipe.auth.writekeys import create_write_key
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.core.kafka import admin_client, consumer_config, ensure_topics
from eventpipe.domain.projects import create_project
from eventpipe.local.databases import fresh_database
from eventpipe.local.process import free_port
from eventpipe.local.stack import LocalStack, StackUrls
from eventpipe.migrations.runner import upgrade

PARTITIONS = 12


@dataclass(frozen=True)
class BenchStack:
    """Everything a benchmark needs to start an api against the servers and load it."""

    urls: StackUrls
    # The server processes (kafka, redis, postgres) by name, for CPU accounting; a server that
    # runs elsewhere (another machine, another user's namespace) is missing.
    server_pids: dict[str, int]
    started_here: list[str]
    topic: str
    database_url: str
    write_key: str
    project_id: str
    settings: Settings
    env: dict[str, str]

    @property
    def port(self) -> int:
        return int(self.env["EVENTPIPE_HTTP_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def bench_stack(tmp: Path, *, topic_prefix: str = "bench.ingest") -> Iterator[BenchStack]:
    """Servers, topic, migrated database, write key and api environment; all removed after."""
    settings = Settings(state_dir=tmp / "stack")
    # fast_start=False: the broker's JIT compiles fully, as in production; figures need that.
    with LocalStack(settings, fast_start=False) as local:
        urls, ours = local.urls, local.processes
        with (
            bench_topic(urls.kafka_bootstrap, "kafka" in ours, topic_prefix) as topic,
            bench_database(urls.database_url, "postgres" in ours) as database,
        ):
            upgrade(database)
            key, project = asyncio.run(create_bench_key(database, settings))
            pids = {name: process.pid for name, process in ours.items()}
            yield BenchStack(
                urls=urls,
                server_pids={**server_pids(urls), **pids},
                started_here=sorted(ours),
                topic=topic,
                database_url=database,
                write_key=key,
                project_id=project,
                settings=settings,
                env=api_env(urls, database, topic, free_port(), tmp),
            )


@contextlib.contextmanager
def bench_topic(bootstrap: str, ours: bool, prefix: str = "bench.ingest") -> Iterator[str]:
    """The events topic of a broker we started, else a fresh topic deleted afterwards."""
    name = "eventpipe.events" if ours else f"{prefix}.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {name: PARTITIONS})
    try:
        yield name
    finally:
        if not ours:
            # Hold the client until the answer is in: a collected AdminClient fails its futures.
            admin = admin_client(bootstrap)
            for future in admin.delete_topics([name]).values():
                future.result(timeout=30)


@contextlib.contextmanager
def bench_database(database_url: str, ours: bool) -> Iterator[str]:
    """The database of a server we started, else a fresh database dropped afterwards."""
    if ours:
        yield database_url
        return
    with fresh_database(database_url, f"bench_{uuid.uuid4().hex[:12]}") as url:
        yield url


async def create_bench_key(database_url: str, settings: Settings) -> tuple[str, str]:
    """A user, a project and a write key; returns the key and the project id."""
    engine = async_engine(database_url)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            user = await create_user(
                session,
                Passwords(settings),
                email=f"bench-{uuid.uuid4().hex[:8]}@example.com",
                password=secrets.token_urlsafe(16),
            )
            project = await create_project(session, owner_id=user.id, name="bench")
            _, key = await create_write_key(session, project_id=project.id, name="bench")
            await session.commit()
            return key, str(project.id)
    finally:
        await engine.dispose()


def api_env(urls: StackUrls, database_url: str, topic: str, port: int, tmp: Path) -> dict[str, str]:
    keys_dir = tmp / "jwt-keys"
    generate_key_file(keys_dir)
    return {
        **os.environ,
        "EVENTPIPE_KAFKA_BOOTSTRAP": urls.kafka_bootstrap,
        "EVENTPIPE_REDIS_URL": urls.redis_url,
        "EVENTPIPE_DATABASE_URL": database_url,
        "EVENTPIPE_EVENTS_TOPIC": topic,
        "EVENTPIPE_HTTP_PORT": str(port),
        "EVENTPIPE_JWT_KEYS_DIR": str(keys_dir),
        "EVENTPIPE_STATE_DIR": str(tmp / "api-state"),
        # The benchmark is the only client: a per-key limit would cap it.
        "EVENTPIPE_INGEST_RATE_LIMIT_PER_S": "0",
        "EVENTPIPE_LOG_LEVEL": "WARNING",
    }


def topic_records(bootstrap: str, topic: str) -> int:
    """Records in the topic: the sum over partitions of high minus low watermark."""
    consumer = Consumer(consumer_config(bootstrap, f"bench-count-{uuid.uuid4().hex[:8]}"))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for number in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def server_pids(urls: StackUrls) -> dict[str, int]:
    """The process listening on each server's port on this machine, when there is one: the
    servers given by EVENTPIPE_*_URL are often an `eventpipe up` or a test run's own."""
    ports = {
        "kafka": urlsplit(f"//{urls.kafka_bootstrap.split(',')[0]}").port,
        "redis": urlsplit(urls.redis_url).port,
        "postgres": urlsplit(urls.database_url).port,
    }
    found = {name: listening_pid(port) for name, port in ports.items() if port}
    return {name: pid for name, pid in found.items() if pid is not None}


def listening_pid(port: int) -> int | None:
    """The pid holding a TCP socket that listens on `port`, from /proc (None if not visible)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                if os.readlink(fd) in inodes:
                    return int(fd_dir.parent.name)
    return None


def _listening_inodes(port: int) -> set[str]:
    listen = "0A"
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == listen and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    return inodes
