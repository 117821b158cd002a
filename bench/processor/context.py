"""What every phase of the processor benchmark shares: the servers, the roles' environment, the
fresh databases."""

from __future__ import annotations

import argparse
import os
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import redis

from bench.cpu import CpuMeter
from bench.harness import tree_meter
from bench.roles import Clock
from eventpipe.local.process import free_port
from eventpipe.local.stack import StackUrls
from eventpipe.migrations.runner import upgrade
from eventpipe.processor.archive import ensure_partitions

_QUIET_ENV = {"EVENTPIPE_LOG_LEVEL": "WARNING"}


def _create_database(url: str, name: str) -> str:
    """An empty database `name` beside the one of `url`, kept until the servers stop.

    The one place this benchmark makes a database: to be replaced by eventpipe.local's shared
    helper (tests/integration/support and bench.stack make theirs there too).
    """
    base = url.rpartition("/")[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def fresh_database(urls: StackUrls, name: str) -> str:
    """A new database with the schema and this week's archive partitions."""
    url = _create_database(urls.database_url, name)
    upgrade(url)
    # The processor would create them itself, but only once time.monotonic() passes 3600 s
    # (app.py `_partitions_checked = 0.0`): on a machine up for less than an hour, never.
    ensure_partitions(url, today=date.today(), ahead=7, retention_days=90)
    return url


def role_env(urls: StackUrls, database_url: str, topic: str, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        **_QUIET_ENV,
        "EVENTPIPE_KAFKA_BOOTSTRAP": urls.kafka_bootstrap,
        "EVENTPIPE_REDIS_URL": urls.redis_url,
        "EVENTPIPE_DATABASE_URL": database_url,
        "EVENTPIPE_EVENTS_TOPIC": topic,
        "EVENTPIPE_DLQ_TOPIC": f"{topic}.dlq",
        "EVENTPIPE_PROCESSOR_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "EVENTPIPE_PROCESSOR_METRICS_PORT": str(free_port()),
        "EVENTPIPE_STATE_DIR": str(tmp / "role-state"),
    }


def with_src(env: dict[str, str], src: Path | None) -> dict[str, str]:
    """`env` running the processor from the source tree `src` (an A/B), if given."""
    if src is None:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join([str(src.resolve()), env.get("PYTHONPATH", "")])}


@dataclass
class Context:
    """What every phase shares: the servers, their data, this run's options and scratch space."""

    args: argparse.Namespace
    urls: StackUrls
    servers: dict[str, int]
    redis: redis.Redis
    tmp: Path
    clock: Clock
    topic: str = ""
    project_id: str = ""

    def meter(self, more: dict[str, int] | None = None) -> CpuMeter:
        """The servers, `more` (the processor, the api) and this process."""
        return tree_meter({**self.servers, **(more or {})})

    def sources(self) -> dict[str, Path | None]:
        """The processors to measure: this tree's, and the `--compare-src` one (an A/B)."""
        found: dict[str, Path | None] = {"eventpipe processor": None}
        if self.args.compare_src is not None:
            found[f"from {self.args.compare_src}"] = self.args.compare_src
        return found
