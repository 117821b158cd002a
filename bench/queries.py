"""The read path beside its targets: the overview, event searches, the live stream's delay.

`uv run python -m bench.queries` (see docs/performance-queries.md). It starts Redis and PostgreSQL
with eventpipe.local over a state directory of its own that outlives the run, so the dataset (10
million archived events over 30 days and their aggregates) is loaded once and kept: a later run
finds it by its marker row, adds the events of the time since (at the same rate), and measures.
The archive is generated inside PostgreSQL (each daily partition filled alone, indexed in bulk,
attached, then vacuumed); the aggregates are counted from the archive itself, so they hold
exactly its counts. Then it measures, with the read functions of eventpipe.domain in-process and
over HTTP against `eventpipe api`: the overview for every preset range, event searches, and
(Kafka, the api and the processor running, the load paced at half the api's maximum) the delay
from an event's acknowledgement to its line on the live stream. Every process it started is
stopped at the end; the state directory stays.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import multiprocessing
import os
import random
import secrets
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import psycopg
import redis
import uvloop
from psycopg import sql
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bench.ingest import stop_api
from bench.loadgen import (
    TEMPLATES,
    Connection,
    LoadSpec,
    MessageIds,
    Recorder,
    Template,
    iso_ms,
    make_template,
    run_load,
)
from bench.processor import (
    Clock,
    CpuMeter,
    end_offsets,
    make_pairs,
    run_in_tmp,
    seed_offsets,
    start_role,
    wait_ready,
    warm_broker,
)
from eventpipe.api.routes import stats
from eventpipe.auth.admin import create_user_sync
from eventpipe.auth.keys import generate_key_file
from eventpipe.auth.writekeys import create_write_key
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.core.kafka import ensure_topics
from eventpipe.core.redis import redis_client
from eventpipe.domain import aggregates, keys
from eventpipe.domain.events import EventRecord
from eventpipe.domain.projects import create_project, set_member
from eventpipe.domain.search import EventFilter, search_events
from eventpipe.domain.tables import Role
from eventpipe.domain.timerange import PRESETS, TimeRange, preset_range
from eventpipe.local.kafka import start_kafka
from eventpipe.local.postgres import start_postgres
from eventpipe.local.process import free_port
from eventpipe.local.redis import start_redis
from eventpipe.migrations.runner import upgrade
from eventpipe.processor.archive import ensure_partitions, partition_name
from eventpipe.processor.sinks import RedisStep

PARTITIONS = 12
API_WORKERS = 2
TARGET_OVERVIEW_P99_MS = 20.0
TARGET_SEARCH_P95_MS = 200.0
TARGET_LIVE_P99_S = 1.0
# Bump when the generated data changes: a cached dataset of another version is loaded again.
GENERATOR_VERSION = 1
DATABASE = "bench_queries"
PAGE = 50
# `$page` first, `$identify` eighth, 48 track names: ranks of a Zipf-like draw (see _GENERATE).
_TRACK = tuple(f"{verb} {thing}" for verb in ("Viewed", "Clicked", "Added", "Removed",
    "Started", "Completed") for thing in ("Product", "Cart", "Checkout", "Video", "Article",
    "Banner", "Coupon", "Search"))  # fmt: skip
NAMES = ("$page", *_TRACK[:6], "$identify", *_TRACK[6:])
PLANS = ("free", "pro", "team", "enterprise")
SKUS = 50_000  # product ids per plan: 200,000 distinct values of `product_id`
PATHS = ("/", "/pricing", "/docs", "/blog", "/cart", "/shop/shoes", "/shop/books", "/account")
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Version/17.0 Safari/605.1.15",
)
T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]
_QUIET_ENV = {"EVENTPIPE_LOG_LEVEL": "WARNING", "EVENTPIPE_PARTITIONS": str(PARTITIONS)}


# ---------------------------------------------------------------------------------------------
# The dataset: what is generated, and the marker row that lets a later run reuse it.


@dataclass(frozen=True)
class Dataset:
    """The parameters of a generated dataset; a cached one is reused only if they are equal."""

    events: int
    days: int
    users: int = 200_000
    # The second project gets this share of the first one's events, interleaved in time.
    other_share: float = 0.1
    # A third, small project: its aggregates are written by the processor's own step too.
    check_events: int = 2_000
    version: int = GENERATOR_VERSION

    @property
    def rate_per_s(self) -> float:
        """Events per second of both big projects together."""
        return self.events * (1 + self.other_share) / (self.days * 86_400)

    @property
    def other_every(self) -> int:
        """Every n-th generated row is the second project's (0: none)."""
        return round((1 + self.other_share) / self.other_share) if self.other_share else 0


@dataclass
class Marker:
    """What the marker row says: the parameters, the projects, and where the data ends."""

    params: dict[str, Any]
    projects: dict[str, str]
    anchor: datetime
    load_seconds: float

    @property
    def main(self) -> str:
        return self.projects["main"]


_MARKER_TABLE = """
CREATE TABLE IF NOT EXISTS bench_queries_dataset (
    id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    params jsonb NOT NULL,
    projects jsonb NOT NULL,
    anchor timestamptz NOT NULL,
    load_seconds double precision NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
)
"""


def read_marker(url: str) -> Marker | None:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT to_regclass('bench_queries_dataset')").fetchone()
        if found is None or found[0] is None:
            return None
        row = conn.execute(
            "SELECT params, projects, anchor, load_seconds FROM bench_queries_dataset"
        ).fetchone()
    return None if row is None else Marker(row[0], row[1], row[2], row[3])


def write_marker(url: str, marker: Marker) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(_MARKER_TABLE)
        conn.execute(
            "INSERT INTO bench_queries_dataset (params, projects, anchor, load_seconds) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET anchor = EXCLUDED.anchor",
            (
                orjson.dumps(marker.params).decode(),
                orjson.dumps(marker.projects).decode(),
                marker.anchor,
                marker.load_seconds,
            ),
        )


# Documents joined in by id, built once per connection: generating JSON per row (jsonb_build_object
# or a text cast) doubled the fill's time. Track properties: one per plan and product (`plan`,
# `product_id`, `price`); page properties: per plan and path; traits: per plan and seat count.
_DOCUMENTS = """
CREATE TEMP TABLE IF NOT EXISTS bench_docs (id integer PRIMARY KEY, doc jsonb);
CREATE TEMP TABLE IF NOT EXISTS bench_contexts (id integer PRIMARY KEY, doc jsonb);
TRUNCATE bench_docs, bench_contexts;
INSERT INTO bench_docs
  SELECT i, jsonb_build_object('plan', (%(plans)s::text[])[1 + i / %(skus)s],
    'product_id', 'sku-' || lpad(i::text, 7, '0'), 'price', round((random() * 500)::numeric, 2),
    'currency', 'EUR', 'quantity', 1 + i %% 3)
  FROM generate_series(0, 4 * %(skus)s - 1) i;
INSERT INTO bench_docs
  SELECT 4 * %(skus)s + i, jsonb_build_object('path', p, 'url', 'https://shop.example.com' || p,
    'title', 'Shop', 'referrer', 'https://www.example.com/', 'plan', (%(plans)s::text[])[1 + i / 8])
  FROM generate_series(0, 31) i, LATERAL (SELECT (%(paths)s::text[])[1 + i %% 8] AS p) x;
INSERT INTO bench_docs
  SELECT 5 * %(skus)s + i, jsonb_build_object('plan', (%(plans)s::text[])[1 + i / 40],
    'seats', 1 + i %% 40, 'company', 'Company ' || i)
  FROM generate_series(0, 159) i;
INSERT INTO bench_contexts
  SELECT i, jsonb_build_object('library', jsonb_build_object('name', 'analytics.js',
    'version', '5.2.0'), 'page', jsonb_build_object('path', p, 'url',
    'https://shop.example.com' || p, 'referrer', 'https://www.example.com/'),
    'userAgent', (%(agents)s::text[])[1 + (i / 8) %% 4], 'ip', '203.0.113.' || (1 + i / 32),
    'locale', 'en-US', 'timezone', 'Europe/Paris')
  FROM generate_series(0, 8127) i, LATERAL (SELECT (%(paths)s::text[])[1 + i %% 8] AS p) x;
ANALYZE bench_docs; ANALYZE bench_contexts;
"""

