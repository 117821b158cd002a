"""Write keys: the credential apps put in their SDK; shown once, stored as a hash."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from cachetools import TTLCache
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eventpipe.domain.tables import WriteKey

T = TypeVar("T")
KEY_PREFIX = "wk_"
SHOWN_PREFIX = 10
MAX_KEY_LENGTH = 200


def hash_key(key: str) -> str:
    # 192 random bits need no slow hash: nobody can guess one to test against a leaked hash.
    return hashlib.sha256(key.encode()).hexdigest()


async def create_write_key(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    name: str,
    allowed_origins: Sequence[str] = (),
) -> tuple[WriteKey, str]:
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    row = WriteKey(
        id=uuid.uuid4(),
        project_id=project_id,
        name=name,
        prefix=key[:SHOWN_PREFIX],
        key_hash=hash_key(key),
        allowed_origins=list(allowed_origins),
    )
    session.add(row)
    await session.flush()
    return row, key


async def write_keys_of(session: AsyncSession, *, project_id: uuid.UUID) -> list[WriteKey]:
    rows = await session.scalars(
        select(WriteKey).where(WriteKey.project_id == project_id).order_by(WriteKey.created_at)
    )
    return list(rows)


async def update_write_key(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    key_id: uuid.UUID,
    name: str | None,
    allowed_origins: list[str] | None,
) -> WriteKey | None:
    """Rename a key or change its origins; None if the project has no such key."""
    row = await session.scalar(
        select(WriteKey).where(WriteKey.id == key_id, WriteKey.project_id == project_id)
    )
    if row is None:
        return None
    if name is not None:
        row.name = name
    if allowed_origins is not None:
        row.allowed_origins = allowed_origins
    await session.flush()
    return row


async def revoke_write_key(
    session: AsyncSession, *, project_id: uuid.UUID, key_id: uuid.UUID
) -> bool:
    result = await session.execute(
        update(WriteKey)
        .where(
            WriteKey.id == key_id,
            WriteKey.project_id == project_id,
            WriteKey.revoked_at.is_(None),
        )
        .values(revoked_at=datetime.now(UTC))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ResolvedKey:
    key_id: str
    project_id: str
    # Browser origins that may send with the key; empty: any.
    allowed_origins: tuple[str, ...] = ()


# Ingest's whole budget is this plus Kafka's acknowledgement (5 s), inside an SDK's 10 s.
LOOKUP_TIMEOUT_S = 3.0


class WriteKeyResolver:
    """Maps a presented key to its project, caching answers (hits and misses) for `ttl_s`; a key
    found valid is still accepted for `stale_s` while PostgreSQL cannot be reached, so ingest
    outlives a database outage."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], ttl_s: float, stale_s: float = 0.0
    ) -> None:
        self._sessions = sessions
        self._cache: TTLCache[str, ResolvedKey | None] | None = (
            TTLCache(maxsize=10_000, ttl=ttl_s) if ttl_s > 0 else None
        )
        self._known: TTLCache[str, ResolvedKey] | None = (
            TTLCache(maxsize=10_000, ttl=stale_s) if stale_s > 0 else None
        )

    async def resolve(self, key: str) -> ResolvedKey | None:
        """The key and project ids of a valid, unrevoked key, else None; raises SQLAlchemyError
        when PostgreSQL cannot answer for a key not found valid within `stale_s`."""
        if not key or len(key) > MAX_KEY_LENGTH:
            return None
        digest = hash_key(key)
        if self._cache is not None and digest in self._cache:
            return self._cache[digest]
        try:
            answer = await _within(self._lookup(digest), LOOKUP_TIMEOUT_S)
        except (SQLAlchemyError, TimeoutError, OSError):
            known = self._known.get(digest) if self._known is not None else None
            if known is None:
                raise
            return known
        if self._cache is not None:
            self._cache[digest] = answer
        if self._known is not None:
            if answer is None:
                self._known.pop(digest, None)
            else:
                self._known[digest] = answer
        return answer

    async def _lookup(self, digest: str) -> ResolvedKey | None:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(WriteKey.id, WriteKey.project_id, WriteKey.allowed_origins).where(
                        WriteKey.key_hash == digest, WriteKey.revoked_at.is_(None)
                    )
                )
            ).one_or_none()
        if row is None:
            return None
        return ResolvedKey(str(row.id), str(row.project_id), tuple(row.allowed_origins))


async def _within(lookup: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """`lookup`'s answer, or TimeoutError after `timeout_s` whatever the lookup is doing.

    psycopg has no read timeout, and a query cancelled on a PostgreSQL that accepts bytes and
    never answers is cleaned up (cancel request, rollback) over that same silent connection:
    awaited, the cleanup took the request past 13 s. It is left to finish in the background.
    """
    task = asyncio.ensure_future(lookup)
    try:
        return await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        task.cancel()
        task.add_done_callback(_quietly)
        raise


def _quietly(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the lookup's error was answered already, as a timeout
