"""The ingest routes as raw ASGI: the request's head read in one pass, the answer sent as bytes.

A single event costs the api its HTTP handling more than its validation: Starlette's Request
(headers parsed into a dict on each lookup), its Response, the middleware stack (errors, security
headers, exceptions) and the router took about 60 us of a lone event's 150 on a 2-core machine
(measured in process). `EventpipeApi` (api/app.py) hands a POST to an ingest path straight to its
`IngestEndpoint`; the same endpoint is the route's app, so the router reaches it too, for the
schema and for any path the fast dispatch does not know. Either way the answer carries the
security headers itself, and any error is the usual JSON.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

from starlette.types import Message, Receive, Scope, Send

from eventpipe.auth.origins import cors_headers
from eventpipe.core.errors import INTERNAL_MESSAGE, error_body
from eventpipe.dashboard.headers import OTHER_RAW, raw_headers
from eventpipe.ingest.errors import IngestError
from eventpipe.ingest.producer import KafkaUnavailable

log = logging.getLogger(__name__)

SUCCESS = b'{"success":true}'
_JSON = (b"content-type", b"application/json")
_SUCCESS_HEADERS = [_JSON, (b"content-length", str(len(SUCCESS)).encode()), *OTHER_RAW]
_INTERNAL = error_body("internal_error", INTERNAL_MESSAGE)


class Head(NamedTuple):
    """What the ingest path reads of a request besides its body."""

    authorization: str | None
    origin: str | None
    encoding: str | None
    query: bytes
    address: str | None


def read_head(scope: Scope) -> Head:
    authorization = origin = encoding = None
    # ASGI servers give header names in lower case; the first of a repeated header counts.
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = authorization or value.decode("latin-1")
        elif name == b"origin":
            origin = origin or value.decode("latin-1")
        elif name == b"content-encoding":
            encoding = encoding or value.decode("latin-1")
    client = scope.get("client")
    return Head(authorization, origin, encoding, scope["query_string"], client and client[0])


class ClientGone(Exception):
    """The client closed its connection before its body was in: there is no one to answer."""


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def refusal_parts(error: IngestError | KafkaUnavailable) -> tuple[int, bytes, dict[str, str]]:
    """A refused request's status, JSON body and headers."""
    if isinstance(error, KafkaUnavailable):
        return 503, error_body("kafka_unavailable", str(error)), {"Retry-After": "1"}
    extra = {} if error.index is None else {"index": error.index}
    headers = {"Retry-After": "1"} if error.status in (429, 503) else {}
    return error.status, error_body(error.code, error.message, **extra), headers


Flow = Callable[[Any, Head, AsyncIterator[bytes], "str | None"], Awaitable[None]]


def _answer_start(status: int, headers: list[tuple[bytes, bytes]], origin: str | None) -> Message:
    if origin is not None:
        headers = [*headers, *raw_headers(cors_headers(origin).items())]
    return {"type": "http.response.start", "status": status, "headers": headers}


def _error_headers(body: bytes, extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        _JSON,
        (b"content-length", str(len(body)).encode()),
        *raw_headers(extra.items()),
        *OTHER_RAW,
    ]


class IngestEndpoint:
    """One ingest route: `flow` reads and produces the request's events, or raises why not."""

    def __init__(self, implied_type: str | None, flow: Flow) -> None:
        self.implied_type = implied_type
        self.flow = flow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = read_head(scope)
        resources = scope["app"].state.resources
        try:
            await self.flow(resources, head, body_chunks(receive), self.implied_type)
            status, body, headers = 200, SUCCESS, _SUCCESS_HEADERS
        except ClientGone:
            # Closed, or cut for sending its body too slowly (api/serve.py): nothing to log.
            return
        except (IngestError, KafkaUnavailable) as error:
            status, body, extra = refusal_parts(error)
            headers = _error_headers(body, extra)
        except Exception:
            # Log the traceback for operators; the client gets no internals.
            log.exception("unhandled error on POST %s", scope["path"])
            status, body, headers = 500, _INTERNAL, _error_headers(_INTERNAL, {})
        await send(_answer_start(status, headers, head.origin))
        await send({"type": "http.response.body", "body": body})
