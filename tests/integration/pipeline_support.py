"""The whole pipeline as deployed, for tests of real clients: an `eventpipe api` process and an
`eventpipe processor` process on a topic and database of their own, and readers of what arrived
in the archive (PostgreSQL) and the live totals (Redis)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from eventpipe.core.config import Settings
from eventpipe.core.kafka import ensure_topics
from eventpipe.local.process import free_port
from eventpipe.local.stack import StackUrls
from tests.integration.processor_support import (
    PARTITIONS,
    Pipeline,
    ProcessorFleet,
    archived_ids,
    read_totals,
)
from tests.integration.support import (
    api_env,
    delete_topics,
    fresh_database,
    running_api,
    wait_for,
)
from tests.integration.test_ingest import (
    Account,
    api_settings,
    create_project,
    create_write_key,
    sign_in,
)

Row = dict[str, Any]


@dataclass
class LivePipeline:
    """A running api and processor; `project_key` makes a project and its write key."""

    url: str
    settings: Settings
    pipeline: Pipeline
    owner: Account
    api_log: Path | None = None

    def project_key(self, name: str = "site", **key_fields: Any) -> tuple[str, str]:
        """A new project and a write key of it: (project id, key)."""
        with httpx.Client(base_url=self.url, timeout=10) as http:
            project = create_project(http, self.owner, name)
            if not key_fields:
                return project, str(create_write_key(http, self.owner, project)["key"])
            answer = http.post(
                f"/api/projects/{project}/write-keys",
                json={"name": name, **key_fields},
                headers=self.owner.headers,
            )
            assert answer.status_code == 201, answer.text
            return project, str(answer.json()["key"])

    def archived(self, project: str) -> list[Row]:
        """Every archived event of a project, oldest first, with its JSON columns parsed."""
        with psycopg.connect(self.pipeline.database_url, row_factory=dict_row) as conn:
            rows = conn.execute(
                'SELECT * FROM events WHERE project_id = %s ORDER BY "timestamp", message_id',
                (project,),
            )
            return list(rows.fetchall())

    def totals(self, project: str) -> dict[str, int]:
        # In a thread of its own: Playwright's sync API keeps an event loop in this one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(read_totals, self.pipeline, project).result()

    def wait_archived(self, project: str, count: int, timeout: float = 60.0) -> list[Row]:
        """The project's archive once it holds `count` events (fails if it holds more)."""
        wait_for(
            lambda: len(archived_ids(self.pipeline, project)) >= count,
            timeout,
            f"{count} archived events",
            lambda: f"{len(archived_ids(self.pipeline, project))} archived",
        )
        rows = self.archived(project)
        assert len(rows) == count, [row["message_id"] for row in rows]
        return rows

    def wait_counted(self, project: str, expected: dict[str, int], timeout: float = 30.0) -> None:
        """Wait until the live totals are exactly `expected` (names absent count 0)."""
        wait_for(
            lambda: {k: v for k, v in self.totals(project).items() if v} == expected,
            timeout,
            f"live totals {expected}",
            lambda: str(self.totals(project)),
        )


@contextlib.contextmanager
def live_pipeline(
    stack: StackUrls, base: Path, api_overrides: dict[str, str] | None = None
) -> Iterator[LivePipeline]:
    """An api (its environment plus `api_overrides`) and a processor on a fresh topic and
    database of the shared servers."""
    unique = uuid.uuid4().hex[:12]
    topic = f"test.{unique}"
    ensure_topics(stack.kafka_bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
    with fresh_database(stack.database_url, f"test_{unique}") as database_url:
        settings = api_settings(
            Settings(
                kafka_bootstrap=stack.kafka_bootstrap,
                redis_url=stack.redis_url,
                database_url=database_url,
                state_dir=base / "state",
                events_topic=topic,
                # Those of the processor (Pipeline), for the api's traces.
                dlq_topic=f"{topic}.dlq",
                processor_group=f"{topic}-processors",
            ),
            base / "keys",
        )
        pipeline = Pipeline(stack.kafka_bootstrap, stack.redis_url, database_url, topic)
        fleet = ProcessorFleet(base)
        try:
            fleet.start(pipeline.processor_env(batch_size=500))
            env = {**api_env(settings, free_port(), base / "api-state"), **(api_overrides or {})}
            with running_api(env, base / "api.log") as url:
                with httpx.Client(base_url=url, timeout=10) as http:
                    owner = sign_in(http, settings, f"owner-{unique}@example.com")
                yield LivePipeline(url, settings, pipeline, owner, base / "api.log")
        finally:
            fleet.close()
            delete_topics(stack.kafka_bootstrap, [topic, f"{topic}.dlq"])
