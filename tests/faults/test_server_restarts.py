"""Redis and PostgreSQL killed (SIGKILL) and started again under load, beside a running api and
processor: revocations acknowledged just before the kill stay in force, ingest goes on while
PostgreSQL is away, the processor pauses and catches up, and the checker finds nothing lost or
counted twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from eventpipe.local.postgres import start_postgres
from eventpipe.local.process import ManagedProcess
from eventpipe.local.redis import start_redis
from eventpipe.local.stack import StackUrls
from tests.faults.checker import check
from tests.faults.load import REQUEST_TIMEOUT_S, Load
from tests.integration.pipeline_support import LivePipeline, live_pipeline
from tests.integration.support import wait_for
from tests.integration.test_ingest import PASSWORD

LOGOUTS = 60


Starter = Callable[..., tuple[str, ManagedProcess]]


@dataclass
class OwnServer:
    """A server of this test only, so it can be killed; `restart` brings it back on its port."""

    start: Starter
    state_dir: Path
    url: str = ""
    process: ManagedProcess | None = None

    def __post_init__(self) -> None:
        self.url, self.process = self.start(self.state_dir)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def restart(self) -> None:
        _, self.process = self.start(self.state_dir, port=urlsplit(self.url).port)

    def stop(self) -> None:
        assert self.process is not None
        self.process.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(start_redis, tmp_path / "redis-state")
    yield server
    server.stop()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(start_postgres, tmp_path / "pg-state")
    yield server
    server.stop()


@pytest.fixture
def live(
    stack_urls: StackUrls, own_redis: OwnServer, own_postgres: OwnServer, tmp_path: Path
) -> Iterator[LivePipeline]:
    servers = StackUrls(stack_urls.kafka_bootstrap, own_redis.url, own_postgres.url)
    # No fresh-answer cache: every request during an outage takes the stale path.
    overrides = {"EVENTPIPE_WRITE_KEY_CACHE_S": "0"}
    with live_pipeline(servers, tmp_path / "pipeline", overrides) as pipeline:
        yield pipeline


def _tokens(live: LivePipeline, count: int) -> list[str]:
    login = {"email": live.owner.email, "password": PASSWORD}
    with httpx.Client(base_url=live.url, timeout=30) as http:
        return [http.post("/auth/login", json=login).json()["access_token"] for _ in range(count)]


def _status(url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{url}/auth/me", headers=headers, timeout=10).status_code


def _logout(url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/auth/logout", headers=headers, timeout=10).status_code


def test_revocations_acknowledged_before_a_redis_sigkill_stay_in_force(
    live: LivePipeline, own_redis: OwnServer
) -> None:
    project, key = live.project_key()
    load = Load(live.url, key, rate=400, batch=20).start()
    try:
        tokens = _tokens(live, LOGOUTS)
        assert {_status(live.url, token) for token in tokens} == {200}
        wait_for(lambda: load.acknowledged_count() >= 400, 30, "load flowing")
        # The burst, and the kill the moment the last logout is acknowledged.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda token: _logout(live.url, token), tokens))
        own_redis.kill()
        assert answers == [204] * LOGOUTS
        killed_at = time.monotonic()
        own_redis.restart()
        restarted_s = time.monotonic() - killed_at
        # Every revocation is in force on the restarted Redis (none fails open either).
        assert [_status(live.url, token) for token in tokens] == [401] * LOGOUTS
        acknowledged = load.acknowledged_count()
        wait_for(lambda: load.acknowledged_count() > acknowledged + 400, 60, "ingest again")
    finally:
        result = load.stop()
    tally = check("redis SIGKILL after 60 logouts", result, live.pipeline, project,
                  timings={"redis restarted": restarted_s})  # fmt: skip
    tally.assert_exact()


def test_postgres_then_redis_restarted_under_load_lose_and_double_nothing(
    live: LivePipeline, own_redis: OwnServer, own_postgres: OwnServer
) -> None:
    project, key = live.project_key()
    load = Load(live.url, key, rate=400, batch=20).start()
    timings: dict[str, float] = {}
    try:
        wait_for(lambda: load.acknowledged_count() >= 400, 30, "load flowing")
        own_postgres.kill()
        killed_at = time.monotonic()
        # Ingest does not need PostgreSQL for a key it checked recently: it keeps acknowledging.
        during = load.acknowledged_count()
        wait_for(lambda: load.acknowledged_count() > during + 1_000, 30, "ingest without PG")
        assert not [a for a in load.answers_since(killed_at) if a.status != 200]
        own_postgres.restart()
        timings["postgres down"] = time.monotonic() - killed_at
        own_redis.kill()
        killed_at = time.monotonic()
        own_redis.restart()
        timings["redis down"] = time.monotonic() - killed_at
        acknowledged = load.acknowledged_count()
        wait_for(lambda: load.acknowledged_count() > acknowledged + 400, 60, "ingest again")
    finally:
        result = load.stop()
    timings["longest request"] = result.longest_request_s()
    assert result.longest_request_s() < REQUEST_TIMEOUT_S
    tally = check("postgres then redis SIGKILL under load", result, live.pipeline, project,
                  timings=timings)  # fmt: skip
    tally.assert_exact()
