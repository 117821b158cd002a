"""Periodic upkeep: jobs of dead workers back to the queue, expired export files removed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import procrastinate
from procrastinate.exceptions import ConnectorException
from procrastinate.jobs import Status
from sqlalchemy import select

from eventpipe.domain.exports import file_key, set_export
from eventpipe.domain.tables import Export, ExportState
from eventpipe.worker.resources import WorkerResources
from eventpipe.worker.retry import MAX_HANDBACKS

log = logging.getLogger(__name__)


async def sweep_stalled(queue: procrastinate.App, stale_after_s: float) -> str:
    """Procrastinate marks a worker stale when its heartbeat stops but leaves its `doing` jobs
    where they are; this hands them back. A job that keeps killing its workers (an OOM on one
    export) is failed after MAX_HANDBACKS instead of taking every worker down in turn."""
    manager = queue.job_manager
    stalled = list(await manager.get_stalled_jobs(seconds_since_heartbeat=stale_after_s))
    for job in stalled:
        try:
            if job.attempts >= MAX_HANDBACKS:
                await manager.finish_job(job, status=Status.FAILED, delete_job=False)
                log.error("job %s failed: its worker died %d times", job.id, job.attempts)
                continue
            await manager.retry_job(job)
        except ConnectorException as error:
            # Handed back by a concurrent sweep since we looked: it is no longer `doing`.
            log.info("job %s not handed back: %s", job.id, error)
            continue
        log.warning("job %s (%s) of a dead worker handed back", job.id, job.task_name)
    await manager.prune_stalled_workers(seconds_since_heartbeat=stale_after_s)
    return f"{len(stalled)} handed back"


async def expire_exports(resources: WorkerResources) -> str:
    """Finished exports older than the retention lose their file (and their link)."""
    cutoff = datetime.now(UTC) - timedelta(days=resources.settings.export_retention_days)
    async with resources.sessions() as session:
        found = await session.scalars(
            select(Export).where(
                Export.state == ExportState.SUCCEEDED.value, Export.finished_at < cutoff
            )
        )
        expired = list(found)
    for export in expired:
        resources.store.delete(file_key(export))
        async with resources.sessions() as session:
            await set_export(session, export.id, state=ExportState.EXPIRED.value)
    return f"{len(expired)} expired"
