"""Long-lived clients of one api process, opened in the lifespan, shared by its requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import procrastinate
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from eventpipe.auth.keys import Keyring, load_keyring
from eventpipe.auth.passwords import Passwords
from eventpipe.auth.tokens import TokenVerifier
from eventpipe.auth.writekeys import WriteKeyResolver
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.core.kafka import security_config
from eventpipe.core.queue import build_app
from eventpipe.core.redis import redis_client
from eventpipe.exports.configured import configured_store
from eventpipe.exports.store import ExportStore
from eventpipe.ingest.producer import EventProducer


@dataclass
class Resources:
    """Long-lived clients of one api process, shared by its requests."""

    settings: Settings
    redis: Redis | None
    engine: AsyncEngine | None
    sessions: async_sessionmaker[AsyncSession] | None
    keyring: Keyring
    tokens: TokenVerifier
    passwords: Passwords
    producer: EventProducer | None
    write_keys: WriteKeyResolver | None
    # Jobs are deferred on the request's own connection: this app's pool is never opened.
    queue: procrastinate.App | None
    exports: ExportStore


def open_resources(settings: Settings) -> Resources:
    redis = redis_client(str(settings.redis_url)) if settings.redis_url else None
    engine = async_engine(str(settings.database_url)) if settings.database_url else None
    sessions = async_sessionmaker(engine, expire_on_commit=False) if engine else None
    keyring = load_keyring(settings)
    return Resources(
        settings=settings,
        redis=redis,
        engine=engine,
        sessions=sessions,
        keyring=keyring,
        tokens=TokenVerifier(keyring, settings),
        passwords=Passwords(settings),
        producer=_producer(settings),
        write_keys=(
            WriteKeyResolver(sessions, settings.write_key_cache_s, settings.write_key_stale_s)
            if sessions
            else None
        ),
        queue=build_app(settings) if settings.database_url else None,
        exports=configured_store(settings),
    )


def _producer(settings: Settings) -> EventProducer | None:
    if settings.kafka_bootstrap is None:
        return None
    return EventProducer(
        settings.kafka_bootstrap,
        settings.events_topic,
        ack_timeout_s=settings.ingest_ack_timeout_s,
        security=security_config(settings),
        linger_ms=settings.ingest_linger_ms,
    )


async def close_resources(resources: Resources) -> None:
    if resources.producer is not None:
        # flush() blocks while the last acknowledgements arrive.
        await asyncio.to_thread(resources.producer.close)
    if resources.redis is not None:
        await resources.redis.aclose()
    if resources.engine is not None:
        await resources.engine.dispose()
