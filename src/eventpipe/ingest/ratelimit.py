"""Per-write-key event rate limit in Redis: one-second windows shared by every api replica."""

from __future__ import annotations

import time

from redis.asyncio import Redis


async def over_limit(redis: Redis, *, key_id: str, events: int, per_second: int) -> bool:
    """Count `events` against this second's window; True when the window is over its limit."""
    if per_second <= 0:
        return False
    key = f"ingest:rate:{key_id}:{int(time.time())}"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incrby(key, events)
        pipe.expire(key, 2)
        count, _ = await pipe.execute()
    return int(count) > per_second
