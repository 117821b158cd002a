"""Dependency checks shared by `/readyz` and `eventpipe doctor`: each answers ok or why not."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventpipe.core.kafka import NO_SECURITY, kafka_ready


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str = "ok"

    def as_json(self) -> dict[str, object]:
        return {"status": "ok" if self.ok else "down", "detail": self.detail}


async def probe_kafka(
    bootstrap: str | None, timeout: float, *, security: Mapping[str, str] = NO_SECURITY
) -> ProbeResult:
    if bootstrap is None:
        return ProbeResult(False, "EVENTPIPE_KAFKA_BOOTSTRAP is not set")
    # The admin client blocks; keep it off the event loop.
    if await asyncio.to_thread(kafka_ready, bootstrap, timeout, security=security):
        return ProbeResult(True)
    return ProbeResult(False, f"no broker answered at {bootstrap} within {timeout:g}s")


async def probe_redis(client: Redis | None, timeout: float) -> ProbeResult:
    if client is None:
        return ProbeResult(False, "EVENTPIPE_REDIS_URL is not set")
    try:
        reply = await asyncio.wait_for(client.ping(), timeout)
    except (RedisError, OSError, TimeoutError) as error:
        return ProbeResult(False, f"{type(error).__name__}: {error}")
    # A server replaying its AOF answers LOADING, which redis-py raises as BusyLoadingError.
    return ProbeResult(True) if reply else ProbeResult(False, "PING was not answered")


async def probe_postgres(database_url: str | None, timeout: float) -> ProbeResult:
    if database_url is None:
        return ProbeResult(False, "EVENTPIPE_DATABASE_URL is not set")
    try:
        connection = await psycopg.AsyncConnection.connect(
            database_url, connect_timeout=max(1, int(timeout))
        )
        async with connection:
            await connection.execute("SELECT 1")
    except (psycopg.Error, OSError) as error:
        return ProbeResult(False, str(error).splitlines()[0] if str(error) else repr(error))
    return ProbeResult(True)