# `rows` events evenly spread over [start, start + rows * step), in time order (as the processor
# appends them). Users: floor(users * r^2), so a few are very active; one in five is anonymous
# only. Names: rank floor(exp(r * ln(51))), a Zipf-like law (rank 1: 18 %, rank 50: 0.5 %). The
# Kafka partition is a hash of project and user, as the api's key puts one user in one partition.
_GENERATE = """
INSERT INTO {table} (project_id, day, message_id, type, event, distinct_id, user_id,
    anonymous_id, "timestamp", original_timestamp, sent_at, received_at, name, properties,
    traits, context, version, kafka_partition, kafka_offset)
SELECT r.project_id, (r.ts AT TIME ZONE 'UTC')::date, gen_random_uuid()::text, r.type, r.event,
    r.distinct_id, CASE WHEN r.anonymous THEN NULL ELSE r.distinct_id END,
    CASE WHEN r.anonymous THEN r.distinct_id END, r.ts, r.ts - interval '40 ms',
    r.ts + interval '150 ms', r.ts + interval '190 ms', CASE WHEN r.type = 'page' THEN 'Shop' END,
    p.doc, t.doc, c.doc, 1, mod(abs(hashtext(r.project_id::text || ':' || r.distinct_id)),
    %(partitions)s), %(offset)s + r.g
FROM (
  SELECT s.*, mod(s.u, 5) = 0 AS anonymous,
    CASE WHEN mod(s.u, 5) = 0 THEN 'anon-' ELSE 'user-' END || lpad(s.u::text, 6, '0')
      AS distinct_id,
    CASE s.event WHEN '$page' THEN 'page' WHEN '$identify' THEN 'identify' ELSE 'track' END
      AS type,
    CASE s.event WHEN '$identify' THEN NULL
      WHEN '$page' THEN 4 * %(skus)s + s.plan * 8 + s.path
      ELSE s.plan * %(skus)s + floor(random() * %(skus)s)::int END AS prop_id,
    CASE s.event WHEN '$identify' THEN 5 * %(skus)s + s.plan * 40 + mod(s.u, 40) END AS trait_id,
    (mod(s.u, 254) * 4 + mod(s.u, 4)) * 8 + s.path AS context_id
  FROM (
    SELECT g, u, ts, project_id, event,
      CASE WHEN mod(u * 7919, 1000) < 600 THEN 0 WHEN mod(u * 7919, 1000) < 900 THEN 1
        WHEN mod(u * 7919, 1000) < 999 THEN 2 ELSE 3 END AS plan,
      mod(u + g, 8) AS path
    FROM (
      SELECT g, floor(%(users)s * power(random(), 2))::int AS u,
        -- The step is rounded to microseconds: kept short of the span's end (its day's bound).
        LEAST(%(start)s::timestamptz + (g - 1 + random()) * %(step)s::interval,
              %(end)s::timestamptz - interval '1 millisecond') AS ts,
        CASE WHEN %(every)s > 0 AND mod(g, %(every)s) = 0 THEN %(other)s::uuid
          ELSE %(project)s::uuid END AS project_id,
        (%(names)s::text[])[floor(exp(random() * ln(%(ranks)s + 1)))::int] AS event
      FROM generate_series(1, {rows}) g
    ) q
  ) s
) r
LEFT JOIN bench_docs p ON p.id = r.prop_id
LEFT JOIN bench_docs t ON t.id = r.trait_id
JOIN bench_contexts c ON c.id = r.context_id
ORDER BY r.ts
"""


def open_generator(url: str) -> Conn:
    """A connection ready to generate: its documents built, memory for the sort and the joins."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET work_mem = '512MB'")
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("SET synchronous_commit = off")  # a crash means loading again, nothing more
    params = {"plans": list(PLANS), "skus": SKUS, "paths": list(PATHS), "agents": list(AGENTS)}
    with conn.cursor() as cursor:
        for statement in _DOCUMENTS.split(";\n"):
            if statement.strip():
                cursor.execute(statement, params)
    return conn


@dataclass(frozen=True)
class Span:
    """Generated rows for one stretch of time, and the projects they belong to."""

    start: datetime
    end: datetime
    rows: int
    project: str
    other: str | None
    other_every: int
    offset: int = 0


def generate(conn: Conn, table: str, span: Span, users: int) -> None:
    if span.rows <= 0:
        return
    query = sql.SQL(_GENERATE).format(table=sql.Identifier(table), rows=sql.Literal(span.rows))
    conn.execute(
        query,
        {
            "partitions": PARTITIONS,
            "offset": span.offset,
            "skus": SKUS,
            "users": users,
            "start": span.start,
            "end": span.end,
            "step": (span.end - span.start) / span.rows,
            "every": span.other_every if span.other else 0,
            "other": span.other or span.project,
            "project": span.project,
            "names": list(NAMES),
            "ranks": len(NAMES),
        },
    )


def parent_indexes(conn: Conn) -> list[tuple[str, bool, bool]]:
    """Each index of `events` as (what follows USING, unique, primary key): from the catalog, so
    the indexes a later migration adds are built too."""
    rows = conn.execute(
        "SELECT pg_get_indexdef(indexrelid), indisunique, indisprimary FROM pg_index "
        "WHERE indrelid = 'events'::regclass ORDER BY indexrelid"
    ).fetchall()
    return [
        (definition.split(" USING ", 1)[1], unique, primary) for definition, unique, primary in rows
    ]


def fill_day(conn: Conn, day: date, span: Span, users: int) -> None:
    """One daily partition: created alone, filled in time order, indexed in bulk (several times
    faster than maintaining the indexes row by row), then attached: ATTACH adopts the indexes
    that match the parent's, so it only takes its lock on `events` for a moment."""
    name = partition_name(day)
    table = sql.Identifier(name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE events INCLUDING DEFAULTS)").format(table))
    generate(conn, name, span, users)
    for n, (using, unique, primary) in enumerate(parent_indexes(conn)):
        index = sql.Identifier(f"{name}_ix{n}")
        create = sql.SQL("CREATE UNIQUE INDEX" if unique else "CREATE INDEX")
        conn.execute(sql.SQL("{} {} ON {} USING ").format(create, index, table) + sql.SQL(using))
        if primary:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD PRIMARY KEY USING INDEX {}").format(table, index)
            )
    attach = "ALTER TABLE events ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
    bounds = (sql.Literal(day), sql.Literal(day + timedelta(days=1)))
    conn.execute(sql.SQL(attach).format(table, *bounds))


def in_parallel(items: Sequence[T], connections: int, connect: Callable[[], Conn],
                work: Callable[[Conn, T], object]) -> None:  # fmt: skip
    """`work` on every item, from `connections` threads with a connection each."""
    pending = list(reversed(items))
    lock = threading.Lock()

    def worker() -> None:
        with connect() as conn:
            while True:
                with lock:
                    if not pending:
                        return
                    item = pending.pop()
                work(conn, item)

    with ThreadPoolExecutor(connections) as pool:
        for done in [pool.submit(worker) for _ in range(connections)]:
            done.result()


def day_spans(dataset: Dataset, projects: dict[str, str], start: datetime,
              end: datetime) -> list[tuple[date, Span]]:  # fmt: skip
    """[start, end) cut at midnights (UTC), each piece with its share of the rows."""
    length = end - start
    total = round(
        dataset.events * (1 + dataset.other_share) * length / timedelta(days=dataset.days)
    )
    spans, moment, made = [], start, 0
    while moment < end:
        day = moment.date()
        piece_end = min(end, datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC))
        rows = round(total * (piece_end - start) / length) - made
        span = Span(moment, piece_end, rows, projects["main"], projects["other"],
                    dataset.other_every, offset=made)  # fmt: skip
        spans.append((day, span))
        made, moment = made + rows, piece_end
    return spans


