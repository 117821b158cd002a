"""Opaque refresh tokens, stored hashed, rotated on every use, with reuse detection.

Presenting a refresh token that was already used means it leaked (RFC 9700, OAuth 2.0 Security
BCP, section 4.14.2): the whole family is revoked, the thief's copy and the owner's alike.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.domain.tables import RefreshFamily, RefreshToken


class RefreshRejected(Exception):
    """The refresh token is unknown, expired, revoked or reused."""


@dataclass(frozen=True)
class Rotated:
    user_id: uuid.UUID
    family_id: uuid.UUID
    token: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(session: AsyncSession, family_id: uuid.UUID, ttl_s: int) -> str:
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
    session.add(RefreshToken(token_hash=_hash(token), family_id=family_id, expires_at=expires_at))
    return token


async def start_family(session: AsyncSession, *, user_id: uuid.UUID, ttl_s: int) -> Rotated:
    family = RefreshFamily(id=uuid.uuid4(), user_id=user_id)
    session.add(family)
    await session.flush()
    return Rotated(user_id, family.id, _new_token(session, family.id, ttl_s))


async def rotate(session: AsyncSession, *, token: str, ttl_s: int) -> Rotated:
    """Spend `token` and return its successor; the caller commits (also on RefreshRejected)."""
    row = (
        await session.execute(
            select(RefreshToken, RefreshFamily)
            .join(RefreshFamily, RefreshFamily.id == RefreshToken.family_id)
            .where(RefreshToken.token_hash == _hash(token))
            # Two concurrent uses of one token: the second waits, then sees it used.
            .with_for_update(of=RefreshToken)
        )
    ).one_or_none()
    if row is None:
        raise RefreshRejected("unknown refresh token")
    stored, family = row
    if family.revoked_at is not None:
        raise RefreshRejected("refresh token revoked")
    if stored.used_at is not None:
        await revoke_family(session, family_id=family.id)
        raise RefreshRejected("refresh token reused; every session of this sign-in is revoked")
    now = datetime.now(UTC)
    if stored.expires_at <= now:
        raise RefreshRejected("refresh token expired")
    stored.used_at = now
    return Rotated(family.user_id, family.id, _new_token(session, family.id, ttl_s))


async def revoke_family(session: AsyncSession, *, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshFamily)
        .where(RefreshFamily.id == family_id, RefreshFamily.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


async def revoke_user_families(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshFamily)
        .where(RefreshFamily.user_id == user_id, RefreshFamily.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
