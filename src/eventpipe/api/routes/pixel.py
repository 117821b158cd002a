"""Segment's Pixel API: `GET /v1/pixel/<type>?data=<base64 JSON>` where no script runs (emails).

The event goes through the same validation and the same rule as every other: the 1x1 GIF is
answered only once Kafka has the event; a refusal is the usual JSON error.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import Request
from fastapi.responses import Response
from starlette.routing import Route

from eventpipe.api.openapi import DocumentedRoute, Operation, raw_errors
from eventpipe.api.routes.ingest import SINGLE_TYPES, accept, refusal, with_cors
from eventpipe.ingest.errors import IngestError
from eventpipe.ingest.producer import KafkaUnavailable
from eventpipe.ingest.segment import MAX_EVENT_BYTES

# A transparent 1x1 GIF (42 bytes).
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
# Four base64 characters carry three bytes; an event larger than Segment's limit is refused.
MAX_DATA_CHARS = (MAX_EVENT_BYTES + 2) // 3 * 4
BASE64 = "^[-A-Za-z0-9+/_ ]*=*$"


def decode_data(data: str | None) -> bytes:
    """The JSON of `data`: base64, standard or URL-safe, padded or not."""
    if not data:
        raise IngestError(400, "missing_data", "send the event as base64 JSON in `data`")
    if len(data) > MAX_DATA_CHARS:
        raise IngestError(400, "event_too_large", f"at most {MAX_EVENT_BYTES} bytes per event")
    text = data.strip().replace("-", "+").replace("_", "/").replace(" ", "+")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise IngestError(400, "invalid_data", "`data` is not base64") from error


async def pixel(request: Request) -> Response:
    """One event carried in a tracking pixel's URL; the write key is `writeKey` in its JSON."""
    kind = request.path_params["type"]
    try:
        if kind not in SINGLE_TYPES:
            raise IngestError(404, "not_found", f"no pixel for {kind!r}; one of {SINGLE_TYPES}")
        await accept(request, decode_data(request.query_params.get("data")), kind)
        response = Response(GIF, media_type="image/gif", headers={"Cache-Control": "no-store"})
    except (IngestError, KafkaUnavailable) as error:
        response = refusal(error)
    return with_cors(request, response)


OPERATION: Operation = {
    "tags": ["ingest"],
    "summary": "One event in a tracking pixel's URL; the write key is `writeKey` in its JSON.",
    "parameters": [
        {"name": "type", "in": "path", "required": True, "schema": {"enum": list(SINGLE_TYPES)}},
        {
            "name": "data",
            "in": "query",
            "required": True,
            "description": "the event as base64 JSON (standard or URL-safe, padded or not)",
            "schema": {"type": "string", "maxLength": MAX_DATA_CHARS, "pattern": BASE64},
        },
    ],
    "responses": {
        "200": {
            "description": "A 1x1 GIF, once Kafka has the event",
            "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
        },
        **raw_errors(400, 401, 403, 404, 429, 503),
    },
}
routes: list[Route] = [
    DocumentedRoute("/v1/pixel/{type}", pixel, methods=["GET"], name="pixel", operation=OPERATION)
]
