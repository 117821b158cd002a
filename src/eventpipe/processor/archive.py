"""The PostgreSQL archive: one daily partition per day, bulk writes that a replay cannot double.

Rows go in with COPY into a session-local staging table, then one
`INSERT ... SELECT ... ON CONFLICT DO NOTHING` on (project_id, message_id, day).
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import psycopg
from psycopg import sql

from eventpipe.domain.events import EventRecord
from eventpipe.processor.aggregate import event_name

log = logging.getLogger(__name__)

# Every field of the record has its column: nothing is stored twice (PostgreSQL's JSON parsing is
# most of an insert's cost), and nothing the client sent is lost.
COLUMNS = (
    "project_id", "day", "message_id", "type", "event", "distinct_id", "user_id",
    "anonymous_id", "timestamp", "original_timestamp", "sent_at", "received_at", "name",
    "category", "group_id", "previous_id", "properties", "traits", "context", "integrations",
    "version", "kafka_partition", "kafka_offset",
)  # fmt: skip
_COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)


# An arbitrary, fixed advisory-lock key of the archive's partition maintenance.
_PARTITIONS_LOCK = 0x6576656E7473  # "events"


def partition_name(day: date) -> str:
    return f"events_{day:%Y%m%d}"


def _json_or_none(raw: bytes) -> str | None:
    return None if raw == b"null" else raw.decode()


def archive_row(record: EventRecord, partition: int, offset: int) -> tuple[str | int | None, ...]:
    """The record's row, with where it was read in Kafka (for "where is my event?")."""
    return (
        record.project_id, record.day, record.message_id, record.type, event_name(record),
        record.distinct_id, record.user_id, record.anonymous_id, record.timestamp,
        record.original_timestamp, record.sent_at, record.received_at, record.name,
        record.category, record.group_id, record.previous_id,
        _json_or_none(bytes(record.properties)), _json_or_none(bytes(record.traits)),
        _json_or_none(bytes(record.context)), _json_or_none(bytes(record.integrations)),
        record.v, partition, offset,
    )  # fmt: skip


class Archive:
    """A connection of the processor's own, with its staging table."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._url, connect_timeout=5)
            conn.execute(
                "CREATE TEMP TABLE events_stage (LIKE events INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            )
            conn.commit()
            self._conn = conn
        return self._conn

    def write(self, rows: list[tuple[str | int | None, ...]]) -> int:
        """Store the rows not stored yet; returns how many were new. Safe to replay."""
        conn = self._connection()
        try:
            with conn.cursor() as cursor:
                copy_sql = sql.SQL("COPY events_stage ({}) FROM STDIN").format(_COLUMN_LIST)
                with cursor.copy(copy_sql) as copy:
                    for row in rows:
                        copy.write_row(row)
                # In key order: two writers inserting the same retried events take their row
                # locks in the same order, so one waits for the other instead of deadlocking.
                cursor.execute(
                    sql.SQL(
                        "INSERT INTO events ({0}) SELECT {0} FROM events_stage "
                        "ORDER BY project_id, message_id, day ON CONFLICT DO NOTHING"
                    ).format(_COLUMN_LIST)
                )
                inserted = cursor.rowcount
            conn.commit()
        except psycopg.Error:
            self.close()
            raise
        return inserted

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def ensure_partitions(database_url: str, *, today: date, ahead: int, retention_days: int) -> None:
    """Create daily partitions from yesterday to `ahead` days on; drop those past retention."""
    with psycopg.connect(database_url, autocommit=False) as conn:
        # Every processor does this at start: one at a time, or two would race to create the
        # same partition (DuplicateTable) or deadlock attaching it.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITIONS_LOCK,))
        for offset in range(-1, ahead + 1):
            _ensure_partition(conn, today + timedelta(days=offset))
        _drop_old(conn, today - timedelta(days=retention_days))
        conn.commit()


def _ensure_partition(conn: psycopg.Connection[tuple[object, ...]], day: date) -> None:
    name = partition_name(day)
    exists = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    if exists is not None and exists[0] is not None:
        return
    table = sql.Identifier(name)
    # Rows of this day may sit in the default partition (a client clock ahead): move them, since
    # attaching a range the default partition still holds is refused.
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE events INCLUDING DEFAULTS)").format(table))
    conn.execute(
        sql.SQL("WITH moved AS (DELETE FROM events_default WHERE day = %s RETURNING *) "
                "INSERT INTO {} SELECT * FROM moved").format(table),
        (day,),
    )  # fmt: skip
    # DDL takes no bind parameters: the bounds are literals, quoted by psycopg.
    bounds = (sql.Literal(day.isoformat()), sql.Literal((day + timedelta(days=1)).isoformat()))
    conn.execute(
        sql.SQL("ALTER TABLE events ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            table, *bounds
        )
    )
    log.info("created archive partition %s", name)


def _drop_old(conn: psycopg.Connection[tuple[object, ...]], before: date) -> None:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events' "
        "AND c.relname ~ '^events_[0-9]{8}$'"
    ).fetchall()
    for (name,) in rows:
        if str(name) < partition_name(before):
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(str(name))))
            log.info("dropped archive partition %s (retention)", name)
    conn.execute("DELETE FROM events_default WHERE day < %s", (before,))