# ---------------------------------------------------------------------------------------------
# The aggregates, counted from the archive: exactly its counts, under the keys of domain/keys.py
# and with the expiry the processor's step gives them (counted from the bucket's end).


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


def replay_through_processor(url: str, client: redis.Redis, source: str, copy: str) -> int:
    """The `source` project's archived events, under the project id `copy`, through the
    processor's own planner and Lua step: what the processor would have written for them."""
    query = (
        'SELECT kafka_partition, message_id, type, event, "timestamp", received_at, day, '
        "user_id, anonymous_id, name FROM events WHERE project_id = %s ORDER BY received_at"
    )
    by_partition: dict[int, list[EventRecord]] = defaultdict(list)
    with psycopg.connect(url) as conn:
        for row in conn.execute(query, (source,)):
            partition, message_id, kind, name, stamp, received, day, user, anonymous, title = row
            by_partition[partition].append(
                EventRecord(
                    project_id=copy,
                    message_id=message_id,
                    type=kind,
                    event=name if kind == "track" else None,
                    name=title,
                    day=day.isoformat(),
                    received_at=iso_ms(received.astimezone(UTC)),
                    timestamp=iso_ms(stamp.astimezone(UTC)),
                    user_id=user,
                    anonymous_id=anonymous,
                )
            )
    step = RedisStep(
        client,
        group="bench-queries",
        topic=f"check.{copy}",
        dedupe_ttl_s=Settings().dedupe_window_s,
    )
    for partition, records in by_partition.items():
        step.apply(partition, records, -1, len(records))
    return sum(len(records) for records in by_partition.values())


# ---------------------------------------------------------------------------------------------
# The servers (kept between runs), the database, loading and topping up the dataset.


@dataclass
class Store:
    """The servers over the kept state directory, and this run's clients of them."""

    cluster_url: str  # the server's own `eventpipe` database: a base for the others
    redis_url: str
    pids: dict[str, int | None]
    client: redis.Redis
    url: str = ""

    def database(self, name: str) -> str:
        return f"{self.cluster_url.rpartition('/')[0]}/{name}"


@contextlib.contextmanager
def kept_servers(state_dir: Path) -> Iterator[Store]:
    """Redis and PostgreSQL over `state_dir` (their data stays there); Kafka only for `live`."""
    with contextlib.ExitStack() as stack:
        redis_url, redis_process = start_redis(state_dir)
        stack.callback(redis_process.stop, 60)
        cluster_url, postgres = start_postgres(state_dir)
        stack.callback(postgres.stop, 60)
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        pids: dict[str, int | None] = {"redis": redis_process.pid, "postgres": postgres.pid}
        yield Store(cluster_url, redis_url, pids, client)


