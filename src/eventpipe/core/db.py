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


def async_engine(database_url: str) -> AsyncEngine:
    return create_async_engine(sqlalchemy_url(database_url), pool_pre_ping=True, pool_size=10)


def sync_engine(database_url: str) -> Engine:
    return create_engine(sqlalchemy_url(database_url), pool_pre_ping=True)
