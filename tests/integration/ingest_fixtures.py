"""Fixtures of the ingest tests (an in-process api with a signed-in owner, a project and its write
key), shared through conftest by every module that sends events."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from eventpipe.api.app import create_app
from eventpipe.core.config import Settings
from eventpipe.core.kafka import ensure_topics
from eventpipe.local.stack import StackUrls
from tests.integration.support import TOPIC_PARTITIONS, delete_topics, fresh_database
from tests.integration.test_ingest import (
    Account,
    Delivered,
    api_settings,
    create_project,
    create_write_key,
    post_event,
    read_topic,
    sign_in,
)


@contextlib.contextmanager
def module_api_settings(
    stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[Settings]:
    """An api's settings on a topic, a database and a signing key of one test module's own, for
    a module-scoped fixture; the topic and the database are removed afterwards."""
    unique = uuid.uuid4().hex[:12]
    topic = f"test.{name}.{unique}"
    ensure_topics(stack_urls.kafka_bootstrap, {topic: TOPIC_PARTITIONS})
    with fresh_database(stack_urls.database_url, f"test_{name}_{unique}") as database_url:
        base = Settings(
            kafka_bootstrap=stack_urls.kafka_bootstrap,
            redis_url=stack_urls.redis_url,
            database_url=database_url,
            state_dir=tmp_path_factory.mktemp(f"{name}-state"),
        )
        yield api_settings(base, tmp_path_factory.mktemp("keys"), events_topic=topic)
    delete_topics(stack_urls.kafka_bootstrap, [topic])


@pytest.fixture
def app_settings(settings: Settings, topic: str, tmp_path: Path) -> Settings:
    return api_settings(settings, tmp_path / "keys", events_topic=topic)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    # Server errors come back as responses, so "never 500" is an assertion, not a crash.
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def account_factory(
    client: TestClient, app_settings: Settings, unique: str
) -> Callable[[str], Account]:
    return lambda who: sign_in(client, app_settings, f"{who}-{unique}@example.com")


@pytest.fixture
def owner(account_factory: Callable[[str], Account]) -> Account:
    return account_factory("owner")


@pytest.fixture
def project_id(client: TestClient, owner: Account) -> str:
    return create_project(client, owner)


@pytest.fixture
def write_key(client: TestClient, owner: Account, project_id: str) -> str:
    key: str = create_write_key(client, owner, project_id)["key"]
    return key


@pytest.fixture
def topic_records(stack_urls: StackUrls, topic: str) -> Callable[[], list[Delivered]]:
    return lambda: read_topic(stack_urls.kafka_bootstrap, topic)


@pytest.fixture
def sentinel(client: TestClient, write_key: str, unique: str) -> Callable[[], str]:
    """Sends one valid event; its messageId. Read after refusals: it must be all there is."""

    def send() -> str:
        message_id = f"sentinel-{unique}"
        body = {"userId": "sentinel", "event": "Sentinel", "messageId": message_id}
        response = post_event(client, "/v1/track", body, write_key)
        assert response.status_code == 200, response.text
        return message_id

    return send
