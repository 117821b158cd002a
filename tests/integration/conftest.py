"""Real Kafka, Redis and PostgreSQL, started once per test run through eventpipe.local.

Each test gets its own topic, consumer group, Redis key prefix and database, so tests never see
each other's data. Servers whose EVENTPIPE_* URL is set in the environment are used as they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventpipe.core.config import Settings
from eventpipe.core.kafka import admin_client, ensure_topics
from eventpipe.local.stack import StackUrls
from tests.integration.ingest_fixtures import (  # noqa: F401 - fixtures, found by name
    account_factory,
    app_settings,
    client,
    owner,
    project_id,
    sentinel,
    topic_records,
    write_key,
)
from tests.integration.processor_support import ProcessorFleet
from tests.integration.s3_support import (  # noqa: F401 - fixtures, found by name
    bucket,
    s3_client,
    s3_endpoint,
)
from tests.integration.support import TOPIC_PARTITIONS, fresh_database


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def topic(stack_urls: StackUrls, unique: str) -> Iterator[str]:
    name = f"test.{unique}"
    ensure_topics(stack_urls.kafka_bootstrap, {name: TOPIC_PARTITIONS})
    yield name
    admin = admin_client(stack_urls.kafka_bootstrap)
    for future in admin.delete_topics([name], operation_timeout=10).values():
        future.result(timeout=15)


@pytest.fixture
def group_id(unique: str) -> str:
    return f"test-group-{unique}"


@pytest.fixture
def redis_prefix(stack_urls: StackUrls, unique: str) -> Iterator[str]:
    prefix = f"test:{unique}:"
    yield prefix
    server = redis.Redis.from_url(stack_urls.redis_url)
    keys = list(server.scan_iter(match=f"{prefix}*"))
    if keys:
        server.delete(*keys)
    server.close()


@pytest.fixture
def database_url(stack_urls: StackUrls, unique: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    with fresh_database(stack_urls.database_url, f"test_{unique}") as url:
        yield url


@pytest.fixture
def settings(
    stack_urls: StackUrls, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings pointing every role at the shared servers and this test's own database."""
    return Settings(
        kafka_bootstrap=stack_urls.kafka_bootstrap,
        redis_url=stack_urls.redis_url,
        database_url=database_url,
        state_dir=tmp_path_factory.mktemp("state"),
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[ProcessorFleet]:
    """Processor subprocesses of one test; every one still running is stopped at its end."""
    processors = ProcessorFleet(tmp_path)
    yield processors
    processors.close()
