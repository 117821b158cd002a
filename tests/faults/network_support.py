"""Roles whose servers sit behind Toxiproxy: `faulted_roles` starts an api, a processor (with
its probe port) and a worker, each reaching Kafka, Redis and PostgreSQL at its own proxies'
addresses, while the test itself reads and checks through the servers' own addresses.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from eventpipe.core.config import Settings
from eventpipe.core.kafka import ensure_topics
from eventpipe.local.process import free_port
from eventpipe.local.stack import StackUrls
from tests.integration.jobs_support import WorkerProcess, jobs_env
from tests.integration.processor_support import (
    PARTITIONS,
    Pipeline,
    ProcessorFleet,
    ProcessorProcess,
)
from tests.integration.support import (
    api_env,
    delete_topics,
    fresh_database,
    stop_process,
    wait_for,
    wait_until_healthy,
)
from tests.integration.test_ingest import (
    Account,
    api_settings,
    create_project,
    create_write_key,
    sign_in,
)

# A name that resolves nowhere: accepted at creation, and the rule never fires anyway.
NEVER_CALLED = "https://hooks.example.com/never"
_HOST_PORT = re.compile(r"(?<=[@/])127\.0\.0\.1:\d+")
# Short role timeouts (the defaults are in the report of each run): a fault is noticed in
# seconds, and a stalled call gives up well within the load's request timeout.
API_ENV = {
    "EVENTPIPE_INGEST_ACK_TIMEOUT_S": "2",
    "EVENTPIPE_PROBE_TIMEOUT_S": "1",
    "EVENTPIPE_WRITE_KEY_CACHE_S": "0",
}


def host_port(url: str) -> str:
    """The `127.0.0.1:port` of a server URL (Kafka's bootstrap is one already)."""
    found = _HOST_PORT.search(url)
    return found.group(0) if found else url


def through(url: str, address: str) -> str:
    """`url` with its `127.0.0.1:port` replaced by `address` (a proxy's)."""
    return _HOST_PORT.sub(address, url, count=1) if _HOST_PORT.search(url) else address


@dataclass
class Roles:
    """A running api, processor and worker on servers behind proxies; each scenario sends as a
    project of its own."""

    api_url: str
    api: subprocess.Popen[bytes]
    api_log: Path
    processor: ProcessorProcess
    processor_port: int
    worker: WorkerProcess
    # The servers' own addresses: the checker reads around the proxies.
    stored: Pipeline
    owner: Account

    def new_project(self, name: str) -> tuple[str, str]:
        """A project, its write key, and an alert rule that the worker evaluates each second
        (it reads the project's counts in Redis); never met, so no webhook is sent."""
        with httpx.Client(base_url=self.api_url, timeout=10) as http:
            project = create_project(http, self.owner, name)
            key = str(create_write_key(http, self.owner, project)["key"])
            rule = {"name": "never", "comparison": "above", "threshold": 10**9,
                    "window_minutes": 5, "webhook_url": NEVER_CALLED}  # fmt: skip
            alerts = f"/api/projects/{project}/alerts"
            answer = http.post(alerts, json=rule, headers=self.owner.headers)
            assert answer.status_code == 201, answer.text
        return project, key

    def alive(self) -> list[str]:
        """The roles still running."""
        found = {"api": self.api.poll() is None, "processor": self.processor.alive(),
                 "worker": self.worker.process.poll() is None}  # fmt: skip
        return [role for role, running in found.items() if running]

    def logs(self) -> str:
        api = self.api_log.read_text(errors="replace").splitlines()[-15:]
        worker = self.worker.log().splitlines()[-15:]
        return (
            "api:\n" + "\n".join(api) + "\nprocessor:\n" + self.processor.log_tail(15)
            + "\nworker:\n" + "\n".join(worker)
        )  # fmt: skip


@contextmanager
def faulted_roles(direct: StackUrls, reach: Mapping[str, StackUrls], base: Path) -> Iterator[Roles]:
    """An api, a processor and a worker on a fresh topic and database; each role reaches the
    servers at the addresses `reach[role]` gives (its own proxies), while `direct` holds the
    servers' own addresses."""
    unique = uuid.uuid4().hex[:12]
    topic = f"test.{unique}"
    ensure_topics(direct.kafka_bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
    with (
        fresh_database(direct.database_url, f"test_{unique}") as database_url,
        ExitStack() as stack,
    ):
        stack.callback(delete_topics, direct.kafka_bootstrap, [topic, f"{topic}.dlq"])
        common = api_settings(
            Settings(
                database_url=database_url, state_dir=base / "state", events_topic=topic,
                dlq_topic=f"{topic}.dlq", processor_group=f"{topic}-processors",
            ),
            base / "keys",
        )  # fmt: skip
        settings = {role: _reaching(common, urls) for role, urls in reach.items()}
        fleet = ProcessorFleet(base)
        stack.callback(fleet.close)
        port, of_processor = free_port(), settings["processor"]
        env = Pipeline(str(of_processor.kafka_bootstrap), str(of_processor.redis_url),
                       str(of_processor.database_url), topic)  # fmt: skip
        processor = fleet.start(env.processor_env(batch_size=500, metrics_port=port))
        url, api = stack.enter_context(_api(settings["api"], base))
        worker_env = jobs_env(settings["worker"], base / "worker-state", **API_ENV)
        worker = WorkerProcess(worker_env, base / "worker.log")
        stack.callback(worker.stop)
        with httpx.Client(base_url=url, timeout=10) as http:
            owner = sign_in(http, common, f"owner-{unique}@example.com")
        stored = Pipeline(direct.kafka_bootstrap, direct.redis_url, database_url, topic)
        yield Roles(url, api, base / "api.log", processor, port, worker, stored, owner)


def _reaching(settings: Settings, urls: StackUrls) -> Settings:
    """`settings` with the servers at `urls` (the test's database, at the address of `urls`)."""
    database = through(str(settings.database_url), host_port(urls.database_url))
    update = {"kafka_bootstrap": urls.kafka_bootstrap, "redis_url": urls.redis_url,
              "database_url": database}  # fmt: skip
    return settings.model_copy(update=update)


@contextmanager
def _api(settings: Settings, base: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {**api_env(settings, free_port(), base / "api-state"), **API_ENV}
    url, log_path = f"http://127.0.0.1:{env['EVENTPIPE_HTTP_PORT']}", base / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "api"], env=env, stdout=log, stderr=log
        )
    try:
        wait_until_healthy(process, url, log_path)
        yield url, process
    finally:
        stop_process(process)


def run_ping(database_url: str, timeout: float) -> float:
    """Queue a `ping` job and wait until a worker has run it (done jobs are deleted); when."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "VALUES ('default', 'ping', '{}') RETURNING id"
        ).fetchone()
        assert row is not None

        def done() -> bool:
            found = conn.execute("SELECT 1 FROM procrastinate_jobs WHERE id = %s", row).fetchone()
            return found is None

        wait_for(done, timeout, "a ping job run by the worker")
    return time.monotonic()
