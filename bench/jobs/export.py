"""One export per format and size, each through a fresh `eventpipe worker`."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncSession

from bench.cpu import CpuUse, cpu_between
from bench.jobs.archive import Dataset, fill_dataset
from bench.jobs.context import Context, drop_database, memory_kib, queue_app, wait_for, worker_env
from bench.jobs.limits import Limits, measure_limits
from bench.roles import start_role, wait_ready
from eventpipe.core.db import async_engine
from eventpipe.domain.exports import ExportCreate, create_export
from eventpipe.exports.formats import ExportFormat, extension
from eventpipe.local.process import ManagedProcess


@dataclass(frozen=True)
class ExportRun:
    rows: int
    seconds: float  # the export row's started_at to finished_at
    size_bytes: int
    idle_kib: int  # the worker's peak RSS once ready, before the export
    peak_kib: int
    cpu: CpuUse
    window_s: float

    @property
    def per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


async def request_export(data: Dataset, fmt: ExportFormat) -> uuid.UUID:
    """The export row and its job, as the api's handler makes them."""
    engine, app = async_engine(data.url), queue_app(data.url)
    try:
        async with app.open_async(), AsyncSession(engine, expire_on_commit=False) as session:
            export = await create_export(
                session, app, project_id=data.project_id, user_id=data.user_id,
                body=ExportCreate(format=fmt),
            )  # fmt: skip
            return export.id
    finally:
        await engine.dispose()


def wait_export(data: Dataset, export_id: uuid.UUID, process: ManagedProcess) -> tuple[Any, ...]:
    with psycopg.connect(data.url, autocommit=True) as conn:

        def state() -> str:
            row = conn.execute("SELECT state FROM exports WHERE id = %s", (export_id,)).fetchone()
            return str(row[0]) if row else "missing"

        timeout = 120 + data.rows / 2_000
        wait_for(lambda: state() in {"succeeded", "failed"}, process, timeout, "the export")
        row = conn.execute(
            "SELECT state, rows_written, size_bytes, "
            "extract(epoch FROM finished_at - started_at), error FROM exports WHERE id = %s",
            (export_id,),
        ).fetchone()
    if row is None or row[0] != "succeeded":
        raise RuntimeError(f"export {export_id} failed: {row[4] if row else 'no row'}")
    return tuple(row)


def measure_export(ctx: Context, data: Dataset, fmt: ExportFormat) -> ExportRun:
    """One export through a fresh worker, so its peak RSS is this export's."""
    env = worker_env(ctx, data.url)
    log = ctx.tmp / f"export-{data.rows}-{fmt.value}.log"
    process = start_role("worker", ["-m", "eventpipe", "worker"], env, log)
    try:
        wait_ready(process, f"http://127.0.0.1:{env['EVENTPIPE_WORKER_METRICS_PORT']}/readyz")
        idle = memory_kib(process.pid)["VmHWM"]
        meter = ctx.meter(process.pid)
        before = meter.sample()
        started = time.perf_counter()
        export_id = asyncio.run(request_export(data, fmt))
        _, rows, size, seconds, _ = wait_export(data, export_id, process)
        cpu, window = cpu_between(before, meter.sample()), time.perf_counter() - started
        peak = memory_kib(process.pid)["VmHWM"]
    finally:
        process.stop(60)
    (Path(env["EVENTPIPE_EXPORT_DIR"]) / f"{export_id}{extension(fmt)}").unlink(missing_ok=True)
    return ExportRun(int(rows), float(seconds), int(size), idle, peak, cpu, window)


@dataclass
class ExportResults:
    datasets: list[Dataset] = field(default_factory=list)
    limits: dict[int, Limits] = field(default_factory=dict)
    runs: dict[tuple[int, str], ExportRun] = field(default_factory=dict)


def measure_exports(ctx: Context, formats: list[ExportFormat]) -> ExportResults:
    results = ExportResults()
    for rows in ctx.args.rows:
        ctx.clock.say(f"exports: filling an archive of {rows:,} rows")
        data = fill_dataset(ctx, rows)
        results.datasets.append(data)
        for fmt in formats:
            ctx.clock.say(f"exports: {rows:,} rows as {fmt.value} through a fresh worker")
            results.runs[(rows, fmt.value)] = measure_export(ctx, data, fmt)
        ctx.clock.say(f"exports: the limits on {rows:,} rows")
        results.limits[rows] = measure_limits(ctx, data, formats)
        drop_database(ctx, data.name)
    return results
