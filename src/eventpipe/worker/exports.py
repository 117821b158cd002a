"""The export job: archive rows through a server-side cursor into the export store.

Memory stays that of one batch whatever the row count: the cursor hands rows over
`export_batch_rows` at a time and the writer turns each batch into bytes before the next.
A retried attempt rewrites its own partial file from the start and publishes it with one
atomic step, so a reader sees no file or the whole file, never a torn one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from eventpipe.domain.exports import event_filter, file_key, set_export
from eventpipe.domain.search import export_query
from eventpipe.domain.tables import Export, ExportState
from eventpipe.exports.formats import ExportFormat, open_writer
from eventpipe.worker.resources import WorkerResources

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0
EXACT_BELOW = 1_000_000


async def estimate_rows(resources: WorkerResources, query: str, params: dict[str, Any]) -> int:
    """The planner's row estimate, free where a count(*) reads every row a second time; below
    EXACT_BELOW (or before statistics are gathered, which looks small) an exact count."""
    async with resources.engine.connect() as connection:
        plan = await connection.scalar(text(f"EXPLAIN (FORMAT JSON) {query}"), params)
        planned = int(plan[0]["Plan"]["Plan Rows"])
        if planned >= EXACT_BELOW:
            return planned
        counted = await connection.scalar(
            text(f"SELECT count(*) FROM ({query}) AS matching"),  # noqa: S608 - ours
            params,
        )
    return int(counted or 0)


async def write_export(
    resources: WorkerResources, export: Export, query: str, params: dict[str, Any]
) -> tuple[int, int]:
    """Stream the rows of `query` into the export's partial file and publish it: (rows, bytes)."""
    batch = resources.settings.export_batch_rows
    key, written, reported = file_key(export), 0, time.monotonic()
    with resources.store.open_partial(key) as sink:
        writer = open_writer(ExportFormat(export.format), sink)
        async with resources.engine.connect() as connection:
            result = await connection.stream(text(query).execution_options(yield_per=batch), params)
            async for rows in result.partitions(batch):
                # Encoding is CPU work: off the event loop, which must keep the heartbeat going.
                await asyncio.to_thread(writer.write, [tuple(row) for row in rows])
                written += len(rows)
                if time.monotonic() - reported >= PROGRESS_EVERY_S:
                    await set_export_in(resources, export.id, rows_written=written)
                    reported = time.monotonic()
        await asyncio.to_thread(writer.close)
    size = await asyncio.to_thread(resources.store.publish, key)
    return written, size


async def set_export_in(resources: WorkerResources, export_id: uuid.UUID, **values: Any) -> None:
    async with resources.sessions() as session:
        await set_export(session, export_id, **values)


async def run_export(resources: WorkerResources, export_id: uuid.UUID, attempt: int) -> str:
    async with resources.sessions() as session:
        export = await session.get(Export, export_id)
    if export is None or export.state in {ExportState.SUCCEEDED, ExportState.EXPIRED}:
        # Deleted with its project, or finished by an attempt whose end was not recorded.
        return "nothing to do"
    query, params = export_query(export.project_id, event_filter(export.inputs))
    try:
        await set_export_in(
            resources, export_id, state=ExportState.RUNNING.value, attempts=attempt,
            started_at=datetime.now(UTC), rows_written=0,
            rows_estimated=await estimate_rows(resources, query, params),
        )  # fmt: skip
    except IntegrityError:
        # A failed export retried by hand after a new one of the same inputs was asked for.
        return "superseded by a newer export of the same inputs"
    rows, size = await write_export(resources, export, query, params)
    await set_export_in(
        resources, export_id, state=ExportState.SUCCEEDED.value, rows_written=rows,
        size_bytes=size, error=None, finished_at=datetime.now(UTC),
    )  # fmt: skip
    log.info("export %s: %d rows, %d bytes", export_id, rows, size)
    return f"{rows} rows"
