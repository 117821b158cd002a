"""The functions behind the task names of eventpipe.core.queue, registered on the worker's app."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import procrastinate
from procrastinate.job_context import JobContext

from eventpipe.core.queue import Queue, Task
from eventpipe.domain.tables import ExportState
from eventpipe.worker.alerts import deliver_webhook, evaluate_alerts
from eventpipe.worker.exports import run_export, set_export_in
from eventpipe.worker.resources import WorkerResources, resources_of
from eventpipe.worker.retry import JitteredSchedule
from eventpipe.worker.upkeep import expire_exports, sweep_stalled

# An export that fails (the database restarting, a full disk) is tried again after about 10 s,
# 1 min and 5 min, then dead-lettered: `eventpipe jobs retry` runs it again.
EXPORT_SCHEDULE_S = (10, 60, 300)


def _register_exports(queue: procrastinate.App, strategy: JitteredSchedule) -> None:
    @queue.task(name=Task.EXPORT, queue=Queue.EXPORTS, pass_context=True, retry=strategy)
    async def export(context: JobContext, export_id: str) -> str:
        resources, attempts = resources_of(context), context.job.attempts
        try:
            return await run_export(resources, uuid.UUID(export_id), attempts + 1)
        except asyncio.CancelledError:
            # Handed back at shutdown: shown as queued again, since it is.
            await asyncio.shield(
                set_export_in(resources, uuid.UUID(export_id), state=ExportState.QUEUED.value)
            )
            raise
        except Exception as error:
            again = strategy.will_retry(error, attempts)
            state = ExportState.QUEUED if again else ExportState.FAILED
            await set_export_in(
                resources, uuid.UUID(export_id), state=state.value, error=_describe(error)
            )
            raise


def _register_alerts(queue: procrastinate.App, resources: WorkerResources) -> None:
    settings = resources.settings
    webhook_strategy = JitteredSchedule(settings.webhook_retry_schedule_s)

    @queue.task(
        name=Task.DELIVER_WEBHOOK, queue=Queue.WEBHOOKS, pass_context=True, retry=webhook_strategy
    )
    async def deliver(
        context: JobContext, rule_id: str, message_id: str, body: dict[str, Any]
    ) -> str:
        return await deliver_webhook(
            resources_of(context), webhook_strategy, rule_id=rule_id, message_id=message_id,
            body=body, attempts=context.job.attempts,
        )  # fmt: skip

    # One evaluation at a time (lock): a slow one overlapping the next would judge twice.
    @queue.periodic(cron=f"* * * * * */{settings.alert_evaluate_every_s}")
    @queue.task(
        name=Task.EVALUATE_ALERTS,
        queue=Queue.MAINTENANCE,
        pass_context=True,
        lock=Task.EVALUATE_ALERTS,
    )
    async def evaluate(context: JobContext, timestamp: int) -> str:
        del timestamp
        return await evaluate_alerts(resources_of(context), queue)


def _register_upkeep(queue: procrastinate.App, resources: WorkerResources) -> None:
    settings = resources.settings

    # No lock: a sweep whose worker was killed would hold it, and only a sweep frees a dead
    # worker's jobs. Two sweeps at once are harmless (upkeep.sweep_stalled).
    @queue.periodic(cron=f"* * * * * */{settings.worker_sweep_every_s}")
    @queue.task(name=Task.SWEEP_STALLED, queue=Queue.MAINTENANCE)
    async def sweep(timestamp: int) -> str:
        del timestamp
        return await sweep_stalled(queue, settings.worker_stale_after_s)

    @queue.periodic(cron="17 * * * *")
    @queue.task(name=Task.EXPIRE_EXPORTS, queue=Queue.MAINTENANCE, pass_context=True)
    async def expire(context: JobContext, timestamp: int) -> str:
        del timestamp
        return await expire_exports(resources_of(context))

    @queue.task(name=Task.PING, queue=Queue.DEFAULT)
    async def ping() -> str:
        """No work: the queue's round trip, for checks and the benchmark."""
        return "pong"


def register_tasks(queue: procrastinate.App, resources: WorkerResources) -> None:
    _register_exports(queue, JitteredSchedule(EXPORT_SCHEDULE_S))
    _register_alerts(queue, resources)
    _register_upkeep(queue, resources)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]
