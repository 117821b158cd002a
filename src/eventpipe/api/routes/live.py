"""`/api/projects/{id}/live`: the project's new events and per-second counts, as server-sent
events, within a second of the processor applying them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from redis.exceptions import RedisError

from eventpipe.api.deps import CurrentClaims, RedisDep, ResourcesDep, Viewer
from eventpipe.api.livestream import STREAM_ID, EventStream, read_stream, start_id
from eventpipe.api.openapi import PROJECT_ERRORS
from eventpipe.auth.denylist import is_revoked
from eventpipe.core.errors import ApiError
from eventpipe.domain.keys import live_key

router = APIRouter(prefix="/api/projects/{project_id}", tags=["live"])

STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream: `events` (id, data {t, n, events}), `second` "
        "(data {t, n}), `reset` and `bye` (data {reason}); see docs/queries.md",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/live",
    status_code=200,
    responses={**PROJECT_ERRORS, **STREAM_DOC},
    response_class=EventStream,
)
async def live(
    access: Viewer,
    claims: CurrentClaims,
    redis: RedisDep,
    resources: ResourcesDep,
    last_event_id: Annotated[str | None, Header(max_length=50)] = None,
    resume: Annotated[str | None, Query(alias="last_event_id", max_length=50)] = None,
) -> EventStream:
    """New events of the project as they are counted; resumes after `Last-Event-ID`."""
    position = last_event_id or resume
    if position is not None and not STREAM_ID.match(position):
        raise ApiError(422, "invalid_request", "Last-Event-ID is not an id this stream gave")
    key = live_key(str(access.project_id))
    try:
        position, preface = await start_id(redis, key, position)
    except RedisError as error:
        raise ApiError(503, "unavailable", "the live stream cannot be read now") from error

    async def still_allowed() -> str | None:
        # Sign-out (or logout-all) and expiry end the stream like any other use of the token.
        if claims.exp <= time.time():
            return "expired"
        try:
            return "revoked" if await is_revoked(redis, claims) else None
        except RedisError:
            return "unavailable"

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in preface:
            yield chunk
        async for chunk in read_stream(
            redis, key, position, still_allowed, resources.settings.live_auth_check_s
        ):
            yield chunk

    return EventStream(chunks(), send_timeout_s=resources.settings.live_send_timeout_s)
