"""First run: while no account exists, the dashboard offers to create the owner's.

Only a browser on this machine may, or one that shows the one-time setup code `eventpipe up`
prints (EVENTPIPE_SETUP_CODE): on a server reachable from a network, whoever opens it first would
otherwise own it.
"""

from __future__ import annotations

import hmac
import ipaddress

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from eventpipe.auth.accounts import create_user
from eventpipe.auth.passwords import Passwords
from eventpipe.core.config import Settings
from eventpipe.domain.tables import User

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
# pg_advisory_xact_lock key: any constant of our own ("eventpipe setup", as ASCII).
SETUP_LOCK = 0x6570_7365_7475_70


async def has_accounts(session: AsyncSession) -> bool:
    return await session.scalar(select(User.id).limit(1)) is not None


def from_this_machine(request: Request) -> bool:
    """Whether the browser runs on this machine: the TCP peer is loopback, as uvicorn reports it
    (through the trusted proxies of EVENTPIPE_TRUSTED_PROXIES, the client they name)."""
    peer = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
    if not loopback:
        return False
    # A proxy on this machine passes on requests from anywhere: what came through one is not
    # local, whether or not its forwarding headers are trusted.
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    # DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 still sends
    # its own name as Host.
    return request.url.hostname in LOOPBACK_NAMES


def code_matches(given: str, settings: Settings) -> bool:
    """Whether `given` is the configured setup code (never true without one)."""
    expected = settings.setup_code.get_secret_value() if settings.setup_code else ""
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


async def create_owner(
    session: AsyncSession, passwords: Passwords, *, email: str, password: str
) -> User | None:
    """The first account, or None when one exists already (the caller commits)."""
    # Two first-run forms sent at once must not both see "no account yet".
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SETUP_LOCK})
    if await has_accounts(session):
        return None
    return await create_user(session, passwords, email=email, password=password)
