"""The worker role: Procrastinate workers on the PostgreSQL job queue (docs/jobs.md).

On SIGTERM it stops taking jobs, lets running ones finish for `worker_shutdown_grace_s`, then
cancels the rest, which go back to the queue at once (worker/retry.py); a SIGKILLed worker's
jobs are handed back by the stalled sweep (worker/upkeep.py) of any worker still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import procrastinate
from procrastinate.job_context import JobContext
from prometheus_client import CollectorRegistry

from eventpipe.core.config import Settings
from eventpipe.core.health import Heartbeat, serve_health
from eventpipe.core.probes import probe_postgres
from eventpipe.core.queue import ALL_QUEUES, build_app, conninfo
from eventpipe.domain.tables import JobError
from eventpipe.worker.metrics import JobMetrics
from eventpipe.worker.resources import CONTEXT_KEY, WorkerResources, close_resources, open_resources
from eventpipe.worker.tasks import register_tasks

log = logging.getLogger(__name__)

# Liveness: the event loop turns at least this often unless something blocks it.
PULSE_S = 1.0
STUCK_AFTER_S = 30.0
BACKOFF_S = (1, 2, 5, 10, 30)


def job_observer(
    resources: WorkerResources, metrics: JobMetrics
) -> Callable[[Callable[[], Awaitable[Any]], JobContext, Any], Awaitable[Any]]:
    """A worker middleware: each attempt's outcome and duration, and a failure's error kept
    beside the job (Procrastinate keeps the failed job, not why)."""

    async def observe(
        call_next: Callable[[], Awaitable[Any]], context: JobContext, worker: Any
    ) -> Any:
        del worker
        task, started = context.job.task_name, time.monotonic()
        try:
            result = await call_next()
        except asyncio.CancelledError:
            metrics.outcomes.labels(task, "handed_back").inc()
            raise
        except Exception as error:
            metrics.outcomes.labels(task, "failed").inc()
            await _record_error(resources, context, error)
            raise
        finally:
            metrics.durations.labels(task).observe(time.monotonic() - started)
        metrics.outcomes.labels(task, "succeeded").inc()
        return result

    return observe


async def _record_error(
    resources: WorkerResources, context: JobContext, error: BaseException
) -> None:
    text = "".join(traceback.format_exception_only(error)).strip()
    assert context.job.id is not None  # noqa: S101 - a fetched job has its id
    async with resources.sessions() as session:
        session.add(
            JobError(job_id=context.job.id, attempt=context.job.attempts + 1, error=text[:4000])
        )
        await session.commit()


def _ready(settings: Settings, started: Callable[[], bool]) -> tuple[bool, str]:
    if not started():
        return False, "the worker has not connected to the queue yet"
    # The health server's own thread: no event loop of its own to disturb.
    postgres = asyncio.run(probe_postgres(conninfo(settings), settings.probe_timeout_s))
    return (
        (True, "connected to the queue")
        if postgres.ok
        else (False, f"PostgreSQL: {postgres.detail}")
    )


async def _pulse(heartbeat: Heartbeat) -> None:
    while True:
        heartbeat.beat()
        await asyncio.sleep(PULSE_S)


async def _work(
    settings: Settings,
    resources: WorkerResources,
    queue: procrastinate.App,
    middleware: Any,
    started: list[bool],
) -> None:
    async with queue.open_async():
        started[0] = True
        log.info(
            "worker on queues %s, %d at a time", ", ".join(ALL_QUEUES), settings.worker_concurrency
        )
        await queue.run_worker_async(
            queues=list(ALL_QUEUES),
            concurrency=settings.worker_concurrency,
            shutdown_graceful_timeout=settings.worker_shutdown_grace_s,
            update_heartbeat_interval=settings.worker_heartbeat_s,
            stalled_worker_timeout=settings.worker_stale_after_s,
            fetch_job_polling_interval=settings.worker_poll_s,
            additional_context={CONTEXT_KEY: resources},
            # Done is done: the table stays the size of the work in flight and the dead letters.
            delete_jobs="successful",
            worker_middleware=[middleware],
            install_signal_handlers=False,  # see _run
        )


class QueueLost(Exception):
    """The worker stopped on its own: one of its side tasks (the listener) lost PostgreSQL."""


async def _run(settings: Settings) -> None:
    resources, heartbeat, started = open_resources(settings), Heartbeat(), [False]
    registry = CollectorRegistry()
    metrics = JobMetrics(registry, conninfo(settings), settings.probe_timeout_s)
    if settings.worker_metrics_port:
        serve_health(
            settings.worker_metrics_port, registry=registry,
            liveness=heartbeat.liveness(STUCK_AFTER_S),
            readiness=lambda: _ready(settings, lambda: started[0]),
        )  # fmt: skip
    pulse = asyncio.create_task(_pulse(heartbeat))
    middleware = job_observer(resources, metrics)
    # Our own handlers, not Procrastinate's: its worker also stops, without an error, when its
    # listener loses PostgreSQL, and only a signal may end this role.
    stopping = asyncio.Event()
    current: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        stopping.set()
        for task in current:
            task.cancel()  # Procrastinate then stops gracefully (shutdown_graceful_timeout)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    try:
        failures = 0  # in a row: a worker that ran a minute starts again from the first delay
        while True:
            began = time.monotonic()
            queue = build_app(settings, pool_size=settings.worker_concurrency + 3)
            register_tasks(queue, resources)
            work = asyncio.create_task(_work(settings, resources, queue, middleware, started))
            current[:] = [work]
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                if stopping.is_set():
                    return
                raise QueueLost("the worker stopped: its listener lost PostgreSQL")
            except (procrastinate.exceptions.ConnectorException, OSError, QueueLost) as error:
                started[0] = False
                failures = 1 if time.monotonic() - began > 60 else failures + 1
                delay = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
                log.warning("queue unreachable (%s); reconnecting in %d s", error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                if stopping.is_set():
                    return
    finally:
        pulse.cancel()
        await close_resources(resources)


def run_worker(settings: Settings) -> None:
    asyncio.run(_run(settings))
