"""PostgreSQL access: SQLAlchemy engines on psycopg 3, from the one DSN setting."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def sqlalchemy_url(database_url: str) -> str:
    """`postgresql://...` as given by the user, with the psycopg 3 driver named for SQLAlchemy."""
    scheme, _, rest = database_url.partition("://")
    if scheme in {"postgres", "postgresql"}:
        scheme = "postgresql+psycopg"
    return f"{scheme}://{rest}"


# libpq waits for a server forever by default; a role must notice an unreachable one.
CONNECT_TIMEOUT_S = 5
# Waiting for a pooled connection (SQLAlchemy's default is 30 s).
POOL_TIMEOUT_S = 10.0


def async_engine(database_url: str) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(database_url), pool_pre_ping=True, pool_size=10,
        pool_timeout=POOL_TIMEOUT_S, connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )  # fmt: skip


def sync_engine(database_url: str) -> Engine:
    return create_engine(
        sqlalchemy_url(database_url), pool_pre_ping=True,
        pool_timeout=POOL_TIMEOUT_S, connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )  # fmt: skip
