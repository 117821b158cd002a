"""The aggregates, counted from the archive: exactly its counts, under the keys of domain/keys.py
and with the expiry the processor's step gives them (counted from the bucket's end)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis

from bench.loadgen import (
    iso_ms,
)
from eventpipe.core.config import Settings
from eventpipe.domain import keys
from eventpipe.domain.events import EventRecord
from eventpipe.processor.sinks import RedisStep


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _rows(
    conn: psycopg.Connection[tuple[Any, ...]], query: str, params: Sequence[Any]
) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name=f"bench_{uuid.uuid4().hex[:8]}") as cursor:
        cursor.itersize = 20_000
        cursor.execute(query, params)
        yield from cursor


# One row per key: PostgreSQL builds each bucket's {name: count} (JSON parsed in C, not Python).
_COUNTS = (
    "SELECT kafka_partition, bucket, json_object_agg(event, n) FROM ("
    'SELECT kafka_partition, date_trunc(%s, "timestamp") AS bucket, event, count(*) AS n '
    'FROM events WHERE project_id = %s AND "timestamp" >= %s GROUP BY 1, 2, 3) c GROUP BY 1, 2'
)
_USERS = (
    "SELECT kafka_partition, date_trunc('hour', \"timestamp\"), array_agg(DISTINCT distinct_id) "
    'FROM events WHERE project_id = %s AND "timestamp" >= %s GROUP BY 2, 1 ORDER BY 2, 1'
)
_TOTALS = "SELECT kafka_partition, event, count(*) FROM events WHERE project_id = %s GROUP BY 1, 2"


class AggregateWriter:
    """Writes one project's aggregates from the archive, buckets from `since` on."""

    def __init__(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        client: redis.Redis,
        project: str,
        now: datetime,
    ) -> None:
        self.conn, self.client, self.project, self.now = conn, client, project, now
        self.pipe = client.pipeline(transaction=False)

    def _flush(self, at_least: int = 0) -> None:
        if len(self.pipe) > at_least:
            self.pipe.execute()

    def counts(self, since: datetime) -> None:
        """Minute counts (those of the last 48 hours), hour counts, day counts (sorted sets)."""
        oldest_minute = max(since, self.now - timedelta(seconds=keys.MINUTE_TTL_S))
        by_minute = self._grouped(keys.MINUTE, oldest_minute)
        for (partition, minute), counts in by_minute.items():
            key = keys.counts_key(
                partition, keys.MINUTE, self.project, keys.stamp(minute, keys.MINUTE)
            )
            self._bucket(key, counts, minute + timedelta(minutes=1), keys.MINUTE_TTL_S)
        by_day: dict[tuple[int, datetime], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (partition, hour), counts in self._grouped(keys.HOUR, since).items():
            key = keys.counts_key(partition, keys.HOUR, self.project, keys.stamp(hour, keys.HOUR))
            self._bucket(key, counts, hour + timedelta(hours=1), keys.LONG_TTL_S)
            day = by_day[partition, hour.replace(hour=0)]
            for name, count in counts.items():
                day[name] += count
        for (partition, day_start), counts in by_day.items():
            key = keys.day_counts_key(partition, self.project, keys.stamp(day_start, keys.DAY))
            self._bucket(key, dict(counts), day_start + timedelta(days=1), keys.LONG_TTL_S)
        self._flush()

    def _grouped(self, unit: str, since: datetime) -> dict[tuple[int, datetime], dict[str, int]]:
        rows = _rows(self.conn, _COUNTS, (unit, self.project, since))
        return {(partition, bucket): counts for partition, bucket, counts in rows}

    def _bucket(self, key: str, counts: dict[str, int], bucket_end: datetime, ttl: int) -> None:
        # As the processor's step keeps them: a sorted set per bucket, its total in `$all`.
        self.pipe.zadd(key, {**counts, keys.ALL: sum(counts.values())})
        self.pipe.expireat(key, _unix(bucket_end) + ttl)
        self._flush(2_000)

    def users(self, since: datetime) -> None:
        """Each hour's and each day's HyperLogLog of users, per partition."""
        days: dict[tuple[int, datetime], set[str]] = defaultdict(set)
        current: datetime | None = None
        for partition, hour, users in _rows(self.conn, _USERS, (self.project, since)):
            day = hour.replace(hour=0)
            if current is not None and day != current:
                self._days(days)
            current = day
            key = keys.users_key(partition, keys.HOUR, self.project, keys.stamp(hour, keys.HOUR))
            self.pipe.pfadd(key, *users)
            self.pipe.expireat(key, _unix(hour + timedelta(hours=1)) + keys.LONG_TTL_S)
            days[partition, day].update(users)
            self._flush(200)
        self._days(days)
        self._flush()

    def _days(self, days: dict[tuple[int, datetime], set[str]]) -> None:
        for (partition, day), users in days.items():
            key = keys.users_key(partition, keys.DAY, self.project, keys.stamp(day, keys.DAY))
            members = list(users)
            for at in range(0, len(members), 5_000):
                self.pipe.pfadd(key, *members[at : at + 5_000])
            self.pipe.expireat(key, _unix(day + timedelta(days=1)) + keys.LONG_TTL_S)
            self._flush(20)
        days.clear()

    def totals(self) -> None:
        """Counts since the start (no expiry), recounted over the whole archive."""
        per_partition: dict[int, dict[str, int]] = defaultdict(dict)
        for partition, name, count in _rows(self.conn, _TOTALS, (self.project,)):
            per_partition[partition][name] = count
        for partition, counts in per_partition.items():
            mapping = {**counts, keys.ALL: sum(counts.values())}
            self.pipe.hset(keys.totals_key(partition, self.project), mapping=mapping)
        self._flush()


def write_aggregates(
    url: str, client: redis.Redis, projects: Sequence[str], since: datetime | None
) -> None:
    """Every aggregate of `projects` for the buckets from the start of `since`'s day on."""
    start = (
        datetime(1970, 1, 1, tzinfo=UTC)
        if since is None
        else since.replace(hour=0, minute=0, second=0, microsecond=0)
    )
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET work_mem = '256MB'")
        for project in projects:
            writer = AggregateWriter(conn, client, project, datetime.now(UTC))
            writer.counts(start)
            writer.users(start)
            writer.totals()
            conn.commit()


_ARCHIVED = (
    'SELECT kafka_partition, message_id, type, event, "timestamp", received_at, day, '
    "user_id, anonymous_id, name FROM events WHERE project_id = %s ORDER BY received_at"
)


def archived_records(url: str, source: str, copy: str) -> dict[int, list[EventRecord]]:
    """The `source` project's archived events by partition, as records of the project `copy`."""
    by_partition: dict[int, list[EventRecord]] = defaultdict(list)
    with psycopg.connect(url) as conn:
        for row in conn.execute(_ARCHIVED, (source,)):
            partition, message_id, kind, name, stamp, received, day, user, anonymous, title = row
            by_partition[partition].append(EventRecord(
                project_id=copy, message_id=message_id, type=kind,
                event=name if kind == "track" else None, name=title, day=day.isoformat(),
                received_at=iso_ms(received.astimezone(UTC)),
                timestamp=iso_ms(stamp.astimezone(UTC)), user_id=user, anonymous_id=anonymous,
            ))  # fmt: skip
    return by_partition


def replay_through_processor(url: str, client: redis.Redis, source: str, copy: str) -> int:
    """The `source` project's archived events, under the project id `copy`, through the
    processor's own planner and Lua step: what the processor would have written for them."""
    by_partition = archived_records(url, source, copy)
    step = RedisStep(client, group="bench-queries", topic=f"check.{copy}",
                     dedupe_ttl_s=Settings().dedupe_window_s)  # fmt: skip
    for partition, records in by_partition.items():
        step.apply(partition, records, -1, len(records))
    return sum(len(records) for records in by_partition.values())
