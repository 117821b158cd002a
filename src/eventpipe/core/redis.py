"""Redis clients: one async pool per process, opened in a lifespan, never at import."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

# Far above what one process uses at once: the bound is only there because this pool needs one.
MAX_CONNECTIONS = 1_000


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
    client: Redis = Redis.from_pool(pool)
    return client
