"""User accounts: creation and password sign-in."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.auth.passwords import Passwords
from eventpipe.domain.tables import User


class EmailTaken(Exception):
    pass


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def create_user(
    session: AsyncSession, passwords: Passwords, *, email: str, password: str
) -> User:
    """Insert a user; the unique index, not a prior SELECT, decides a race between two sign-ups."""
    # Argon2 takes tens of milliseconds of CPU: keep it off the event loop.
    password_hash = await asyncio.to_thread(passwords.hash, password)
    user = User(email=normalize_email(email), password_hash=password_hash)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as error:
        await session.rollback()
        raise EmailTaken(email) from error
    return user


async def authenticate(
    session: AsyncSession, passwords: Passwords, *, email: str, password: str
) -> User | None:
    """The user whose password matches, or None; unknown emails cost the same Argon2 time."""
    user = await session.scalar(select(User).where(User.email == normalize_email(email)))
    verdict = await asyncio.to_thread(
        passwords.verify, user.password_hash if user else None, password
    )
    if user is None or not verdict.ok:
        return None
    if verdict.needs_rehash:
        user.password_hash = await asyncio.to_thread(passwords.hash, password)
    return user
