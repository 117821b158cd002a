"""Failed-login throttling in Redis: fixed windows per account and per client address."""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from eventpipe.core.config import Settings


def _account_key(email: str) -> str:
    # Hashed so the key space does not list who tried which address.
    digest = hashlib.sha256(email.encode()).hexdigest()[:32]
    return f"auth:fail:account:{digest}"


def _address_key(address: str) -> str:
    return f"auth:fail:address:{address}"


class LoginThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._window = settings.login_failure_window_s
        self._limits = (settings.login_failures_per_account, settings.login_failures_per_address)

    def _keys(self, email: str, address: str) -> tuple[str, str]:
        return _account_key(email), _address_key(address)

    async def retry_after(self, email: str, address: str) -> int:
        """Seconds until a login may be tried again, or 0 when it may be tried now."""
        keys = self._keys(email, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
                pipe.ttl(key)
            account, account_ttl, per_address, address_ttl = await pipe.execute()
        waits = [
            max(int(ttl), 1)
            for count, ttl, limit in (
                (account, account_ttl, self._limits[0]),
                (per_address, address_ttl, self._limits[1]),
            )
            if count is not None and int(count) >= limit
        ]
        return max(waits, default=0)

    async def record_failure(self, email: str, address: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._keys(email, address):
                pipe.incr(key)
                # NX: the window starts at the first failure and is not stretched by later ones.
                pipe.expire(key, self._window, nx=True)
            await pipe.execute()

    async def clear_account(self, email: str) -> None:
        await self._redis.delete(_account_key(email))
