"""Segment's own Python SDK (segment-analytics-python) against `eventpipe api` as a real process.

The SDK only ever calls POST /v1/batch, with the write key both as Basic auth and in the body,
and `sentAt` on the envelope; with `gzip=True` it compresses the body.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from segment.analytics.client import Client  # type: ignore[import-untyped]
from segment.analytics.version import VERSION  # type: ignore[import-untyped]

from eventpipe.core.config import Settings
from eventpipe.local.process import free_port
from tests.integration.support import running_api
from tests.integration.test_ingest import (
    api_settings,
    by_message_id,
    create_project,
    create_write_key,
    json_value,
    read_topic,
    sign_in,
)

pytestmark = pytest.mark.integration


Json = dict[str, Any]


def api_env(settings: Settings, port: int, state_dir: Path) -> dict[str, str]:
    """The environment of an `eventpipe api` process using this test's servers, topic and keys."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTPIPE_")}
    env.update(
        {
            "EVENTPIPE_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
            "EVENTPIPE_REDIS_URL": str(settings.redis_url),
            "EVENTPIPE_DATABASE_URL": str(settings.database_url),
            "EVENTPIPE_EVENTS_TOPIC": settings.events_topic,
            "EVENTPIPE_JWT_KEYS_DIR": str(settings.jwt_keys_dir),
            "EVENTPIPE_STATE_DIR": str(state_dir),
            "EVENTPIPE_HTTP_PORT": str(port),
            "EVENTPIPE_PASSWORD_TIME_COST": str(settings.password_time_cost),
            "EVENTPIPE_PASSWORD_MEMORY_KIB": str(settings.password_memory_kib),
        }
    )
    return env


@pytest.fixture
def app_settings(settings: Settings, topic: str, tmp_path: Path) -> Settings:
    return api_settings(settings, tmp_path / "keys", events_topic=topic)


@pytest.fixture
def api_url(app_settings: Settings, tmp_path: Path) -> Iterator[str]:
    """`python -m eventpipe api` (uvicorn) on a free port; its base URL."""
    port = free_port()
    log_path = tmp_path / "api.log"
    env = api_env(app_settings, port, tmp_path / "api-state")
    with running_api(env, log_path) as url:
        yield url


@pytest.fixture
def write_key(api_url: str, app_settings: Settings, unique: str) -> str:
    with httpx.Client(base_url=api_url, timeout=10.0) as http:
        owner = sign_in(http, app_settings, f"owner-{unique}@example.com")
        key: str = create_write_key(http, owner, create_project(http, owner))["key"]
        return key


def send_every_kind(analytics: Any, unique: str) -> dict[str, Json]:
    """One call of each kind through the SDK; the messages it queued, by their messageId."""
    calls = [
        analytics.track(
            f"user-{unique}",
            "Order Completed",
            {"revenue": 19.99, "items": [{"sku": "A-1", "qty": 2}], "coupon": None},
            context={"ip": "203.0.113.9"},
            integrations={"All": False, "Mixpanel": True},
        ),
        analytics.identify(f"user-{unique}", {"email": "ada@example.com", "plan": "pro"}),
        analytics.page(f"user-{unique}", name="Pricing", properties={"path": "/pricing"}),
        analytics.screen(anonymous_id=f"anon-{unique}", name="Home"),
        analytics.group(f"user-{unique}", "acme", {"name": "Acme", "seats": 40}),
        analytics.alias(f"anon-{unique}", f"user-{unique}"),
    ]
    assert all(queued for queued, _ in calls)
    return {message["messageId"]: message for _, message in calls}


def assert_arrived_as_sent(record: Any, message: Json, project_id_seen: set[str]) -> None:
    project_id_seen.add(record.project_id)
    assert record.type == message["type"]
    assert record.user_id == message.get("userId")
    assert record.anonymous_id == message.get("anonymousId")
    assert record.event == message.get("event")
    assert record.name == message.get("name")
    assert record.group_id == message.get("groupId")
    assert record.previous_id == message.get("previousId")
    for field in ("properties", "traits", "integrations"):
        assert json_value(getattr(record, field)) == message.get(field), field
    # The sender's address is recorded where the SDK sent none; a context.ip sent is kept.
    assert json_value(record.context) == {"ip": "127.0.0.1", **message["context"]}
    # The SDK stamps `timestamp` and the envelope's `sentAt` from the same clock.
    assert record.original_timestamp is not None and record.sent_at is not None
    original = datetime.fromisoformat(record.original_timestamp)
    assert original == datetime.fromisoformat(message["timestamp"])
    sent_at = datetime.fromisoformat(record.sent_at)
    assert 0 <= (sent_at - original).total_seconds() < 30


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_segment_sdk_events_arrive_with_their_message_ids(
    api_url: str,
    write_key: str,
    app_settings: Settings,
    topic: str,
    unique: str,
    compressed: bool,
) -> None:
    errors: list[str] = []
    analytics = Client(
        write_key,
        host=api_url,
        gzip=compressed,
        on_error=lambda error, batch: errors.append(f"{error} ({len(batch)} messages)"),
        max_retries=2,
        upload_interval=0.05,
    )
    try:
        sent = send_every_kind(analytics, unique)
        analytics.flush()
    finally:
        analytics.shutdown()
    assert errors == []

    delivered = by_message_id(read_topic(str(app_settings.kafka_bootstrap), topic))
    assert delivered.keys() == sent.keys()
    projects: set[str] = set()
    for message_id, message in sent.items():
        assert_arrived_as_sent(delivered[message_id].record, message, projects)
        distinct = message.get("userId") or message["anonymousId"]
        assert delivered[message_id].key.decode().endswith(f":{distinct}")
    assert len(projects) == 1
    library = json_value(delivered[next(iter(sent))].record.context)["library"]
    assert library == {"name": "analytics-python", "version": VERSION}
