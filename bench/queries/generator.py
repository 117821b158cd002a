"""The archive, generated inside PostgreSQL: one daily partition at a time, indexed in bulk."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from bench.queries.dataset import AGENTS, NAMES, PARTITIONS, PATHS, PLANS, SKUS, Dataset
from eventpipe.processor.archive import partition_name

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]
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
