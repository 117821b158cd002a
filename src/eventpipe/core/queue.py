"""The job queue both sides share: Procrastinate on PostgreSQL (docs/jobs.md says why).

The api defers jobs by task name, in the transaction that writes the row a job concerns, so a
202 always has its job; the worker (eventpipe.worker) registers the functions behind the names.
"""

from __future__ import annotations

from typing import Any

import procrastinate
import psycopg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.core.config import Settings


class Task:
    """Task names: the contract between who defers a job and who runs it."""

    EXPORT = "export"
    DELIVER_WEBHOOK = "deliver_webhook"
    EVALUATE_ALERTS = "evaluate_alerts"
    SWEEP_STALLED = "sweep_stalled"
    EXPIRE_EXPORTS = "expire_exports"
    PING = "ping"


class Queue:
    EXPORTS = "exports"
    WEBHOOKS = "webhooks"
    # Periodic upkeep: its own queue, so a backlog of exports never delays the stalled sweep.
    MAINTENANCE = "maintenance"
    DEFAULT = "default"


# What deferring a job raises when PostgreSQL is unavailable: through the session (SQLAlchemy)
# or on its raw connection (Procrastinate).
UNAVAILABLE = (SQLAlchemyError, procrastinate.exceptions.ProcrastinateException)

ALL_QUEUES = (Queue.MAINTENANCE, Queue.WEBHOOKS, Queue.EXPORTS, Queue.DEFAULT)


POOL_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5


def conninfo(settings: Settings) -> str:
    assert settings.database_url is not None  # noqa: S101 - checked by the caller's role
    return str(settings.database_url)


def build_app(settings: Settings, *, pool_size: int = 4) -> procrastinate.App:
    """An app bound to the database; `open_async()` it before use (its pool is lazy)."""
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(settings), min_size=1, max_size=pool_size,
        # psycopg_pool waits 30 s for a connection by default, libpq forever for a server: a
        # worker that lost PostgreSQL would sit that long before it reconnects.
        timeout=POOL_TIMEOUT_S, kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
    )  # fmt: skip
    return procrastinate.App(connector=connector)


async def raw_connection(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under a session, so a job is deferred inside its transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)  # noqa: S101 - our engine is psycopg 3
    return driver


async def defer_in(
    session: AsyncSession, app: procrastinate.App, task: str, *, queue: str, **kwargs: Any
) -> int:
    """Defer `task` in the session's transaction: it exists only if the transaction commits."""
    deferrer = app.configure_task(task, queue=queue, connection=await raw_connection(session))
    return await deferrer.defer_async(**kwargs)
