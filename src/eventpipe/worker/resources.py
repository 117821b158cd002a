"""What the worker's jobs share: one engine, one Redis client, the export store, settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.core.redis import redis_client
from eventpipe.exports.configured import configured_store
from eventpipe.exports.store import ExportStore

CONTEXT_KEY = "eventpipe"


@dataclass
class WorkerResources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    store: ExportStore


def resources_of(context: Any) -> WorkerResources:
    """The resources a job's Procrastinate context carries (`additional_context`)."""
    found = context.additional_context[CONTEXT_KEY]
    assert isinstance(found, WorkerResources)  # noqa: S101 - set by run_worker only
    return found


def open_resources(settings: Settings) -> WorkerResources:
    engine = async_engine(str(settings.database_url))
    return WorkerResources(
        settings=settings,
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        redis=redis_client(str(settings.redis_url)),
        store=configured_store(settings),
    )


async def close_resources(resources: WorkerResources) -> None:
    await resources.redis.aclose()
    await resources.engine.dispose()
