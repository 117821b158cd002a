"""Segment-compatible ingest: /v1/track, identify, page, screen, group, alias and batch.

Success (200 `{"success": true}`) is answered only after Kafka has acknowledged every event of the
request; any error leaves nothing in the topic (validation happens before the first produce).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import NamedTuple

from fastapi import Request
from fastapi.responses import Response
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import QueryParams
from starlette.routing import Route

from eventpipe.api.ingestasgi import Head, IngestEndpoint, refusal_parts
from eventpipe.api.ingestdoc import EXAMPLES, PREFLIGHT, ingest_operation
from eventpipe.api.openapi import DocumentedRoute
from eventpipe.api.resources import Resources
from eventpipe.auth.origins import cors_headers, origin_allowed, preflight_headers
from eventpipe.auth.writekeys import ResolvedKey
from eventpipe.core.errors import error_response
from eventpipe.domain.events import encode_record, record_key
from eventpipe.ingest.body import decode_content, read_limited
from eventpipe.ingest.errors import IngestError
from eventpipe.ingest.producer import KafkaUnavailable
from eventpipe.ingest.ratelimit import over_limit
from eventpipe.ingest.segment import build_records, decode_envelope

log = logging.getLogger(__name__)
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


def presented_key(request: Request) -> str | None:
    """The write key of a request's Basic auth, else of its `?writeKey=` query."""
    return key_of(request.headers.get("authorization"), request.scope["query_string"])


def key_of(authorization: str | None, query: bytes) -> str | None:
    key = basic_auth_user(authorization)
    if key is None and query:
        # sendBeacon can set no header: RudderStack's beacons carry the key in the query.
        key = QueryParams(query).get("writeKey")
    return key


def check_origin(request: Request, resolved: ResolvedKey) -> None:
    """Refuse a browser page whose origin the key does not allow (servers send no Origin)."""
    refuse_origin(request.headers.get("origin"), resolved)


def refuse_origin(origin: str | None, resolved: ResolvedKey) -> None:
    if origin is not None and not origin_allowed(origin, resolved.allowed_origins):
        raise IngestError(403, "origin_not_allowed", "this write key does not allow this origin")


async def resolve_key(resources: Resources, key: str | None) -> ResolvedKey:
    if not key:
        raise IngestError(401, "missing_write_key", "send the write key as the Basic-auth user")
    if resources.write_keys is None:
        raise IngestError(503, "unavailable", "PostgreSQL is not configured")
    try:
        resolved = await resources.write_keys.resolve(key)
    except (SQLAlchemyError, TimeoutError, OSError) as error:
        log.warning("write key lookup failed: %r", error)
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


class Sender(NamedTuple):
    """Who sent a request: the page's origin (browsers only) and the address."""

    origin: str | None
    address: str | None


async def accept_body(
    resources: Resources,
    body: bytes,
    implied_type: str | None,
    resolved: ResolvedKey | None,
    sender: Sender,
) -> None:
    """Validate a decoded body and produce its events; `resolved`: the header's key, if any."""
    envelope = decode_envelope(body, implied_type)
    if resolved is None:
        resolved = await resolve_key(resources, envelope.write_key)
    refuse_origin(sender.origin, resolved)
    records = build_records(
        envelope,
        project_id=resolved.project_id,
        received_at=datetime.now(UTC),
        client_ip=sender.address,
    )
    if await _rate_limited(resources, resolved, len(records)):
        raise IngestError(429, "rate_limited", "too many events for this write key")
    if resources.producer is None:
        raise IngestError(503, "unavailable", "Kafka is not configured")
    await resources.producer.send([(record_key(r), encode_record(r)) for r in records])


async def ingest(
    resources: Resources, head: Head, chunks: AsyncIterator[bytes], implied_type: str | None
) -> None:
    """Read one request of the Segment API; return once Kafka has its events."""
    # Content-Type is not checked: the body is JSON whatever it says, as Segment's and
    # RudderStack's servers read it (rudder-sdk-node sends x-www-form-urlencoded, browsers
    # text/plain); a body that does not parse is refused below.
    key = key_of(head.authorization, head.query)
    # A key in the header is checked before the body is read, so a bad one costs no parsing.
    resolved = await resolve_key(resources, key) if key is not None else None
    body = decode_content(await read_limited(chunks), head.encoding)
    await accept_body(resources, body, implied_type, resolved, Sender(head.origin, head.address))


async def accept(
    request: Request, body: bytes, implied_type: str | None, resolved: ResolvedKey | None = None
) -> None:
    """`accept_body` for a route that has a Starlette request (the pixel)."""
    sender = Sender(request.headers.get("origin"), request.client.host if request.client else None)
    await accept_body(request.app.state.resources, body, implied_type, resolved, sender)


def refusal(error: IngestError | KafkaUnavailable) -> Response:
    """The JSON answer to a refused ingest request."""
    status, body, headers = refusal_parts(error)
    return Response(body, status, headers, media_type="application/json")


def with_cors(request: Request, response: Response) -> Response:
    """A browser page may read an ingest answer (the key's origins decide what it may send)."""
    origin = request.headers.get("origin")
    if origin is not None:
        response.headers.update(cors_headers(origin))
    return response


async def preflight(request: Request) -> Response:
    """A browser's CORS preflight of an ingest route: any origin may ask; the key decides."""
    origin = request.headers.get("origin")
    if origin is None:
        return error_response(400, "not_a_preflight", "a CORS preflight carries an Origin header")
    requested = request.headers.get("access-control-request-headers")
    return Response(status_code=204, headers=preflight_headers(origin, requested))


def preflight_of(route: Route) -> DocumentedRoute:
    """The OPTIONS route answering browsers' preflights of `route`."""
    in_path = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ]
    operation = {**PREFLIGHT, "parameters": in_path + PREFLIGHT["parameters"]}
    return DocumentedRoute(route.path, preflight, methods=["OPTIONS"], operation=operation)


BATCH_DOC = 'A batch of events, as the server SDKs send them: `{"batch": [...], "sentAt"}`.'


def _single(kind: str, path: str | None = None) -> Route:
    path = path or f"/v1/{kind}"
    operation = ingest_operation(f"One {kind} event.", "SegmentEvent", EXAMPLES[kind])
    name = path.removeprefix("/v1/")
    endpoint = IngestEndpoint(kind, ingest)
    return DocumentedRoute(path, endpoint, methods=["POST"], name=name, operation=operation)


def _batch(path: str, name: str) -> Route:
    operation = ingest_operation(BATCH_DOC, "SegmentBatch", EXAMPLES["batch"])
    endpoint = IngestEndpoint(None, ingest)
    return DocumentedRoute(path, endpoint, methods=["POST"], name=name, operation=operation)


# Plain Starlette routes whose endpoints are raw ASGI (api/ingestasgi.py): FastAPI's dependency
# solving and validation cost ~30 us per request, Starlette's Request and Response as much again
# (measured). Their OpenAPI operations are in api/ingestdoc.py.
routes: list[Route] = [_batch("/v1/batch", "batch")]
routes += [_single(kind) for kind in SINGLE_TYPES]
# analytics.js posts to the first letter of each type (/v1/t, /v1/p, ...) and batches to /v1/b.
routes += [_batch("/v1/b", "batch_short")]
routes += [_single(kind, f"/v1/{kind[0]}") for kind in SINGLE_TYPES]
# RudderStack's JS SDK sends its page-leave beacons (text/plain, `?writeKey=`) here.
routes += [_batch("/beacon/v1/batch", "beacon_batch")]
# After the POST routes, which carry the traffic and are matched first.
preflights: list[Route] = [preflight_of(route) for route in routes]
