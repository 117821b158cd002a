"""`eventpipe jobs`: what the commands print, kept out of cli.py so it stays a table of commands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.core.queue import build_app
from eventpipe.domain.jobs import job_detail, list_jobs, retry_job

T = TypeVar("T")


def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = async_engine(str(settings.database_url))
        try:
            async with async_sessionmaker(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def print_jobs(
    settings: Settings, *, status: str | None, task: str | None, limit: int, as_json: bool
) -> None:
    rows = _with_session(settings, lambda s: list_jobs(s, status=status, task=task, limit=limit))
    if as_json:
        for row in rows:
            typer.echo(_json(row))
        return
    typer.echo(f"{'ID':>8}  {'STATUS':<10} {'TASK':<16} {'ATTEMPTS':>8}  {'QUEUE':<12} ARGS")
    for row in rows:
        typer.echo(
            f"{row['id']:>8}  {row['status']:<10} {row['task_name']:<16} {row['attempts']:>8}  "
            f"{row['queue_name']:<12} {_json(row['args'])[:80]}"
        )
    if not rows:
        typer.echo("(no jobs)")


def show_job(settings: Settings, job_id: int) -> None:
    detail = _with_session(settings, lambda s: job_detail(s, job_id))
    job = detail.job
    typer.echo(f"job {job['id']}: {job['task_name']} on {job['queue_name']}, {job['status']}")
    typer.echo(f"  attempts: {job['attempts']}   scheduled at: {job['scheduled_at'] or '-'}")
    typer.echo(f"  args: {_json(job['args'])}")
    typer.echo("  history:")
    for event in detail.events:
        typer.echo(f"    {event['at'].isoformat()}  {event['type']}")
    if detail.errors:
        typer.echo("  errors:")
        for error in detail.errors:
            when = error["created_at"].isoformat()
            typer.echo(f"    attempt {error['attempt']} at {when}: {error['error']}")


def retry(settings: Settings, job_id: int) -> None:
    async def work(session: AsyncSession) -> None:
        queue = build_app(settings, pool_size=1)
        async with queue.open_async():
            await retry_job(session, queue, job_id)

    _with_session(settings, work)
