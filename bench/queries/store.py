"""The servers (kept between runs) and their databases."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncSession

from bench.queries.dataset import PARTITIONS, Marker
from eventpipe.auth.admin import create_user_sync
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.domain import keys
from eventpipe.domain.projects import create_project
from eventpipe.local.postgres import start_postgres
from eventpipe.local.redis import start_redis
from eventpipe.migrations.runner import upgrade
from eventpipe.processor.archive import ensure_partitions


@dataclass
class Store:
    """The servers over the kept state directory, and this run's clients of them."""

    cluster_url: str  # the server's own `eventpipe` database: a base for the others
    redis_url: str
    pids: dict[str, int]
    client: redis.Redis
    url: str = ""

    def database(self, name: str) -> str:
        return f"{self.cluster_url.rpartition('/')[0]}/{name}"


@contextlib.contextmanager
def kept_servers(state_dir: Path) -> Iterator[Store]:
    """Redis and PostgreSQL over `state_dir` (their data stays there); Kafka only for `live`."""
    with contextlib.ExitStack() as stack:
        redis_url, redis_process = start_redis(state_dir)
        stack.callback(redis_process.stop, 60)
        cluster_url, postgres = start_postgres(state_dir)
        stack.callback(postgres.stop, 60)
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        pids: dict[str, int] = {"redis": redis_process.pid, "postgres": postgres.pid}
        yield Store(cluster_url, redis_url, pids, client)


def recreate_database(store: Store, name: str) -> str:
    url = store.database(name)
    with psycopg.connect(store.database("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade(url)
    return url


def existing_database(store: Store, name: str) -> str | None:
    with psycopg.connect(store.database("postgres"), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if found is None:
        return None
    url = store.database(name)
    upgrade(url)  # a migration added since the load applies to the kept data
    return url


def create_projects(url: str) -> dict[str, str]:
    """The dataset's projects, owned by a user of their own; `check_copy` exists in Redis only."""
    owner = create_user_sync(
        Settings(database_url=url),
        email=f"loader-{uuid.uuid4().hex[:8]}@example.com",
        password=secrets.token_urlsafe(16),
    )

    async def make() -> dict[str, str]:
        engine = async_engine(url)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                made = {}
                for role in ("main", "other", "check"):
                    project = await create_project(session, owner_id=owner, name=f"bench {role}")
                    made[role] = str(project.id)
                await session.commit()
                return made
        finally:
            await engine.dispose()

    return {**asyncio.run(make()), "check_copy": str(uuid.uuid4())}


def partitions_around(url: str, today: date) -> None:
    settings = Settings()
    ensure_partitions(
        url,
        today=today,
        ahead=settings.archive_days_ahead,
        retention_days=settings.archive_retention_days,
    )


def aggregates_present(store: Store, marker: Marker) -> bool:
    with psycopg.connect(store.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE project_id = %s", (marker.main,)
        ).fetchone()
    with store.client.pipeline(transaction=False) as pipe:
        for partition in range(PARTITIONS):
            pipe.hget(keys.totals_key(partition, marker.main), keys.ALL)
        counted = sum(int(found or 0) for found in pipe.execute())
    return row is not None and counted == row[0]


def describe_store(store: Store, marker: Marker) -> str:
    with psycopg.connect(store.url) as conn:
        version, buffers, size, days = conn.execute(
            "SELECT current_setting('server_version'), current_setting('shared_buffers'), "
            "pg_size_pretty(pg_database_size(current_database())), "
            "(SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass)"
        ).fetchone() or ("?", "?", "?", 0)
        rows: dict[str, int] = dict(
            conn.execute("SELECT project_id::text, count(*) FROM events GROUP BY 1")
        )
    counts = ", ".join(
        f"{role} {rows.get(marker.projects[role], 0):,}" for role in ("main", "other", "check")
    )
    memory = self_info(store.client, "memory").get("used_memory_human", "?")
    return (
        f"events archived: {counts}, up to {marker.anchor:%Y-%m-%d %H:%M} UTC\n"
        f"  PostgreSQL {version} (shared_buffers {buffers}): database {size}, {days} partitions of "
        f"events; Redis: {store.client.dbsize():,} keys, {memory}"
    )


def self_info(client: redis.Redis, section: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.info(section)  # type: ignore[assignment]
    return answer
