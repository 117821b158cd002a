"""The worker role: an arq worker on the `eventpipe:jobs` queue in Redis.

Job functions arrive with the jobs issue; today the worker connects, registers its health key
and waits for work. On SIGTERM arq (0.25, `job_completion_wait=0`) cancels a running job at
once rather than finishing it: issue 19 chooses the queue again and owns that behaviour.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import redis
from arq.connections import RedisSettings
from arq.worker import Worker, func
from prometheus_client import CollectorRegistry

from eventpipe.core.config import Settings
from eventpipe.core.health import serve_health

log = logging.getLogger(__name__)

QUEUE_NAME = "eventpipe:jobs"
HEALTH_CHECK_INTERVAL_S = 10


def health_key() -> str:
    """This worker's own health key: arq rewrites it, with a TTL, at every turn of its loop."""
    return f"{QUEUE_NAME}:health:{socket.gethostname()}:{os.getpid()}"


async def ping(ctx: dict[Any, Any], *_args: Any, **_kwargs: Any) -> str:
    """A job that proves the queue round trip end to end (the tests enqueue it)."""
    log.info("ping job %s", ctx.get("job_id"))
    return "pong"


def build_worker(settings: Settings, *, burst: bool = False, handle_signals: bool = True) -> Worker:
    assert settings.redis_url is not None  # noqa: S101 - checked by the CLI
    return Worker(
        functions=[func(ping, name="ping")],
        queue_name=QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(str(settings.redis_url)),
        health_check_key=health_key(),
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        burst=burst,
        # arq stops on SIGTERM, cancelling a running job (see the module's docstring).
        handle_signals=handle_signals,
    )


def _health_record(settings: Settings) -> bytes | None:
    """This worker's health record: present while arq's loop turns (RedisError if unreachable)."""
    client = redis.Redis.from_url(str(settings.redis_url), socket_timeout=2)
    try:
        found = client.get(health_key())
    finally:
        client.close()
    return found if isinstance(found, bytes) else None


def _ready(settings: Settings) -> tuple[bool, str]:
    try:
        found = _health_record(settings)
    except redis.RedisError as error:
        return False, f"Redis: {error}"
    if found is None:
        return False, f"no health record in the last {HEALTH_CHECK_INTERVAL_S + 1}s"
    return True, found.decode(errors="replace")


def _alive(settings: Settings) -> tuple[bool, str]:
    # A Redis outage is waited out, not cured by a restart: only a loop that stopped writing
    # while Redis answers means this process is stuck.
    try:
        found = _health_record(settings)
    except redis.RedisError as error:
        return True, f"Redis unreachable ({error}): cannot tell, not restarting for it"
    return found is not None, "health record present" if found else "arq's loop stopped"


def run_worker(settings: Settings) -> None:
    worker = build_worker(settings)
    if settings.worker_metrics_port:
        serve_health(
            settings.worker_metrics_port,
            registry=CollectorRegistry(),
            liveness=lambda: _alive(settings),
            readiness=lambda: _ready(settings),
        )
    log.info("worker connected to queue %s", QUEUE_NAME)
    # run() owns the event loop that arq bound its signal handlers to in Worker.__init__.
    worker.run()
