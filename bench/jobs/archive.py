"""Exports' archives: a fresh database of `rows` events of one project, and its row sizes."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bench.jobs.context import Context, new_database
from bench.queries.generator import Span, fill_day, open_generator
from eventpipe.auth.admin import create_user_sync
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.domain.projects import create_project
from eventpipe.domain.search import COLUMNS
from eventpipe.migrations.runner import upgrade

USERS = 100_000


@dataclass(frozen=True)
class Dataset:
    name: str
    url: str
    rows: int
    project_id: uuid.UUID
    user_id: uuid.UUID
    row_bytes: float  # in PostgreSQL (pg_column_size)
    json_bytes: float  # the exported columns as one JSON object
    document_bytes: float  # properties, traits and context as JSON text


def make_owner(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A user and a project of theirs: the export's owner and its rows' project."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    settings = Settings(database_url=database_url)
    user_id = create_user_sync(settings, email=email, password=secrets.token_urlsafe(16))

    async def project() -> uuid.UUID:
        engine = async_engine(database_url)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                made = await create_project(session, owner_id=user_id, name="bench exports")
                await session.commit()
                return made.id
        finally:
            await engine.dispose()

    return user_id, asyncio.run(project())


_EXPORTED = ", ".join(f'e."{c}"' for c in COLUMNS)
# A sample of rows: in PostgreSQL, as one JSON object of the exported columns, and the JSON
# documents alone.
_ROW_SIZES = (
    "SELECT avg(pg_column_size(e.*)), avg(octet_length(row_to_json(x)::text)), "  # noqa: S608 - fixed names
    "avg(octet_length(coalesce(e.properties::text, '')) "
    "+ octet_length(coalesce(e.traits::text, '')) + octet_length(coalesce(e.context::text, ''))) "
    f"FROM (SELECT * FROM events LIMIT 20000) e CROSS JOIN LATERAL (SELECT {_EXPORTED}) x"
)


def fill_dataset(ctx: Context, rows: int) -> Dataset:
    """`rows` events of one project on yesterday's partition, made as bench.queries makes its
    own (track, page and identify events, a context object each), indexed and vacuumed."""
    name = f"bench_jobs_export_{rows}"
    url = new_database(ctx, name)
    upgrade(url)
    user_id, project_id = make_owner(url)
    day = datetime.now(UTC).date() - timedelta(days=1)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    span = Span(start, start + timedelta(days=1), rows, str(project_id), None, 0)
    with open_generator(url) as conn:
        fill_day(conn, day, span, USERS)
        # Hint bits and statistics now, not during the first measure that reads the rows.
        conn.execute("VACUUM (ANALYZE) events")
        sizes = conn.execute(_ROW_SIZES).fetchone()
    assert sizes is not None  # noqa: S101 - an aggregate always has its row
    pg, js, docs = (float(v) for v in sizes)
    return Dataset(name, url, rows, project_id, user_id, pg, js, docs)
