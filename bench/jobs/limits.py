"""An export's limits: COPY of the same query, the fetch alone, the writer alone."""

from __future__ import annotations

import asyncio
import io
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import text

from bench.cpu import cpu_between
from bench.harness import tree_meter
from bench.jobs.archive import Dataset
from bench.jobs.context import Conn, Context
from bench.processor.rates import Rate
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.domain.exports import ExportCreate, event_filter, normalised_inputs
from eventpipe.domain.search import export_query
from eventpipe.exports.formats import ExportFormat, open_writer

EXPORT_BATCH = Settings.model_fields["export_batch_rows"].default


def the_query(data: Dataset) -> tuple[str, dict[str, Any]]:
    """The statement an export of every row runs (`to` now, to the minute), and its params."""
    inputs = normalised_inputs(ExportCreate(format=ExportFormat.NDJSON), now=datetime.now(UTC))
    return export_query(data.project_id, event_filter(inputs))


def plan_of(conn: Conn, statement: str, params: dict[str, Any]) -> str:
    """The plan's nodes, outermost first, on one line."""
    cursor = psycopg.ClientCursor(conn)
    lines = [str(r[0]) for r in cursor.execute(f"EXPLAIN (COSTS OFF) {statement}", params)]
    nodes = [line.strip().removeprefix("->").strip() for line in lines if ":" not in line]
    return " < ".join(nodes)


@dataclass
class Limits:
    copy: Rate = field(default_factory=lambda: Rate(0, 0.0))
    copy_bytes: int = 0
    fetch: Rate = field(default_factory=lambda: Rate(0, 0.0))
    writers: dict[str, Rate] = field(default_factory=dict)
    plans: tuple[str, str, str] = ("", "", "")  # the cursor's, the COPY's as run and as planned


def copy_limit(ctx: Context, data: Dataset, limits: Limits) -> None:
    """`COPY (the export's query) TO STDOUT` read into nothing: the rows/s PostgreSQL hands
    out at all, by the plan the export's cursor gets."""
    query, params = the_query(data)
    statement = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", query)
    with psycopg.connect(data.url) as conn:
        cursor_plan = plan_of(conn, f"DECLARE bench CURSOR FOR {statement}", params)
        planned = plan_of(conn, statement, params)
        if planned != cursor_plan:
            # A cursor is planned for its first rows (index scans in order), a COPY for all of
            # them (it may sort a sequential scan): the export cannot take the COPY's plan.
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET enable_sort = off")
        limits.plans = (cursor_plan, plan_of(conn, statement, params), planned)
        cursor, lines, size = psycopg.ClientCursor(conn), 0, 0
        meter = tree_meter(ctx.servers)
        before = meter.sample()
        started = time.perf_counter()
        with cursor.copy(f"COPY ({statement}) TO STDOUT", params) as copy:
            for chunk in copy:
                data_bytes = bytes(chunk)
                lines += data_bytes.count(b"\n")
                size += len(data_bytes)
        seconds, cpu = time.perf_counter() - started, cpu_between(before, meter.sample())
        limits.copy = Rate(lines, seconds, cpu)
        limits.copy_bytes = size


async def fetch_sample(data: Dataset, limit: int) -> tuple[list[tuple[Any, ...]], Rate]:
    """The first `limit` rows as the export reads them: SQLAlchemy's stream over a server-side
    cursor, EXPORT_BATCH at a time, each row made a tuple."""
    query, params = the_query(data)
    engine, rows = async_engine(data.url), list[tuple[Any, ...]]()
    statement = text(f"{query} LIMIT :bench_limit").execution_options(yield_per=EXPORT_BATCH)
    try:
        async with engine.connect() as connection:
            started = time.perf_counter()
            result = await connection.stream(statement, {**params, "bench_limit": limit})
            async for part in result.partitions(EXPORT_BATCH):
                rows.extend(tuple(row) for row in part)
            seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    return rows, Rate(len(rows), seconds)


def writer_limit(rows: list[tuple[Any, ...]], fmt: ExportFormat) -> Rate:
    """The format's writer alone on rows already fetched, EXPORT_BATCH at a time."""
    sink = io.BytesIO()
    started = time.perf_counter()
    writer = open_writer(fmt, sink)
    for first in range(0, len(rows), EXPORT_BATCH):
        writer.write(rows[first : first + EXPORT_BATCH])
    writer.close()
    return Rate(len(rows), time.perf_counter() - started)


def measure_limits(ctx: Context, data: Dataset, formats: list[ExportFormat]) -> Limits:
    limits = Limits()
    copy_limit(ctx, data, limits)
    sample, limits.fetch = asyncio.run(fetch_sample(data, min(data.rows, ctx.args.sample_rows)))
    limits.writers = {fmt.value: writer_limit(sample, fmt) for fmt in formats}
    return limits
