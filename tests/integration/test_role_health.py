"""The probes of the processor and the worker (/healthz, /readyz, /metrics on a port of their
own): the server's answers from the role's checks, and each role running for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from eventpipe.core.config import Settings
from eventpipe.core.health import Check, Heartbeat, serve_health
from eventpipe.core.kafka import ensure_topics
from eventpipe.local.process import free_port
from eventpipe.local.stack import StackUrls
from eventpipe.migrations.runner import upgrade
from tests.integration.processor_support import Pipeline, ProcessorFleet
from tests.integration.support import wait_for

pytestmark = pytest.mark.integration


def answer(ok: bool) -> Check:
    return lambda: (ok, "said so")


@pytest.fixture
def probes() -> Iterator[tuple[str, Heartbeat]]:
    registry = CollectorRegistry()
    Counter("eventpipe_things", "Things", registry=registry).inc(3)
    heartbeat = Heartbeat()
    server = serve_health(
        0, registry=registry, liveness=heartbeat.liveness(5.0), readiness=answer(False)
    )
    assert server is not None
    yield f"http://127.0.0.1:{server.server_address[1]}", heartbeat
    server.shutdown()
    server.server_close()


def test_health_follows_the_heartbeat_and_readiness_the_role(
    probes: tuple[str, Heartbeat],
) -> None:
    url, heartbeat = probes
    heartbeat.beat()
    alive = httpx.get(f"{url}/healthz")
    assert alive.status_code == 200 and alive.json()["status"] == "ok"
    heartbeat.last = time.monotonic() - 10  # a loop that has not turned for 10 s
    stalled = httpx.get(f"{url}/healthz")
    assert stalled.status_code == 503 and stalled.json()["status"] == "stalled"
    heartbeat.beat()
    assert httpx.get(f"{url}/healthz").status_code == 200

    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and ready.json() == {
        "status": "unavailable",
        "detail": "said so",
    }
    assert "eventpipe_things_total 3.0" in httpx.get(f"{url}/metrics").text
    missing = httpx.get(f"{url}/nothing")
    assert missing.status_code == 404 and missing.json()["status"] == "not_found"


def test_a_taken_port_leaves_the_role_running_without_probes(
    probes: tuple[str, Heartbeat],
) -> None:
    taken = int(probes[0].rsplit(":", 1)[1])
    registry = CollectorRegistry()
    assert (
        serve_health(taken, registry=registry, liveness=answer(True), readiness=answer(True))
        is None
    )


def answers(url: str, status: int) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == status
    except httpx.TransportError:
        return False


def test_a_running_processor_answers_its_probes(
    stack_urls: StackUrls, topic: str, database_url: str, fleet: ProcessorFleet
) -> None:
    upgrade(database_url)
    pipeline = Pipeline(stack_urls.kafka_bootstrap, stack_urls.redis_url, database_url, topic)
    ensure_topics(stack_urls.kafka_bootstrap, {pipeline.dlq_topic: 1})
    port = free_port()
    process = fleet.start(pipeline.processor_env(metrics_port=port))
    url = f"http://127.0.0.1:{port}"

    wait_for(lambda: answers(f"{url}/readyz", 200), 60, "the processor ready", process.log_tail)
    assert httpx.get(f"{url}/healthz", timeout=5).json()["status"] == "ok"
    assert "eventpipe_batches_total" in httpx.get(f"{url}/metrics", timeout=5).text


def test_a_running_worker_answers_its_probes(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(
        EVENTPIPE_REDIS_URL=str(settings.redis_url),
        EVENTPIPE_DATABASE_URL=str(settings.database_url),
        EVENTPIPE_WORKER_METRICS_PORT=str(port),
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "worker"], env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Started before its database is migrated (a rollout racing the migration job): it
        # waits, not ready, and retries with backoff instead of exiting.
        wait_for(
            lambda: answers(f"{url}/readyz", 503), 60, "the worker unready", log_path.read_text
        )
        assert answers(f"{url}/healthz", 200) and worker.poll() is None
        upgrade(str(settings.database_url))
        wait_for(lambda: answers(f"{url}/readyz", 200), 60, "the worker ready", log_path.read_text)
        assert httpx.get(f"{url}/healthz", timeout=5).json()["status"] == "ok"
        assert "eventpipe_jobs_queued" in httpx.get(f"{url}/metrics", timeout=5).text
    finally:
        worker.terminate()
        assert worker.wait(30) == 0, log_path.read_text()
    assert "reconnecting" in log_path.read_text()
    # Once it has stopped, nothing answers: the probes were the worker's own.
    assert not answers(f"{url}/healthz", 200)
