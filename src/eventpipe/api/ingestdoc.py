"""The OpenAPI description of Segment's Tracking API as the ingest routes take it; docs/ingest.md
has every rule (which fields each type needs, the limits)."""

from __future__ import annotations

from typing import Any

from eventpipe.api.openapi import JSON, Operation, raw_errors
from eventpipe.domain.events import EVENT_TYPES
from eventpipe.ingest.segment import MAX_BATCH_EVENTS, MAX_ID

_ID = {"type": ["string", "integer", "null"], "maxLength": MAX_ID}
_TIME = {"type": ["string", "null"], "description": "ISO-8601"}
_OBJECT = {"type": ["object", "null"]}
_TEXT = {"type": ["string", "null"]}
_EVENT = {
    "type": "object",
    "description": "One event; which fields each type needs is in docs/ingest.md.",
    "properties": {
        "type": {"type": "string", "enum": sorted(EVENT_TYPES)},
        **dict.fromkeys(("messageId", "userId", "anonymousId", "groupId", "previousId"), _ID),
        **dict.fromkeys(("event", "name", "category", "writeKey"), _TEXT),
        **dict.fromkeys(("timestamp", "originalTimestamp", "sentAt"), _TIME),
        **dict.fromkeys(("properties", "traits", "context", "integrations"), _OBJECT),
    },
}
_BATCH = {
    "type": "object",
    "description": f"At most {MAX_BATCH_EVENTS} events.",
    "required": ["batch"],
    "properties": {
        "batch": {"type": "array", "items": {"$ref": "#/components/schemas/SegmentEvent"}},
        "sentAt": _TIME,
        "writeKey": _TEXT,
        "context": _OBJECT,
        "integrations": _OBJECT,
    },
}
COMPONENTS: dict[str, dict[str, Any]] = {
    "securitySchemes": {
        "writeKey": {"type": "http", "scheme": "basic", "description": "the write key as user"}
    },
    "schemas": {"SegmentEvent": _EVENT, "SegmentBatch": _BATCH},
}
# A valid event of each type (the batch example holds one of each).
_EVENTS: dict[str, dict[str, Any]] = {
    "track": {"userId": "user-1", "event": "Order Completed", "properties": {"revenue": 42}},
    "identify": {"userId": "user-1", "traits": {"plan": "pro"}},
    "page": {"anonymousId": "anon-1", "name": "Pricing"},
    "screen": {"userId": "user-1", "name": "Settings"},
    "group": {"userId": "user-1", "groupId": "acme"},
    "alias": {"userId": "user-1", "previousId": "anon-1"},
}
EXAMPLES = {**_EVENTS, "batch": {"batch": [{"type": k, **v} for k, v in _EVENTS.items()]}}

# The key is Basic auth's user, else `?writeKey=`, else `writeKey` in the body.
KEY_SECURITY: list[dict[str, list[str]]] = [{"writeKey": []}, {}]
KEY_QUERY = {"name": "writeKey", "in": "query", "required": False, "schema": {"type": "string"}}
_ENCODING = {"name": "Content-Encoding", "in": "header", "schema": {"enum": ["gzip", "identity"]}}
_SUCCESS = {"type": "object", "properties": {"success": {"const": True}}, "required": ["success"]}


def ingest_operation(summary: str, body: str, example: dict[str, Any]) -> Operation:
    """A POST of events; `body`: the name of its body's schema."""
    content = {"schema": {"$ref": f"#/components/schemas/{body}"}, "example": example}
    return {
        "tags": ["ingest"],
        "summary": summary,
        "description": "Answered once Kafka has acknowledged every event of the request.",
        "security": KEY_SECURITY,
        "parameters": [KEY_QUERY, _ENCODING],
        "requestBody": {"required": True, "content": {JSON: content}},
        "responses": {
            "200": {"description": "Kafka has the events", "content": {JSON: {"schema": _SUCCESS}}},
            **raw_errors(400, 401, 403, 429, 503),
        },
    }


PREFLIGHT: Operation = {
    "tags": ["ingest"],
    "summary": "A browser's CORS preflight: any origin may ask; the write key decides.",
    "parameters": [
        {"name": "Origin", "in": "header", "required": True, "schema": {"type": "string"}},
        {"name": "Access-Control-Request-Headers", "in": "header", "schema": {"type": "string"}},
    ],
    "responses": {"204": {"description": "The CORS headers"}, **raw_errors(400)},
}
