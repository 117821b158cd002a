"""Redis clients: one async pool per process, opened in a lifespan, never at import."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Connection, Redis, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError

# Far above what one process uses at once: the bound is only there because this pool needs one.
MAX_CONNECTIONS = 1_000


class _WriteErrorsAreConnectionErrors:
    """uvloop raises RuntimeError ("unable to perform operation on <TCPTransport closed=True>")
    writing to a connection the server reset; redis-py passes it on as it is, past every
    `except RedisError` (the api answered 500). Here it is the ConnectionError it means."""

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().send_packed_command(*args, **kwargs)  # type: ignore[misc]
        except RuntimeError as error:
            raise RedisConnectionError(f"connection lost while writing: {error}") from error


class _Connection(_WriteErrorsAreConnectionErrors, Connection):
    pass


class _SSLConnection(_WriteErrorsAreConnectionErrors, SSLConnection):
    pass


_OURS: dict[type[Any], type[Any]] = {Connection: _Connection, SSLConnection: _SSLConnection}


def redis_client(url: str) -> Redis:
    """An async client with a bounded pool; decode nothing (keys and values are bytes)."""
    # The blocking pool, not the default one: redis-py's default pool opens a new connection
    # while holding its pool-wide lock, so against a server that accepts and never answers every
    # command of the process queued behind one 5 s connection attempt after another (a request
    # waited 8 x 5 s; redis/redis-py#3842). This one connects outside its lock.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=5,  # waiting for a free connection, should all of them be busy
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    pool.connection_class = _OURS.get(pool.connection_class, pool.connection_class)
    client: Redis = Redis.from_pool(pool)
    return client
