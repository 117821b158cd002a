"""Segment-compatible ingest: /v1/track, identify, page, screen, group, alias and batch.

Success (200 `{"success": true}`) is answered only after Kafka has acknowledged every event of the
request; any error leaves nothing in the topic (validation happens before the first produce).
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import Response
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import Route

from eventpipe.api.resources import Resources
from eventpipe.auth.writekeys import ResolvedKey
from eventpipe.core.errors import error_response
from eventpipe.domain.events import encode_record, record_key
from eventpipe.ingest.body import decode_content, read_limited
from eventpipe.ingest.producer import KafkaUnavailable
from eventpipe.ingest.ratelimit import over_limit
from eventpipe.ingest.segment import IngestError, build_records, decode_envelope

log = logging.getLogger(__name__)
SUCCESS = b'{"success":true}'
SINGLE_TYPES = ("track", "identify", "page", "screen", "group", "alias")


def basic_auth_user(header: str | None) -> str | None:
    """The user name of `Authorization: Basic ...` (Segment puts the write key there)."""
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise IngestError(401, "invalid_authorization", "malformed Basic credentials") from error
    return decoded.partition(":")[0] or None


async def _resolve(resources: Resources, key: str | None) -> ResolvedKey:
    if not key:
        raise IngestError(401, "missing_write_key", "send the write key as the Basic-auth user")
    if resources.write_keys is None:
        raise IngestError(503, "unavailable", "PostgreSQL is not configured")
    try:
        resolved = await resources.write_keys.resolve(key)
    except SQLAlchemyError as error:
        log.warning("write key lookup failed: %s", error)
        raise IngestError(503, "unavailable", "cannot check the write key right now") from error
    if resolved is None:
        raise IngestError(401, "invalid_write_key", "unknown or revoked write key")
    return resolved


async def _rate_limited(resources: Resources, resolved: ResolvedKey, events: int) -> bool:
    limit = resources.settings.ingest_rate_limit_per_s
    if resources.redis is None or limit == 0:
        return False
    try:
        return await over_limit(
            resources.redis, key_id=resolved.key_id, events=events, per_second=limit
        )
    except RedisError as error:
        # The limit protects the pipeline; losing Redis must not stop ingest (fail open).
        log.warning("rate limit not checked: %s", error)
        return False


async def ingest(request: Request, implied_type: str | None) -> Response:
    resources: Resources = request.app.state.resources
    headers = request.headers
    # Content-Type is not checked: the body is JSON whatever it says, as Segment's and
    # RudderStack's servers read it (rudder-sdk-node sends x-www-form-urlencoded, browsers
    # text/plain); a body that does not parse is refused below.
    header_key = basic_auth_user(headers.get("authorization"))
    # A key in the header is checked before the body is read, so a bad one costs no parsing.
    resolved = await _resolve(resources, header_key) if header_key is not None else None
    body = decode_content(await read_limited(request.stream()), headers.get("content-encoding"))
    envelope = decode_envelope(body, implied_type)
    if resolved is None:
        resolved = await _resolve(resources, envelope.write_key)
    records = build_records(envelope, project_id=resolved.project_id, received_at=datetime.now(UTC))
    if await _rate_limited(resources, resolved, len(records)):
        raise IngestError(429, "rate_limited", "too many events for this write key")
    if resources.producer is None:
        raise IngestError(503, "unavailable", "Kafka is not configured")
    await resources.producer.send([(record_key(r), encode_record(r)) for r in records])
    return Response(SUCCESS, media_type="application/json")


async def _answer(request: Request, implied_type: str | None) -> Response:
    try:
        return await ingest(request, implied_type)
    except IngestError as error:
        extra = {} if error.index is None else {"index": error.index}
        headers = {"Retry-After": "1"} if error.status in (429, 503) else None
        return error_response(error.status, error.code, error.message, headers, **extra)
    except KafkaUnavailable as error:
        return error_response(503, "kafka_unavailable", str(error), {"Retry-After": "1"})


async def batch(request: Request) -> Response:
    """A batch of events, as the server SDKs send them: `{"batch": [...], "sentAt"}`."""
    return await _answer(request, None)


def _single(kind: str) -> Route:
    async def endpoint(request: Request) -> Response:
        return await _answer(request, kind)

    endpoint.__doc__ = f"One {kind} event."
    return Route(f"/v1/{kind}", endpoint, methods=["POST"], name=kind)


# Plain Starlette routes, not FastAPI's: the endpoints read the request themselves, and FastAPI's
# dependency solving and validation cost ~30 us per request (measured), a sixth of a single
# event's whole cost in the api. Segment's API is documented in docs/ingest.md, not OpenAPI.
routes = [Route("/v1/batch", batch, methods=["POST"], name="batch")]
routes += [_single(kind) for kind in SINGLE_TYPES]
