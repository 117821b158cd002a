"""Event search in the archive: filters, newest first, keyset (cursor) pagination.

A cursor is the last row's (timestamp, messageId): the next page starts strictly below it, so pages
neither skip nor repeat rows while new events arrive (an offset would shift under them).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

MAX_PATH_DEPTH = 8

COLUMNS = (
    "message_id", "type", "event", "name", "category", "user_id", "anonymous_id", "distinct_id",
    "timestamp", "original_timestamp", "sent_at", "received_at", "group_id", "previous_id",
    "properties", "traits", "context", "integrations", "day", "kafka_partition", "kafka_offset",
)  # fmt: skip
_SELECT = ", ".join(f'"{c}"' for c in COLUMNS)
JSON_COLUMNS = ("properties", "traits", "context", "integrations")
# JSON columns as their text: an export writes them as they are (exports/formats.py).
_EXPORT_SELECT = ", ".join(
    f'"{c}"::text AS "{c}"' if c in JSON_COLUMNS else f'"{c}"' for c in COLUMNS
)


class SearchError(ValueError):
    """A filter or cursor that cannot be used; the message says why."""


@dataclass(frozen=True)
class EventFilter:
    name: str | None = None
    type: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    # A dotted path into `properties` and the text its value must equal.
    property_path: tuple[str, ...] = field(default=())
    property_value: str | None = None


def property_path(dotted: str) -> tuple[str, ...]:
    parts = tuple(dotted.split("."))
    if not all(parts) or len(parts) > MAX_PATH_DEPTH:
        raise SearchError(f"`property` is a dotted path of 1 to {MAX_PATH_DEPTH} non-empty names")
    return parts


def _containments(path: tuple[str, ...], value: str) -> list[str]:
    """JSON documents that `properties` must contain: the value as text, and as the JSON scalar
    it spells if any (`42`, `true`), since a URL parameter cannot tell "42" from 42."""
    candidates: list[Any] = [value]
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        parsed = value
    if parsed != value and not isinstance(parsed, dict | list):
        candidates.append(parsed)
    documents = []
    for candidate in candidates:
        nested: Any = candidate
        for name in reversed(path):
            nested = {name: nested}
        documents.append(orjson.dumps(nested).decode())
    return documents


def encode_cursor(timestamp: datetime, message_id: str) -> str:
    raw = orjson.dumps([timestamp.isoformat(), message_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, message_id = orjson.loads(raw)
        return datetime.fromisoformat(stamp), str(message_id)
    except (binascii.Error, ValueError, TypeError) as error:
        raise SearchError("`cursor` is not one this api gave") from error


def _where(filters: EventFilter, cursor: str | None) -> tuple[list[str], dict[str, Any]]:
    clauses = ["project_id = :project_id"]
    params: dict[str, Any] = {}
    exact = {"event": filters.name, "type": filters.type, "anonymous_id": filters.anonymous_id}
    for column, value in exact.items():
        if value is not None:
            clauses.append(f"{column} = :{column}")
            params[column] = value
    if filters.user_id is not None:
        # distinct_id is the user id whenever one is set: its index finds the user's rows.
        clauses.append("distinct_id = :user_id AND user_id = :user_id")
        params["user_id"] = filters.user_id
    if filters.start is not None:
        clauses.append('"timestamp" >= :start')
        params["start"] = filters.start
    if filters.end is not None:
        clauses.append('"timestamp" < :end')
        params["end"] = filters.end
    if filters.property_path and filters.property_value is not None:
        documents = _containments(filters.property_path, filters.property_value)
        tests = [f"properties @> CAST(:doc{i} AS jsonb)" for i in range(len(documents))]
        clauses.append(f"({' OR '.join(tests)})")
        params.update({f"doc{i}": doc for i, doc in enumerate(documents)})
    if cursor is not None:
        params["cursor_time"], params["cursor_id"] = decode_cursor(cursor)
        clauses.append('("timestamp", message_id) < (:cursor_time, :cursor_id)')
    return clauses, params


async def search_events(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    filters: EventFilter,
    limit: int,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of matching events, newest first, and the cursor of the next page (or None)."""
    clauses, params = _where(filters, cursor)
    query = text(
        f"SELECT {_SELECT} FROM events WHERE {' AND '.join(clauses)} "  # noqa: S608 - fixed names
        'ORDER BY "timestamp" DESC, message_id DESC LIMIT :limit'
    )
    result = await session.execute(query, {**params, "project_id": project_id, "limit": limit + 1})
    rows = [event_json(row._mapping) for row in result]
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(
        datetime.fromisoformat(last["timestamp"]), last["message_id"]
    )


def export_query(project_id: uuid.UUID, filters: EventFilter) -> tuple[str, dict[str, Any]]:
    """Every matching row, oldest first: the statement an export streams through a cursor."""
    clauses, params = _where(filters, None)
    query = (
        f"SELECT {_EXPORT_SELECT} FROM events WHERE {' AND '.join(clauses)} "  # noqa: S608 - fixed names
        'ORDER BY "timestamp", message_id'
    )
    return query, {**params, "project_id": project_id}


async def get_event(
    session: AsyncSession, *, project_id: uuid.UUID, message_id: str
) -> dict[str, Any] | None:
    """The archived event with this messageId (the first copy, if a clock put one on two days)."""
    query = text(
        f"SELECT {_SELECT} FROM events "  # noqa: S608 - fixed column names
        "WHERE project_id = :project_id AND message_id = :message_id "
        "ORDER BY received_at LIMIT 1"
    )
    found = await session.execute(query, {"project_id": project_id, "message_id": message_id})
    row = found.first()
    return None if row is None else event_json(row._mapping)


def event_json(row: Any) -> dict[str, Any]:
    """An archive row as the api shows it: times in ISO-8601, JSON columns as JSON."""
    out: dict[str, Any] = {}
    for column in COLUMNS:
        value = row[column]
        out[column] = value.isoformat() if hasattr(value, "isoformat") else value
    return out
