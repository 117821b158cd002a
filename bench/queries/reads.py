"""The overview's read functions for one project, and the archive's answers to compare them with."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from redis.asyncio import Redis as AsyncRedis

from bench.queries.dataset import PARTITIONS
from eventpipe.domain import aggregates
from eventpipe.domain.timerange import TimeRange


async def archive_counts(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], project: str, start: datetime, end: datetime
) -> dict[str, int]:
    cursor = await conn.execute(
        'SELECT event, count(*) FROM events WHERE project_id = %s AND "timestamp" >= %s '
        'AND "timestamp" < %s GROUP BY 1',
        (project, start, end),
    )
    return dict(await cursor.fetchall())


async def archive_users(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], project: str, window: TimeRange
) -> int:
    cursor = await conn.execute(
        "SELECT count(DISTINCT distinct_id) FROM events "
        'WHERE project_id = %s AND "timestamp" >= %s AND "timestamp" < %s',
        (project, window.start, window.end),
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


def series_of(
    client: AsyncRedis, project: str, window: TimeRange
) -> Awaitable[list[aggregates.Bucket]]:
    return aggregates.series(client, project_id=project, partitions=PARTITIONS, window=window)


def counts_of(
    client: AsyncRedis, project: str, window: TimeRange
) -> Awaitable[aggregates.PeriodCounts]:
    return aggregates.period_counts(
        client, project_id=project, partitions=PARTITIONS, window=window
    )


def users_of(
    client: AsyncRedis, project: str, window: TimeRange
) -> Awaitable[tuple[list[tuple[datetime, int]], int]]:
    return aggregates.users_series(client, project_id=project, partitions=PARTITIONS, window=window)


def totals_of(client: AsyncRedis, project: str) -> Awaitable[dict[str, int]]:
    return aggregates.totals(client, project_id=project, partitions=PARTITIONS)


def summed(buckets: Sequence[aggregates.Bucket]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for bucket in buckets:
        for name, count in bucket.counts.items():
            out[name] += count
    return dict(out)
