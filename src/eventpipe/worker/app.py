"""The worker role: an arq worker on the `eventpipe:jobs` queue in Redis.

Job functions arrive with the jobs issue; today the worker connects, registers its health key
and waits for work, finishing a running job before it exits on SIGTERM (arq's own handling).
"""

from __future__ import annotations

import logging
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func

from eventpipe.core.config import Settings

log = logging.getLogger(__name__)

QUEUE_NAME = "eventpipe:jobs"


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
        health_check_key=f"{QUEUE_NAME}:health",
        health_check_interval=10,
        burst=burst,
        # arq finishes the running jobs on SIGTERM before it exits.
        handle_signals=handle_signals,
    )


def run_worker(settings: Settings) -> None:
    worker = build_worker(settings)
    log.info("worker connected to queue %s", QUEUE_NAME)
    # run() owns the event loop that arq bound its signal handlers to in Worker.__init__.
    worker.run()
