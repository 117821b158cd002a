"""`eventpipe migrate`, the one-shot step of every deployment: the schema, then the topics."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from eventpipe.core.kafka import admin_client
from eventpipe.local.stack import StackUrls
from tests.integration.support import delete_topics

pytestmark = pytest.mark.integration


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", "migrate"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_migrate_applies_the_schema_and_creates_the_topics_once(
    stack_urls: StackUrls, database_url: str, unique: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    topic = f"test.migrate.{unique}"
    env.update(
        EVENTPIPE_DATABASE_URL=database_url,
        EVENTPIPE_KAFKA_BOOTSTRAP=stack_urls.kafka_bootstrap,
        EVENTPIPE_EVENTS_TOPIC=topic,
        EVENTPIPE_DLQ_TOPIC=f"{topic}.dlq",
        EVENTPIPE_PARTITIONS="3",
    )
    for _ in range(2):  # a deployment runs it before every release: the second run is a no-op
        done = migrate(env)
        assert done.returncode == 0, done.stderr
        assert f"topics {topic}, {topic}.dlq present" in done.stdout
    found = admin_client(stack_urls.kafka_bootstrap).list_topics(timeout=10).topics
    assert {name: len(found[name].partitions) for name in (topic, f"{topic}.dlq")} == {
        topic: 3,
        f"{topic}.dlq": 3,
    }
    delete_topics(stack_urls.kafka_bootstrap, [topic, f"{topic}.dlq"])

    unreachable = migrate({**env, "EVENTPIPE_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert unreachable.returncode == 1
    assert "eventpipe: cannot create the topics at 127.0.0.1:1" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
