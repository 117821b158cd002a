"""The api role: FastAPI app factory; clients are opened in the lifespan and closed after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from eventpipe.api.routes import health
from eventpipe.core.config import Settings, get_settings
from eventpipe.core.db import async_engine
from eventpipe.core.errors import install_error_handlers
from eventpipe.core.redis import redis_client


@dataclass
class Resources:
    """Long-lived clients of one api process, shared by its requests."""

    settings: Settings
    redis: Redis | None
    engine: AsyncEngine | None


def _open_resources(settings: Settings) -> Resources:
    redis = redis_client(str(settings.redis_url)) if settings.redis_url else None
    engine = async_engine(str(settings.database_url)) if settings.database_url else None
    return Resources(settings=settings, redis=redis, engine=engine)


async def _close_resources(resources: Resources) -> None:
    if resources.redis is not None:
        await resources.redis.aclose()
    if resources.engine is not None:
        await resources.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the api; `settings` defaults to the environment's."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = _open_resources(settings)
        try:
            yield
        finally:
            await _close_resources(app.state.resources)

    app = FastAPI(title="eventpipe", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    return app
