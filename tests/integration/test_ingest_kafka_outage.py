"""Ingest while its Kafka broker stops and comes back: 503 meanwhile, never a 200 for a lost event.

The test runs a broker of its own (the shared one serves every other test) and restarts it on the
same state directory and PLAINTEXT port, as a supervisor would, under the api's feet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from eventpipe.api.app import create_app
from eventpipe.core.config import Settings
from eventpipe.core.kafka import ensure_topics
from eventpipe.local.kafka import start_kafka
from eventpipe.local.process import ManagedProcess, free_port
from tests.integration.support import wait_for
from tests.integration.test_ingest import (
    api_settings,
    create_project,
    create_write_key,
    post_event,
    read_topic,
    sign_in,
)

pytestmark = pytest.mark.integration

ACK_TIMEOUT_S = 2.0
# The api gives up after the ack timeout plus one second; the rest is scheduling slack.
ANSWER_BOUND_S = ACK_TIMEOUT_S + 1 + 2
EVENTS_PER_REQUEST = 3


@dataclass
class Broker:
    """A Kafka broker of this test's own that keeps its state directory and port on restart."""

    state_dir: Path
    cache_dir: Path
    port: int
    bootstrap: str = ""
    process: ManagedProcess | None = None

    def start(self) -> None:
        self.bootstrap, self.process = start_kafka(self.state_dir, self.cache_dir, port=self.port)
        assert self.bootstrap == f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture
def broker(settings: Settings, tmp_path: Path) -> Iterator[Broker]:
    own = Broker(tmp_path / "outage-kafka", settings.cache_dir, free_port())
    own.start()
    try:
        yield own
    finally:
        own.stop()


@dataclass(frozen=True)
class Attempt:
    message_ids: list[str]
    started: float
    finished: float
    status: int
    retry_after: str | None


@dataclass
class Sender:
    """Sends a small batch after another from a thread of its own, recording every answer."""

    client: TestClient
    key: str
    attempts: list[Attempt] = field(default_factory=list)
    halt: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        number = 0
        while not self.halt.is_set():
            ids = [f"outage-{number}-{n}" for n in range(EVENTS_PER_REQUEST)]
            batch = [
                {"type": "track", "userId": f"u{n}", "event": "E", "messageId": i}
                for n, i in enumerate(ids)
            ]
            started = time.monotonic()
            response = post_event(self.client, "/v1/batch", {"batch": batch}, self.key)
            finished = time.monotonic()
            retry_after = response.headers.get("Retry-After")
            self.attempts.append(Attempt(ids, started, finished, response.status_code, retry_after))
            number += 1
            self.halt.wait(0.02)  # paced: a few dozen requests a second while Kafka is up

    def answered(self, since: float, until: float = float("inf")) -> list[Attempt]:
        """Requests sent and answered between these two moments."""
        return [a for a in list(self.attempts) if since <= a.started and a.finished <= until]


def streak_of_successes(attempts: list[Attempt]) -> int:
    streak = 0
    for attempt in reversed(attempts):
        if attempt.status != 200:
            break
        streak += 1
    return streak


def test_kafka_outage_answers_503_and_ingest_resumes_after_restart(
    broker: Broker, settings: Settings, tmp_path: Path, unique: str
) -> None:
    topic = f"outage.{unique}"
    ensure_topics(broker.bootstrap, {topic: 3})
    update = {"kafka_bootstrap": broker.bootstrap, "events_topic": topic}
    app = api_settings(settings, tmp_path / "keys", ingest_ack_timeout_s=ACK_TIMEOUT_S, **update)
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        owner = sign_in(client, app, f"owner-{unique}@example.com")
        key = create_write_key(client, owner, create_project(client, owner))["key"]
        sender = Sender(client, key)
        thread = threading.Thread(target=sender.run, name="ingest-sender")
        thread.start()
        try:
            wait_for(lambda: streak_of_successes(sender.attempts) >= 5, 30, "ingesting")
            broker.stop()
            stopped = time.monotonic()
            wait_for(lambda: len(sender.answered(stopped)) >= 3, 30, "answered while stopped")
            restarting = time.monotonic()
            broker.start()
            restarted = time.monotonic()
            wait_for(lambda: streak_of_successes(sender.attempts) >= 10, 60, "resumed")
        finally:
            sender.halt.set()
            thread.join(ANSWER_BOUND_S + 5)

    attempts = sender.attempts
    assert {a.status for a in attempts} <= {200, 503}, [a.status for a in attempts]
    while_down = sender.answered(stopped, restarting)
    assert len(while_down) >= 3
    assert {a.status for a in while_down} == {503}
    assert all(a.retry_after is not None and int(a.retry_after) >= 1 for a in while_down)
    assert max(a.finished - a.started for a in attempts) < ANSWER_BOUND_S
    assert any(a.status == 200 for a in sender.answered(restarted))

    in_topic = {d.record.message_id for d in read_topic(broker.bootstrap, topic)}
    acknowledged = {i for a in attempts if a.status == 200 for i in a.message_ids}
    missing = acknowledged - in_topic
    assert not missing, f"{len(missing)} events answered 200 are not in the topic: {missing}"
