"""The archive of a project: event search, one event, and "where is my event?"."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from confluent_kafka import KafkaException
from fastapi import APIRouter, Path, Query
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from eventpipe.api.deps import RedisDep, ResourcesDep, SessionDep, Viewer
from eventpipe.api.openapi import PROJECT_ERRORS
from eventpipe.core.errors import ApiError
from eventpipe.domain.analytics import EventPage, EventPublic, TracePublic
from eventpipe.domain.events import EVENT_TYPES
from eventpipe.domain.search import (
    EventFilter,
    SearchError,
    get_event,
    property_path,
    search_events,
)
from eventpipe.domain.trace import trace_event
from eventpipe.ingest.segment import MAX_MESSAGE_ID

router = APIRouter(prefix="/api/projects/{project_id}/events", tags=["events"])

# Text that PostgreSQL can hold: no NUL (it refuses them in text), bounded.
Text = Annotated[str, Query(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
MessageId = Annotated[str, Path(min_length=1, max_length=MAX_MESSAGE_ID, pattern=r"^[^\x00]*$")]
EventType = Annotated[str, Query(pattern="^(" + "|".join(sorted(EVENT_TYPES)) + ")$")]


def _filters(
    name: str | None, kind: str | None, user_id: str | None, anonymous_id: str | None,
    start: datetime | None, end: datetime | None, prop: str | None, value: str | None,
) -> EventFilter:  # fmt: skip
    if (prop is None) != (value is None):
        raise SearchError("`property` and `value` go together")
    return EventFilter(
        name=name, type=kind, user_id=user_id, anonymous_id=anonymous_id, start=start, end=end,
        property_path=property_path(prop) if prop else (), property_value=value,
    )  # fmt: skip


def _unavailable(error: Exception) -> ApiError:
    return ApiError(503, "unavailable", f"cannot be answered now ({type(error).__name__}); retry")


@router.get("", responses=PROJECT_ERRORS)
async def search(
    access: Viewer,
    session: SessionDep,
    name: Annotated[Text | None, Query(description="event name ($page, $identify, ...)")] = None,
    kind: Annotated[EventType | None, Query(alias="type")] = None,
    user_id: Text | None = None,
    anonymous_id: Text | None = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="excluded")] = None,
    prop: Annotated[Text | None, Query(alias="property", description="dotted path")] = None,
    value: Annotated[Text | None, Query(description="what `property` equals")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> EventPage:
    """Archived events matching every filter given, newest first; `next_cursor` pages on."""
    try:
        filters = _filters(name, kind, user_id, anonymous_id, start, end, prop, value)
        rows, after = await search_events(
            session, project_id=access.project_id, filters=filters, limit=limit, cursor=cursor
        )
    except SearchError as error:
        raise ApiError(422, "invalid_search", str(error)) from error
    except SQLAlchemyError as error:
        raise _unavailable(error) from error
    return EventPage(events=[EventPublic.model_validate(r) for r in rows], next_cursor=after)


@router.get("/{message_id}", responses=PROJECT_ERRORS)
async def one_event(access: Viewer, session: SessionDep, message_id: MessageId) -> EventPublic:
    """The archived event with this messageId."""
    try:
        row = await get_event(session, project_id=access.project_id, message_id=message_id)
    except SQLAlchemyError as error:
        raise _unavailable(error) from error
    if row is None:
        raise ApiError(404, "not_found", "no archived event with this messageId")
    return EventPublic.model_validate(row)


@router.get("/{message_id}/trace", responses=PROJECT_ERRORS)
async def trace(
    access: Viewer,
    session: SessionDep,
    redis: RedisDep,
    resources: ResourcesDep,
    message_id: MessageId,
) -> TracePublic:
    """Each stage this event reached: accepted (Kafka position), counted, archived or
    dead-lettered (with the reason)."""
    try:
        found: dict[str, Any] = await trace_event(
            session=session, redis=redis, settings=resources.settings,
            project_id=access.project_id, message_id=message_id,
        )  # fmt: skip
    except (SQLAlchemyError, RedisError, KafkaException) as error:
        raise _unavailable(error) from error
    return TracePublic.model_validate(found)
