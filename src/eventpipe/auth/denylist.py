"""Revocation of stateless access tokens, in Redis, seen at once by every api replica.

Keys carry the user as hash tag (`auth:{u:<id>}:...`) so the per-request check is one MGET in one
slot even under Redis Cluster. Every key has a TTL: a revoked `jti` lives until its token's `exp`;
a logout-all cut-off lives as long as the longest token issued before it could.
"""

from __future__ import annotations

import math
import time

from redis.asyncio import Redis

from eventpipe.auth.tokens import AccessClaims


def _user_tag(user_id: str) -> str:
    return f"auth:{{u:{user_id}}}"


def revoked_key(user_id: str, jti: str) -> str:
    return f"{_user_tag(user_id)}:revoked:{jti}"


def cutoff_key(user_id: str) -> str:
    return f"{_user_tag(user_id)}:cutoff"


async def revoke_token(redis: Redis, claims: AccessClaims) -> None:
    """Deny this token until it expires on its own (never a key without TTL)."""
    # Expire at the token's own `exp` (milliseconds, rounded up): never earlier, so the token is
    # refused to its last instant, and never later, so no key outlives what it guards.
    await redis.set(revoked_key(claims.sub, claims.jti), b"1", pxat=math.ceil(claims.exp * 1000))


async def cut_off_user(redis: Redis, user_id: str, *, token_ttl_s: int) -> float:
    """Reject every token of `user_id` issued up to now; returns the cut-off time."""
    now = round(time.time(), 3)
    await redis.set(cutoff_key(user_id), str(now).encode(), ex=token_ttl_s + 1)
    return now


async def is_revoked(redis: Redis, claims: AccessClaims) -> bool:
    revoked, cutoff = await redis.mget(revoked_key(claims.sub, claims.jti), cutoff_key(claims.sub))
    if revoked is not None:
        return True
    return cutoff is not None and claims.iat <= float(cutoff)
