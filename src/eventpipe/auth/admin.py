"""Account operations for the command line (`eventpipe user create`)."""

from __future__ import annotations

import asyncio
import uuid

from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.auth.accounts import EmailTaken, create_user
from eventpipe.auth.passwords import Passwords, password_problem
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine

_EMAIL = TypeAdapter(EmailStr)


class UserCreateError(ValueError):
    """Why the account was not created, in one line."""


def _check(email: str, password: str) -> None:
    try:
        _EMAIL.validate_python(email.strip())
    except ValidationError as error:
        raise UserCreateError(f"invalid email {email!r}") from error
    problem = password_problem(password)
    if problem is not None:
        raise UserCreateError(problem)


async def _create(settings: Settings, email: str, password: str) -> uuid.UUID:
    engine = async_engine(str(settings.database_url))
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            user = await create_user(session, Passwords(settings), email=email, password=password)
            await session.commit()
            return user.id
    except EmailTaken as error:
        raise UserCreateError(f"an account with email {email!r} exists already") from error
    finally:
        await engine.dispose()


def create_user_sync(settings: Settings, *, email: str, password: str) -> uuid.UUID:
    _check(email, password)
    return asyncio.run(_create(settings, email, password))
