"""The queue as an operator sees it (`eventpipe jobs`): jobs, their history and their errors,
and a dead-lettered job put back in the queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import procrastinate
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

STATUSES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted")

_COLUMNS = "id, queue_name, task_name, status::text AS status, attempts, scheduled_at, args, lock"


class JobNotFound(LookupError):
    pass


class NotRetryable(ValueError):
    pass


@dataclass(frozen=True)
class JobDetail:
    job: dict[str, Any]
    events: list[dict[str, Any]]
    errors: list[dict[str, Any]]


async def list_jobs(
    session: AsyncSession, *, status: str | None, task: str | None, limit: int
) -> list[dict[str, Any]]:
    """Newest first, with when each was deferred (from Procrastinate's event history)."""
    query = text(
        f"SELECT {_COLUMNS}, (SELECT min(at) FROM procrastinate_events e WHERE e.job_id = j.id) "  # noqa: S608 - fixed names
        "AS deferred_at FROM procrastinate_jobs j "
        "WHERE (CAST(:status AS text) IS NULL OR status::text = :status) "
        "AND (CAST(:task AS text) IS NULL OR task_name = :task) ORDER BY id DESC LIMIT :limit"
    )
    rows = await session.execute(query, {"status": status, "task": task, "limit": limit})
    return [dict(row._mapping) for row in rows]


async def job_detail(session: AsyncSession, job_id: int) -> JobDetail:
    found = await session.execute(
        text(f"SELECT {_COLUMNS} FROM procrastinate_jobs WHERE id = :id"),  # noqa: S608 - fixed names
        {"id": job_id},
    )
    row = found.first()
    if row is None:
        raise JobNotFound(f"no job {job_id} in the queue")
    events = await session.execute(
        text(
            "SELECT type::text AS type, at FROM procrastinate_events WHERE job_id = :id ORDER BY id"
        ),
        {"id": job_id},
    )
    errors = await session.execute(
        text("SELECT attempt, error, created_at FROM job_errors WHERE job_id = :id ORDER BY id"),
        {"id": job_id},
    )
    return JobDetail(
        dict(row._mapping), [dict(e._mapping) for e in events], [dict(e._mapping) for e in errors]
    )


async def retry_job(session: AsyncSession, queue: procrastinate.App, job_id: int) -> None:
    """Put a failed (dead-lettered) job back in the queue to run now."""
    detail = await job_detail(session, job_id)
    if detail.job["status"] != "failed":
        raise NotRetryable(f"job {job_id} is {detail.job['status']}: only failed jobs are retried")
    await queue.job_manager.retry_job_by_id_async(job_id=job_id, retry_at=datetime.now(UTC))