def recreate_database(store: Store, name: str) -> str:
    url = store.database(name)
    with psycopg.connect(store.database("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade(url)
    return url


def existing_database(store: Store, name: str) -> str | None:
    with psycopg.connect(store.database("postgres"), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if found is None:
        return None
    url = store.database(name)
    upgrade(url)  # a migration added since the load applies to the kept data
    return url


def create_projects(url: str) -> dict[str, str]:
    """The dataset's projects, owned by a user of their own; `check_copy` exists in Redis only."""
    owner = create_user_sync(
        Settings(database_url=url),
        email=f"loader-{uuid.uuid4().hex[:8]}@example.com",
        password=secrets.token_urlsafe(16),
    )

    async def make() -> dict[str, str]:
        engine = async_engine(url)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                made = {}
                for role in ("main", "other", "check"):
                    project = await create_project(session, owner_id=owner, name=f"bench {role}")
                    made[role] = str(project.id)
                await session.commit()
                return made
        finally:
            await engine.dispose()

    return {**asyncio.run(make()), "check_copy": str(uuid.uuid4())}


def _partitions_around(url: str, today: date) -> None:
    settings = Settings()
    ensure_partitions(
        url,
        today=today,
        ahead=settings.archive_days_ahead,
        retention_days=settings.archive_retention_days,
    )


def load_dataset(store: Store, dataset: Dataset, clock: Clock, connections: int) -> Marker:
    """A new database and an empty Redis, then the archive, its aggregates and the marker."""
    started = time.perf_counter()
    url = store.url = recreate_database(store, DATABASE)
    store.client.flushdb()
    projects = create_projects(url)
    anchor = datetime.now(UTC).replace(microsecond=0)
    start = anchor - timedelta(days=dataset.days)
    spans = day_spans(dataset, projects, start, anchor)
    rows = sum(span.rows for _, span in spans)
    clock.say(f"generating {rows:,} events in {len(spans)} daily partitions, {connections} at once")
    in_parallel(spans, connections, lambda: open_generator(url),
                lambda conn, item: fill_day(conn, item[0], item[1], dataset.users))  # fmt: skip
    with open_generator(url) as conn:
        check = Span(start, anchor, dataset.check_events, projects["check"], None, 0)
        generate(conn, "events", check, dataset.users)
    filled = time.perf_counter() - started
    clock.say(f"archive filled and indexed in {filled:.0f} s; VACUUM (ANALYZE) of each day")
    # As autovacuum would have done to past days: visibility map, hint bits, statistics. Only
    # once every row is in (a running insert keeps the rows after it from all-visible), and not
    # the parent: autovacuum never analyzes a partitioned table.
    vacuum = sql.SQL("VACUUM (ANALYZE) {}")
    in_parallel([partition_name(day) for day, _ in spans], connections,
                lambda: psycopg.connect(url, autocommit=True),
                lambda conn, name: conn.execute(vacuum.format(sql.Identifier(name))))  # fmt: skip
    _partitions_around(url, anchor.date())
    archived = time.perf_counter() - started
    clock.say(f"archive loaded in {archived:.0f} s ({rows / archived:,.0f} events/s); aggregates")
    main, other, check_project = projects["main"], projects["other"], projects["check"]
    write_aggregates(url, store.client, [main, other, check_project], None)
    replayed = replay_through_processor(url, store.client, check_project, projects["check_copy"])
    # The append-only file, compacted: a quick start next time (redis-py leaves this untyped);
    # Redis may be rewriting it already, on its own.
    with contextlib.suppress(redis.ResponseError):
        store.client.execute_command("BGREWRITEAOF")  # type: ignore[no-untyped-call]
    marker = Marker(asdict(dataset), projects, anchor, time.perf_counter() - started)
    write_marker(url, marker)
    clock.say(f"aggregates written in {marker.load_seconds - archived:.0f} s ({replayed:,} check "
              f"events through the processor's step too); dataset loaded in "
              f"{marker.load_seconds:.0f} s")  # fmt: skip
    return marker


def top_up(store: Store, marker: Marker, dataset: Dataset, clock: Clock) -> Marker:
    """The events of the time since the data's end, at the dataset's rate, and their aggregates:
    the newest buckets (30m, today) hold events as they would on a live system."""
    now = datetime.now(UTC).replace(microsecond=0)
    if now - marker.anchor < timedelta(minutes=1):
        return marker
    _partitions_around(store.url, now.date())
    rows = round(dataset.rate_per_s * (now - marker.anchor).total_seconds())
    projects = marker.projects
    span = Span(marker.anchor, now, rows, projects["main"], projects["other"], dataset.other_every)
    with open_generator(store.url) as conn:
        generate(conn, "events", span, dataset.users)
    write_aggregates(store.url, store.client, [projects["main"], projects["other"]], marker.anchor)
    clock.say(f"topped up: {rows:,} events from {marker.anchor:%Y-%m-%d %H:%M} to {now:%H:%M} UTC")
    marker.anchor = now
    write_marker(store.url, marker)
    return marker


def stale(marker: Marker | None, dataset: Dataset) -> str | None:
    """Why the kept dataset cannot serve (None: it can)."""
    if marker is None:
        return "no dataset kept yet"
    if marker.params != asdict(dataset):
        return f"the kept dataset has other parameters ({marker.params})"
    age = datetime.now(UTC) - marker.anchor
    if age > timedelta(days=dataset.days) / 10:
        return f"the kept dataset ends {age.total_seconds() / 86_400:.1f} days ago"
    return None


def prepare_dataset(
    store: Store, dataset: Dataset, args: argparse.Namespace, clock: Clock
) -> Marker:
    found = existing_database(store, DATABASE)
    marker = read_marker(found) if found else None
    reason = "--reload" if args.reload else stale(marker, dataset)
    if marker is None or reason is not None:
        clock.say(f"loading the dataset: {reason}")
        marker = load_dataset(store, dataset, clock, args.load_connections)
    else:
        assert found is not None  # noqa: S101 - a marker was read from it
        store.url = found
        clock.say(f"dataset kept from an earlier run (loaded in {marker.load_seconds:.0f} s)")
    while datetime.now(UTC) - marker.anchor > timedelta(minutes=1):
        marker = top_up(store, marker, dataset, clock)
    if not aggregates_present(store, marker):
        clock.say("Redis lacks the dataset's aggregates (a lost state?): writing them again")
        write_aggregates(
            store.url, store.client, [marker.projects[r] for r in ("main", "other", "check")], None
        )
    return marker


def aggregates_present(store: Store, marker: Marker) -> bool:
    with psycopg.connect(store.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE project_id = %s", (marker.main,)
        ).fetchone()
    with store.client.pipeline(transaction=False) as pipe:
        for partition in range(PARTITIONS):
            pipe.hget(keys.totals_key(partition, marker.main), keys.ALL)
        counted = sum(int(found or 0) for found in pipe.execute())
    return row is not None and counted == row[0]


def describe_store(store: Store, marker: Marker) -> str:
    with psycopg.connect(store.url) as conn:
        version, buffers, size, days = conn.execute(
            "SELECT current_setting('server_version'), current_setting('shared_buffers'), "
            "pg_size_pretty(pg_database_size(current_database())), "
            "(SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass)"
        ).fetchone() or ("?", "?", "?", 0)
        rows: dict[str, int] = dict(
            conn.execute("SELECT project_id::text, count(*) FROM events GROUP BY 1")
        )
    counts = ", ".join(
        f"{role} {rows.get(marker.projects[role], 0):,}" for role in ("main", "other", "check")
    )
    memory = self_info(store.client, "memory").get("used_memory_human", "?")
    return (
        f"events archived: {counts}, up to {marker.anchor:%Y-%m-%d %H:%M} UTC\n"
        f"  PostgreSQL {version} (shared_buffers {buffers}): database {size}, {days} partitions of "
        f"events; Redis: {store.client.dbsize():,} keys, {memory}"
    )


def self_info(client: redis.Redis, section: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.info(section)  # type: ignore[assignment]
    return answer


# ---------------------------------------------------------------------------------------------
# Checks: the read functions against the archive, and the loader's keys against the processor's.


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


_FOREVER = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


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


async def check_against_archive(client: AsyncRedis, url: str, project: str, now: datetime) -> bool:
    """totals, series and users_series of every preset beside what the archive holds."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        everything = await archive_counts(conn, project, *_FOREVER)
        totals = await totals_of(client, project)
        ok = totals == {**everything, keys.ALL: sum(everything.values())}
        print(
            f"  totals() = the archive's counts per name ({len(everything)} names, "
            f"{sum(everything.values()):,} events){'':<12}{_verdict(ok)}"
        )
        for preset in PRESETS:
            ok = await check_window(client, conn, project, preset_range(preset, now), preset) and ok
    return ok


async def check_window(
    client: AsyncRedis,
    conn: psycopg.AsyncConnection[tuple[Any, ...]],
    project: str,
    window: TimeRange,
    label: str,
) -> bool:
    got = summed(await series_of(client, project, window))
    expected = await archive_counts(conn, project, window.start, window.end)
    same = {k: v for k, v in got.items() if v} == expected
    _, users = await users_of(client, project, window)
    # A minute range's users are those of the hours it touches (aggregates._users_resolution).
    wide = window.coarsened(keys.DAY if window.resolution == keys.DAY else keys.HOUR)
    distinct = await archive_users(conn, project, wide)
    error = users / distinct - 1 if distinct else 0.0
    close = abs(error) < 0.02
    own = ""
    if wide != window:  # say how far that is from the users of the range itself
        own = f"; in the range itself: {await archive_users(conn, project, window):,}"
    print(
        f"  {label:<6} series() summed = the archive's {sum(expected.values()):>12,} events  "
        f"{_verdict(same)};  users {users:>9,} vs count(DISTINCT) {distinct:>9,} "
        f"({error:+.2%}, HyperLogLog)  {_verdict(close)}{own}"
    )
    return same and close


async def answers_of(client: AsyncRedis, project: str, now: datetime) -> dict[str, object]:
    """Every answer the overview's functions give for `project`, by a label."""
    out: dict[str, object] = {"totals": await totals_of(client, project)}
    for preset in PRESETS:
        window = preset_range(preset, now)
        for label, each in ((preset, window), (f"{preset} previous", window.previous())):
            out[f"series {label}"] = await series_of(client, project, each)
            out[f"users {label}"] = await users_of(client, project, each)
    return out


async def check_loader(client: AsyncRedis, marker: Marker, now: datetime) -> bool:
    """The loader's keys answer as the processor's step's do (the same events written both ways)."""
    ours = await answers_of(client, marker.projects["check"], now)
    theirs = await answers_of(client, marker.projects["check_copy"], now)
    differ = [label for label in ours if ours[label] != theirs[label]]
    print(
        f"  the loader's aggregates = the processor's step's (plan_step + RedisStep) for the same "
        f"{marker.params['check_events']:,} events, {len(ours)} answers  "
        f"{_verdict(not differ)}{'  differ: ' + ', '.join(differ) if differ else ''}"
    )
    return not differ


# ---------------------------------------------------------------------------------------------
# Timing calls, and printing figures beside their targets.


@dataclass
class Timing:
    label: str
    ms: list[float]
    cpu: dict[str, float]
    seconds: float
    # (quantile, limit in ms) of the target this figure is held to, if any.
    target: tuple[float, float] | None = None
    failure: str = ""

    def q(self, fraction: float) -> float:
        if not self.ms:
            return float("nan")
        return self.ms[min(len(self.ms) - 1, round(fraction * (len(self.ms) - 1)))]

    @property
    def ok(self) -> bool:
        return self.target is None or (not self.failure and self.q(self.target[0]) < self.target[1])


Call = Callable[[int], Awaitable[object]]


async def time_calls(
    label: str, call: Call, calls: int, meter: CpuMeter, target: tuple[float, float] | None = None
) -> Timing:
    """`calls` calls one at a time after a tenth as many uncounted; CPU of each process."""
    for n in range(max(5, calls // 10)):
        await call(n)
    samples = []
    meter.start()
    started = time.perf_counter()
    for n in range(calls):
        at = time.perf_counter()
        await call(n)
        samples.append((time.perf_counter() - at) * 1000)
    seconds = time.perf_counter() - started
    return Timing(label, sorted(samples), meter.stop(), seconds, target)


_CPU_NAMES = ("bench", "api", "redis", "postgres")


def print_header(title: str) -> None:
    print(
        f"\n{title}\n  {'':<46}{'p50':>8}{'p95':>8}{'p99':>8}   CPU us per call: "
        f"{'bench':>6}{'api':>7}{'redis':>7}{'pg':>7}  other cores"
    )


def print_timing(timing: Timing) -> None:
    if timing.failure:
        print(f"  {timing.label:<46}not measured: {timing.failure}  MISSED")
        return
    calls = len(timing.ms)
    cells = "".join(
        f"{timing.cpu[name] / calls * 1e6:>7.0f}" if name in timing.cpu else f"{'-':>7}"
        for name in _CPU_NAMES
    )
    other = timing.cpu.get("other", 0.0) / timing.seconds if timing.seconds else 0.0
    line = (
        f"  {timing.label:<46}{timing.q(0.5):>8.2f}{timing.q(0.95):>8.2f}{timing.q(0.99):>8.2f}"
        f"   {'':<16}{cells}  {other:>5.2f}"
    )
    if timing.target is not None:
        fraction, limit = timing.target
        line += f"   target p{fraction * 100:.0f} < {limit:g} ms  {_verdict(timing.ok)}"
    print(line)


# ---------------------------------------------------------------------------------------------
# The overview, in-process: its five reads of one range, each alone, then together.

Meters = Callable[[], CpuMeter]
OVERVIEW = "overview, as the route reads it"


def overview_calls(client: AsyncRedis, project: str, preset: str, now: datetime) -> dict[str, Call]:
    window = preset_range(preset, now)
    previous = window.previous()

    async def as_the_route(_n: int) -> object:
        # api/routes/stats.py `overview` with compare=true: its reads at once, the previous
        # period from the route's one-minute cache.
        (_, by_name), *_ = await asyncio.gather(
            stats.period_overview(client, project, PARTITIONS, window),
            stats.previous_overview(client, project, PARTITIONS, window),
            totals_of(client, project),
        )  # fmt: skip
        return aggregates.top_events(by_name, 10)

    async def one_by_one(_n: int) -> object:
        await counts_of(client, project, window)
        await users_of(client, project, window)
        await counts_of(client, project, previous)
        await users_of(client, project, previous)
        return await totals_of(client, project)

    return {
        "period_counts": lambda _n: counts_of(client, project, window),
        "period_counts, previous period": lambda _n: counts_of(client, project, previous),
        "series (per name; /stats/counts)": lambda _n: series_of(client, project, window),
        "users_series": lambda _n: users_of(client, project, window),
        "users_series, previous period": lambda _n: users_of(client, project, previous),
        "totals": lambda _n: totals_of(client, project),
        "the five one after the other": one_by_one,
        OVERVIEW: as_the_route,
    }


async def measure_overview(
    client: AsyncRedis, project: str, calls: int, meters: Meters
) -> list[Timing]:
    print_header(
        f"overview, in-process: the functions of domain/aggregates.py on redis.asyncio "
        f"(uvloop), {calls} calls one at a time (ms)"
    )
    timings = []
    for preset in PRESETS:
        for label, call in overview_calls(client, project, preset, datetime.now(UTC)).items():
            target = (0.99, TARGET_OVERVIEW_P99_MS) if label == OVERVIEW else None
            timing = await time_calls(f"{preset:<6}{label}", call, calls, meters(), target)
            print_timing(timing)
            timings.append(timing)
    return timings


# ---------------------------------------------------------------------------------------------
# Event search, in-process, and the plans of its queries.


@dataclass(frozen=True)
class SearchCase:
    """A search, and the variants it cycles through call after call: (filters, cursor)."""

    label: str
    variants: Sequence[tuple[EventFilter, str | None]]


def _property(path: str, value: str) -> EventFilter:
    return EventFilter(property_path=(path,), property_value=value)


async def page_cursors(
    engine: AsyncEngine, project: str, filters: EventFilter, pages: int
) -> list[str]:
    """The cursors of pages 2 to `pages`, as a person paging on would get them."""
    cursors: list[str] = []
    cursor: str | None = None
    async with AsyncSession(engine) as session:
        for _ in range(pages - 1):
            _, cursor = await search_events(
                session, project_id=uuid.UUID(project), filters=filters, limit=PAGE, cursor=cursor
            )
            if cursor is None:
                break
            cursors.append(cursor)
    return cursors


async def build_cases(engine: AsyncEngine, project: str, now: datetime,
                      users: int) -> list[SearchCase]:  # fmt: skip
    """The searches: a name over the last 7 days, a property, a user; each in a few variants."""
    start, end = now - timedelta(days=7), now
    tracks = [name for name in NAMES if not name.startswith("$")]
    rng = random.Random(7)

    def named(names: Sequence[str]) -> list[tuple[EventFilter, str | None]]:
        return [(EventFilter(name=name, start=start, end=end), None) for name in names]

    def of_users(numbers: Sequence[int]) -> list[tuple[EventFilter, str | None]]:
        return [(EventFilter(user_id=f"user-{u:06d}"), None) for u in numbers]

    first = named(tracks[:1])[0][0]
    pages = [(first, cursor) for cursor in await page_cursors(engine, project, first, 5)]
    # Product ids of the free, pro and team plans (an enterprise one is rarely used at all).
    products = [f"sku-{rng.randrange(3 * SKUS):07d}" for _ in range(20)]
    typical = [u for u in rng.sample(range(users // 4, users), 60) if u % 5][:40]
    return [
        SearchCase("name + 7 days, page 1 (10 common names)", named(tracks[:10])),
        SearchCase("name + 7 days, pages 2-5 by cursor", pages),
        SearchCase("name + 7 days, page 1 (5 rarest names)", named(tracks[-5:])),
        SearchCase("property plan = pro (common), any time", [(_property("plan", "pro"), None)]),
        SearchCase("property plan = enterprise (rare)", [(_property("plan", "enterprise"), None)]),
        SearchCase("property product_id = one of 150k",
                   [(_property("product_id", product), None) for product in products]),
        SearchCase("user id, the 5 most active users", of_users((1, 2, 3, 4, 6))),
        SearchCase("user id, 40 typical users", of_users(typical)),
    ]  # fmt: skip


def search_call(engine: AsyncEngine, project: str, case: SearchCase) -> Call:
    project_id = uuid.UUID(project)

    async def call(n: int) -> object:
        filters, cursor = case.variants[n % len(case.variants)]
        async with AsyncSession(engine) as session:
            return await search_events(
                session, project_id=project_id, filters=filters, limit=PAGE, cursor=cursor
            )

    return call


class StatementLog:
    """The last statement the engine sent on the archive, to EXPLAIN exactly what ran."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.last: tuple[str, Any] | None = None
        sa_event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "FROM events" in statement and not statement.startswith("EXPLAIN"):
            self.last = (statement, parameters)


async def explain(engine: AsyncEngine, log: StatementLog, call: Call) -> str:
    await call(0)
    if log.last is None:
        return "(no statement seen)"
    statement, parameters = log.last
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
        return "\n".join(f"    {row[0]}" for row in result)


async def measure_searches(
    engine: AsyncEngine,
    project: str,
    cases: list[SearchCase],
    args: argparse.Namespace,
    meters: Meters,
) -> list[Timing]:
    print_header(
        f"event search, in-process: search_events, {PAGE} per page, an AsyncSession per "
        f"call on the api's engine settings, {args.searches} calls one at a time (ms)"
    )
    log, timings, plans = StatementLog(engine), [], {}
    for case in cases:
        call = search_call(engine, project, case)
        timing = await time_calls(
            case.label, call, args.searches, meters(), (0.95, TARGET_SEARCH_P95_MS)
        )
        print_timing(timing)
        timings.append(timing)
        plans[case.label] = await explain(engine, log, call)
    shown = [t.label for t in timings if args.explain or not t.ok]
    for label in shown:
        print(f"\n  EXPLAIN (ANALYZE, BUFFERS) of {label!r}, first variant:\n{plans[label]}")
    return timings


async def in_process(
    store: Store, marker: Marker, args: argparse.Namespace, users: int
) -> tuple[bool, list[SearchCase]]:
    client, engine = redis_client(store.redis_url), async_engine(store.url)
    try:
        now = datetime.now(UTC)
        print(f"\nchecks: the read functions against the archive (project main, {now:%H:%M} UTC)")
        ok = await check_against_archive(client, store.url, marker.main, now)
        ok = await check_loader(client, marker, now) and ok
        meters: Meters = lambda: CpuMeter(store.pids)  # noqa: E731 - a one-line factory
        overview = await measure_overview(client, marker.main, args.calls, meters)
        cases = await build_cases(engine, marker.main, datetime.now(UTC), users)
        searches = await measure_searches(engine, marker.main, cases, args, meters)
    finally:
        await client.aclose()
        await engine.dispose()
    return ok and all(t.ok for t in overview + searches), cases


# ---------------------------------------------------------------------------------------------
# Over HTTP: `eventpipe api` as a process, a signed-in user's bearer token.


def api_env(
    redis_url: str, database_url: str, port: int, tmp: Path, kafka: str | None = None
) -> dict[str, str]:
    """The api's environment: ours without EVENTPIPE_* settings, then exactly these."""
    keys_dir = tmp / "jwt-keys"
    if not keys_dir.exists():
        generate_key_file(keys_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(_QUIET_ENV)
    env.update(
        {
            "EVENTPIPE_REDIS_URL": redis_url,
            "EVENTPIPE_DATABASE_URL": database_url,
            "EVENTPIPE_HTTP_PORT": str(port),
            "EVENTPIPE_JWT_KEYS_DIR": str(keys_dir),
            "EVENTPIPE_STATE_DIR": str(tmp / "role-state"),
            "EVENTPIPE_INGEST_RATE_LIMIT_PER_S": "0",
        }
    )
    if kafka is not None:
        env["EVENTPIPE_KAFKA_BOOTSTRAP"] = kafka
    return env


def sign_in(base: str, database_url: str, project: str) -> str:
    """A new user, made a member of `project`, signed in with POST /auth/login: its token."""
    email, password = f"reader-{uuid.uuid4().hex[:8]}@example.com", secrets.token_urlsafe(16)
    user = create_user_sync(Settings(database_url=database_url), email=email, password=password)

    async def join() -> None:
        engine = async_engine(database_url)
        try:
            async with AsyncSession(engine) as session:
                await set_member(
                    session, project_id=uuid.UUID(project), user_id=user, role=Role.MEMBER
                )
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(join())
    answer = httpx.post(f"{base}/auth/login", json={"email": email, "password": password})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def http_params(filters: EventFilter, cursor: str | None) -> dict[str, str]:
    """The query string of GET /api/projects/{id}/events for these filters."""
    given = {
        "name": filters.name,
        "user_id": filters.user_id,
        "cursor": cursor,
        "from": filters.start.isoformat() if filters.start else None,
        "to": filters.end.isoformat() if filters.end else None,
        "property": ".".join(filters.property_path) or None,
        "value": filters.property_value,
    }
    return {"limit": str(PAGE), **{k: v for k, v in given.items() if v is not None}}


async def time_http(
    http: httpx.AsyncClient,
    label: str,
    requests: list[tuple[str, dict[str, str]]],
    calls: int,
    meter: CpuMeter,
    target: tuple[float, float],
) -> Timing:
    """GET each (path, params) in turn; not measured when the first answer is not a 200."""

    async def call(n: int) -> object:
        path, params = requests[n % len(requests)]
        answer = await http.get(path, params=params)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text[:120]}")
        return answer.content

    try:
        return await time_calls(label, call, calls, meter, target)
    except (RuntimeError, httpx.HTTPError) as error:
        return Timing(label, [], {}, 0.0, target, failure=str(error))


async def http_measures(
    base: str,
    token: str,
    project: str,
    cases: list[SearchCase],
    args: argparse.Namespace,
    meters: Meters,
) -> list[Timing]:
    headers = {"Authorization": f"Bearer {token}"}
    timings = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        print_header(
            f"overview over HTTP: GET /api/projects/{{id}}/stats/overview?range=..."
            f"&compare=true, {args.calls} requests one at a time (ms)"
        )
        path = f"/api/projects/{project}/stats/overview"
        for preset in PRESETS:
            requests = [(path, {"range": preset, "compare": "true"})]
            timing = await time_http(
                http,
                f"range={preset}",
                requests,
                args.calls,
                meters(),
                (0.99, TARGET_OVERVIEW_P99_MS),
            )
            print_timing(timing)
            timings.append(timing)
        print_header(
            f"event search over HTTP: GET /api/projects/{{id}}/events?..., "
            f"{args.searches} requests one at a time (ms)"
        )
        path = f"/api/projects/{project}/events"
        for case in cases:
            requests = [(path, http_params(f, c)) for f, c in case.variants]
            timing = await time_http(
                http, case.label, requests, args.searches, meters(), (0.95, TARGET_SEARCH_P95_MS)
            )
            print_timing(timing)
            timings.append(timing)
    return timings


def measure_over_http(
    store: Store, marker: Marker, cases: list[SearchCase], args: argparse.Namespace, tmp: Path
) -> bool:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = api_env(store.redis_url, store.url, port, tmp)
    api = start_role(
        ["-m", "eventpipe", "api", "--workers", str(API_WORKERS)], env, tmp / "api.log"
    )
    try:
        wait_ready(api, f"{base}/healthz")  # no Kafka here: /readyz would answer 503
        token = sign_in(base, store.url, marker.main)
        meters: Meters = lambda: CpuMeter({**store.pids, "api": api.pid})  # noqa: E731
        timings = uvloop.run(http_measures(base, token, marker.main, cases, args, meters))
    finally:
        stop_api(api)
    return all(t.ok for t in timings)


# ---------------------------------------------------------------------------------------------
# The live stream: from an ingest request's 200 to its events' line on GET .../live.
# Times are time.perf_counter(), CLOCK_MONOTONIC on Linux: one clock for every process.


class AckedConnection(Connection):
    """A bench.loadgen connection with message ids of its own, noting when each of its requests
    was acknowledged: (id prefix, number of its first id, events, time of the 200)."""

    def __init__(
        self,
        spec: LoadSpec,
        templates: list[Template],
        recorder: Recorder,
        acks: list[tuple[str, int, int, float]],
    ) -> None:
        super().__init__(spec, templates, MessageIds(), recorder)
        self.acks = acks
        self.prefix = self.ids.prefix.decode()

    async def exchange(self, template: Template) -> int:
        first = self.ids.counter  # one request at a time per connection: its ids start here
        status = await super().exchange(template)
        if status == 200:
            self.acks.append((self.prefix, first, template.events, time.perf_counter()))
        return status


@dataclass
class PacedRun:
    acks: list[tuple[str, int, int, float]]
    window: tuple[float, float]
    acked_events: int
    window_events: int
    statuses: dict[int, int]
    latencies_ms: list[float]


async def _paced(spec: LoadSpec, connected: Callable[[], None]) -> PacedRun:
    """bench.loadgen's paced run (one process), with AckedConnection."""
    assert spec.rate  # noqa: S101 - paced by construction
    rng = random.Random(spec.seed)
    templates = [
        make_template(rng, spec.batch, urlsplit(spec.url).netloc, spec.write_key)
        for _ in range(TEMPLATES)
    ]
    recorder = Recorder(0.0, 0.0)
    acks: list[tuple[str, int, int, float]] = []
    connections = [
        AckedConnection(spec, templates, recorder, acks) for _ in range(spec.connections)
    ]
    for connection in connections:
        await connection.connect()
        await asyncio.sleep(0.005)
    connected()
    started = time.perf_counter()
    recorder.window_start = started + spec.warmup_s
    recorder.window_end = stop_at = recorder.window_start + spec.seconds
    interval = spec.connections / spec.rate
    tasks = [
        asyncio.create_task(c.run(stop_at, (started + n / spec.rate, interval), n))
        for n, c in enumerate(connections)
    ]
    _, pending = await asyncio.wait(tasks, timeout=stop_at - time.perf_counter() + 10)
    for task in pending:
        task.cancel()
    for connection in connections:
        connection.close()
    return PacedRun(
        acks,
        (recorder.window_start, recorder.window_end),
        recorder.acked_events_total,
        recorder.ok_events,
        dict(recorder.statuses),
        sorted(recorder.latencies_ms),
    )


def _paced_main(spec: LoadSpec, results: multiprocessing.Queue[Any]) -> None:
    try:
        results.put(uvloop.run(_paced(spec, lambda: results.put("connected"))))
    except BaseException as error:
        results.put(f"{type(error).__name__}: {error}")
        raise


class LiveFeed:
    """GET /api/projects/{id}/live read line by line: when each event's line arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.entries = self.counted = 0
        self.kind = ""  # the `event:` of the message being read
        self.status: int | None = None
        self.error = ""
        self.ready = asyncio.Event()

    async def read(self, http: httpx.AsyncClient, path: str) -> None:
        try:
            async with http.stream(
                "GET",
                path,
                headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(10, read=None),
            ) as answer:
                self.status = answer.status_code
                if answer.status_code != 200:
                    self.error = (await answer.aread())[:160].decode(errors="replace")
                    return
                self.ready.set()
                async for line in answer.aiter_lines():
                    if line.startswith("event:"):
                        self.kind = line[6:].strip()
                    elif line.startswith("data:") and self.kind == "events":
                        self._take(line[5:], time.perf_counter())
        except httpx.HTTPError as error:
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.ready.set()

    def _take(self, payload: str, at: float) -> None:
        data = orjson.loads(payload)
        self.entries += 1
        self.counted += int(data.get("n", 0))
        for record in data.get("events", []):
            self.arrived.setdefault(str(record.get("message_id")), at)


def delays_s(run: PacedRun, arrived: dict[str, float]) -> list[float]:
    """Line arrival minus the 200 of its request, for the events of requests answered in the
    measured window (the feed is a sample: the events it shows)."""
    requests: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for prefix, first, count, acked in run.acks:
        requests[prefix].append((first, count, acked))
    firsts = {prefix: [r[0] for r in sorted(rs)] for prefix, rs in requests.items()}
    for each in requests.values():
        each.sort()
    out = []
    for message_id, at in arrived.items():
        prefix, number = message_id[:24], message_id[24:]
        if prefix not in requests or len(number) != 12:
            continue
        index = bisect.bisect_right(firsts[prefix], int(number, 16)) - 1
        first, count, acked = requests[prefix][index] if index >= 0 else (0, 0, 0.0)
        if int(number, 16) < first + count and run.window[0] <= acked < run.window[1]:
            out.append(at - acked)
    return sorted(out)


@dataclass
class LiveWindow:
    label: str
    rate: float
    run: PacedRun | None = None
    delays: list[float] = field(default_factory=list)
    feed: LiveFeed | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # of the CPU measure: the paced load, from its first send to its end
    failure: str = ""

    def q(self, fraction: float) -> float:
        values = self.delays
        return (
            values[min(len(values) - 1, round(fraction * (len(values) - 1)))]
            if values
            else float("nan")
        )


@dataclass(frozen=True)
class LiveTarget:
    """The live part's api and what is needed to load it and read its stream."""

    base: str
    write_key: str
    token: str
    project: str
    pids: dict[str, int | None]


async def first_event_seen(target: LiveTarget, feed: LiveFeed, timeout_s: float = 60) -> bool:
    """One event through the whole chain (api, Kafka, processor, Redis stream, api, client)."""
    message_id = f"calibrate-{uuid.uuid4().hex}"
    auth = httpx.BasicAuth(target.write_key, "")
    async with httpx.AsyncClient(base_url=target.base, auth=auth) as http:
        body = {"userId": "calibrate", "event": "Calibrated", "messageId": message_id}
        (await http.post("/v1/track", json=body)).raise_for_status()
    deadline = time.perf_counter() + timeout_s
    while message_id not in feed.arrived and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    return message_id in feed.arrived


async def live_window(target: LiveTarget, rate: float, seconds: float, label: str) -> LiveWindow:
    window, feed = LiveWindow(label, rate), LiveFeed()
    headers = {"Authorization": f"Bearer {target.token}"}
    async with httpx.AsyncClient(base_url=target.base, headers=headers) as http:
        reader = asyncio.create_task(feed.read(http, f"/api/projects/{target.project}/live"))
        try:
            await asyncio.wait_for(feed.ready.wait(), 30)
            if feed.status != 200 or feed.error:
                window.failure = f"GET .../live: {feed.status} {feed.error}".strip()
            elif not await first_event_seen(target, feed):
                window.failure = "a first event did not reach the live stream within 60 s"
            else:
                await paced_into(window, target, feed, seconds)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    window.feed = feed
    return window


async def paced_into(
    window: LiveWindow, target: LiveTarget, feed: LiveFeed, seconds: float
) -> None:
    spec = LoadSpec(
        target.base,
        target.write_key,
        batch=100,
        connections=32,
        seconds=seconds,
        warmup_s=2.0,
        rate=window.rate / 100,
    )
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = context.Queue()
    process = context.Process(target=_paced_main, args=(spec, results), daemon=True)
    process.start()
    # Its start (a new interpreter importing this module) is not part of the window.
    answer = await asyncio.to_thread(results.get, True, 120)
    meter = CpuMeter({**target.pids, "loadgen": process.pid})
    meter.start()
    started = time.perf_counter()
    if answer == "connected":
        answer = await asyncio.to_thread(results.get, True, seconds + 90)
    window.cpu, window.seconds = meter.stop(), time.perf_counter() - started
    process.join(10)
    if isinstance(answer, str):
        window.failure = f"the paced load failed: {answer}"
        return
    window.run = answer
    # What was acknowledged reaches the stream late when the pipeline falls behind: wait for it.
    deadline = time.perf_counter() + 30
    while feed.counted < answer.acked_events and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    window.delays = delays_s(answer, feed.arrived)


def live_account(url: str) -> tuple[str, str, str, str]:
    """A user owning a project with a write key: (email, password, write key, project id)."""
    email, password = f"live-{uuid.uuid4().hex[:8]}@example.com", secrets.token_urlsafe(16)
    user = create_user_sync(Settings(database_url=url), email=email, password=password)

    async def make() -> tuple[str, str]:
        engine = async_engine(url)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                project = await create_project(session, owner_id=user, name="bench live")
                _, key = await create_write_key(session, project_id=project.id, name="bench live")
                await session.commit()
                return key, str(project.id)
        finally:
            await engine.dispose()

    key, project = asyncio.run(make())
    return email, password, key, project


def login(base: str, email: str, password: str) -> str:
    answer = httpx.post(f"{base}/auth/login", json={"email": email, "password": password})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def run_live_window(
    target: LiveTarget,
    env: dict[str, str],
    bootstrap: str,
    client: redis.Redis,
    rate: float,
    args: argparse.Namespace,
    label: str,
) -> LiveWindow:
    """A processor of its own group, started at the topic's end, then one paced window."""
    port = free_port()
    env = {
        **env,
        "EVENTPIPE_PROCESSOR_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "EVENTPIPE_PROCESSOR_METRICS_PORT": str(port),
    }
    seed_offsets(client, env, end_offsets(bootstrap, env["EVENTPIPE_EVENTS_TOPIC"]))
    log = Path(env["EVENTPIPE_STATE_DIR"]).parent / f"processor-{uuid.uuid4().hex[:6]}.log"
    processor = start_role(["-m", "eventpipe", "processor"], env, log)
    try:
        wait_ready(processor, f"http://127.0.0.1:{port}/readyz")
        pids = {**target.pids, "processor": processor.pid}
        return uvloop.run(
            live_window(
                LiveTarget(target.base, target.write_key, target.token, target.project, pids),
                rate,
                args.live_seconds,
                label,
            )
        )
    finally:
        processor.stop(30)


def measure_live(
    store: Store, args: argparse.Namespace, tmp: Path, clock: Clock
) -> tuple[float, list[LiveWindow]]:
    """Kafka (its own, in `tmp`), a fresh database, Redis database 1, the api and a processor."""
    with contextlib.ExitStack() as stack:
        clock.say("live stream: starting Kafka")
        bootstrap, kafka = start_kafka(tmp / "kafka-state", Settings().cache_dir, fast_start=False)
        stack.callback(kafka.stop, 30)
        url = recreate_database(store, "bench_queries_live")
        _partitions_around(url, datetime.now(UTC).date())
        # Database 1 of the same server: the dataset's keys stay apart.
        redis_url = urlunsplit(urlsplit(store.redis_url)._replace(path="/1"))
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        client.flushdb()
        stack.callback(client.flushdb)
        topic = "bench.queries.live"
        ensure_topics(bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
        email, password, key, project = live_account(url)
        # A broker's first minutes cost several times the CPU per record (its JIT at work).
        clock.say(f"live stream: warming the broker, {args.warm_seconds:g} s of raw produce")
        warm_broker(bootstrap, make_pairs(50_000, project), args.warm_seconds)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = api_env(redis_url, url, port, tmp, kafka=bootstrap)
        env.update({"EVENTPIPE_EVENTS_TOPIC": topic, "EVENTPIPE_DLQ_TOPIC": f"{topic}.dlq"})
        api = start_role(
            ["-m", "eventpipe", "api", "--workers", str(API_WORKERS)], env, tmp / "live-api.log"
        )
        stack.callback(stop_api, api)
        wait_ready(api, f"{base}/readyz")
        maximum = api_maximum(base, key, args, clock)
        target = LiveTarget(
            base,
            key,
            login(base, email, password),
            project,
            {**store.pids, "api": api.pid, "kafka": kafka.pid},
        )
        windows = []
        for fraction in args.live_fractions:
            label = f"at {fraction:g} x the maximum"
            clock.say(f"live stream: {label}, {fraction * maximum:,.0f} events/s")
            windows.append(
                run_live_window(target, env, bootstrap, client, fraction * maximum, args, label)
            )
        return maximum, windows


def api_maximum(base: str, key: str, args: argparse.Namespace, clock: Clock) -> float:
    if args.rate:
        return float(args.rate)
    clock.say(f"live stream: the api's maximum ingest rate ({args.ingest_seconds:g} s)")
    spec = LoadSpec(base, key, batch=100, connections=32, seconds=args.ingest_seconds, warmup_s=3)
    return run_load(spec).events_per_s


_LIVE_CPU = ("api", "processor", "kafka", "redis", "postgres", "loadgen", "bench")


def report_window(window: LiveWindow) -> bool:
    if window.failure or window.run is None or window.feed is None:
        print(f"  {window.label}: not measured: {window.failure}  MISSED")
        return False
    run, feed = window.run, window.feed
    errors = sum(n for status, n in run.statuses.items() if status != 200)
    latency = (
        run.latencies_ms[round(0.99 * (len(run.latencies_ms) - 1))] if run.latencies_ms else 0.0
    )
    behind = max(0, run.acked_events - feed.counted)
    cells = ", ".join(
        f"{name} {window.cpu.get(name, 0.0) / max(run.acked_events, 1) * 1e6:.1f}"
        for name in _LIVE_CPU
    )
    elapsed = run.window[1] - run.window[0]
    print(
        f"  {window.label}: paced {run.window_events / elapsed:,.0f} events/s, request p99 "
        f"{latency:.0f} ms, non-200 {errors}\n"
        f"    the stream: {feed.entries:,} entries counting {feed.counted:,} events of "
        f"{run.acked_events:,} acknowledged ({behind:,} missing 30 s after the load), "
        f"{len(feed.arrived):,} events shown, {len(window.delays):,} of them matched\n"
        f"    delay p50 {window.q(0.5) * 1000:.0f} ms  p99 {window.q(0.99) * 1000:.0f} ms  max "
        f"{window.q(1.0) * 1000:.0f} ms\n"
        f"    CPU us per event: {cells}; other processes "
        f"{window.cpu.get('other', 0.0) / max(window.seconds, 1e-9):.2f} cores"
    )
    ok = bool(window.delays) and not behind and window.q(0.99) < TARGET_LIVE_P99_S
    print(
        f"    target: p99 < {TARGET_LIVE_P99_S:g} s: {window.q(0.99):.2f} s"
        f"{' (events missing: not all measured)' if behind else ''}  {_verdict(ok)}"
    )
    return ok


def report_live(maximum: float, measured: bool, windows: list[LiveWindow]) -> bool:
    how = "measured: batches of 100, 32 connections" if measured else "given by --rate"
    print(
        f"\nlive stream: a request's 200 -> its events' line on GET /api/projects/{{id}}/live "
        f"(api {API_WORKERS} workers, processor, Kafka, Redis, PostgreSQL, load generator on "
        f"{os.cpu_count()} cores)\n  the api's maximum ingest rate: {maximum:,.0f} events/s ({how})"
    )
    verdicts = [report_window(window) for window in windows]
    return verdicts[0] if verdicts else False


# ---------------------------------------------------------------------------------------------
# The run.


def run(args: argparse.Namespace, tmp: Path) -> bool:
    clock = Clock()
    dataset = Dataset(args.events, args.days, args.users, args.other_share)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    with kept_servers(args.state_dir) as store:
        marker = prepare_dataset(store, dataset, args, clock)
        print(f"dataset: {describe_store(store, marker)}")
        ok, cases = uvloop.run(in_process(store, marker, args, dataset.users))
        if not args.skip_http:
            clock.say("over HTTP: starting the api")
            ok = measure_over_http(store, marker, cases, args, tmp) and ok
        if not args.skip_live:
            maximum, windows = measure_live(store, args, tmp, clock)
            ok = report_live(maximum, not args.rate, windows) and ok
        clock.say("stopping the servers (their data stays)")
    return ok


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000, help="the main project's events")
    parser.add_argument("--days", type=int, default=30, choices=range(2, 61), metavar="2..60")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument(
        "--other-share",
        type=float,
        default=0.1,
        help="the second project's events, as a share of the main one's",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path.home() / ".local" / "state" / "eventpipe-bench-queries",
        help="where Redis and PostgreSQL keep the dataset between runs",
    )
    parser.add_argument("--reload", action="store_true", help="load the dataset again")
    parser.add_argument("--load-connections", type=int, default=2, help="days filled at once")
    parser.add_argument("--calls", type=int, default=200, help="calls of each overview measure")
    parser.add_argument("--searches", type=int, default=100, help="calls of each search")
    parser.add_argument("--explain", action="store_true", help="print every search's plan")
    parser.add_argument("--skip-http", action="store_true", help="no measure over HTTP")
    parser.add_argument("--skip-live", action="store_true", help="no live stream (no Kafka)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="the api's maximum ingest rate (events/s), instead of measuring it",
    )
    parser.add_argument("--ingest-seconds", type=float, default=8.0, help="the maximum's run")
    parser.add_argument("--warm-seconds", type=float, default=30.0, help="broker warm-up")
    parser.add_argument("--live-seconds", type=float, default=20.0, help="each paced window")
    parser.add_argument(
        "--live-fractions",
        type=_fractions,
        default=(0.5, 0.25),
        help="paced rates as fractions of the maximum (the first one is the target's)",
    )
    parser.add_argument("--logs", type=Path, help="copy the roles' logs to this directory")
    return parser.parse_args()


def header(args: argparse.Namespace) -> None:
    print(
        f"eventpipe read-path benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores shared by Redis, PostgreSQL, this benchmark (and the api, Kafka, "
        f"the processor and the load generator over HTTP)\n"
        f"dataset: {args.events:,} events over {args.days} days for the main project, "
        f"{args.other_share:.0%} as many for a second one, {args.users:,} users, {len(NAMES)} "
        f"names (Zipf-like), {PARTITIONS} partitions; kept in {args.state_dir}"
    )


def main() -> None:
    args = parse_args()
    header(args)
    run_in_tmp("eventpipe-bench-queries-", args.logs, lambda tmp: run(args, tmp))


if __name__ == "__main__":
    main()
