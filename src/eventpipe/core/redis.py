"""Redis clients: one async pool per process, opened in a lifespan, never at import."""

from __future__ import annotations

from redis.asyncio import Redis


def redis_client(url: str) -> Redis:
    """An async client with a bounded pool; decode nothing (keys and values are bytes)."""
    client: Redis = Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
    )
    return client
