"""Segment's HTTP Tracking API, as pure functions: bytes in, event records or a precise error out.

The rules (field requirements, limits, clock-skew correction) are Segment's, as the official
Segment and RudderStack SDKs expect them: see docs/ingest.md.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import msgspec
import orjson

from eventpipe.domain.events import EVENT_TYPES, NULL, EventRecord
from eventpipe.ingest.clock import RequestClock
from eventpipe.ingest.context import merge_raw, object_or_null, traits_of, with_ip
from eventpipe.ingest.errors import IngestError, bad_event
from eventpipe.ingest.storable import (
    MAX_DEPTH,
    depth_over,
    refuse_deep_events,
    refuse_invalid_utf8,
    refuse_unstorable_numbers,
)

MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
MAX_MESSAGE_ID = 100
MAX_ID = 1024


Identifier = str | int | None


class IncomingEvent(msgspec.Struct, rename="camel"):
    type: str | None = None
    message_id: Identifier = None
    user_id: Identifier = None
    anonymous_id: Identifier = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    group_id: Identifier = None
    previous_id: Identifier = None
    timestamp: str | None = None
    original_timestamp: str | None = None
    sent_at: str | None = None
    properties: msgspec.Raw = NULL
    traits: msgspec.Raw = NULL
    context: msgspec.Raw = NULL
    integrations: msgspec.Raw = NULL


class _Envelope(msgspec.Struct, rename="camel"):
    batch: list[msgspec.Raw]
    sent_at: str | None = None
    write_key: str | None = None
    context: msgspec.Raw = NULL
    integrations: msgspec.Raw = NULL


class _WriteKeyOnly(msgspec.Struct, rename="camel"):
    write_key: str | None = None


class Envelope(msgspec.Struct, frozen=True):
    """A request's events (still raw JSON each) and what applies to all of them."""

    items: list[msgspec.Raw]
    write_key: str | None
    sent_at: str | None = None
    context: msgspec.Raw = NULL
    integrations: msgspec.Raw = NULL
    implied_type: str | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_write_key_decoder = msgspec.json.Decoder(_WriteKeyOnly)
_event_decoder = msgspec.json.Decoder(IncomingEvent)


# A JSON \u0000 escape not itself escaped (an even run of backslashes before it).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _refuse_nul(body: bytes) -> None:
    # PostgreSQL's text and jsonb cannot hold NUL: refuse it here, where the client learns why,
    # rather than have the archive reject the event later.
    if b"\\u0000" in body and _NUL_ESCAPE.search(body):
        raise IngestError(400, "nul_character", "NUL characters (\\u0000) are not accepted")


def decode_envelope(body: bytes, implied_type: str | None) -> Envelope:
    """Split a body into raw events; `implied_type` is the route's type, None for /v1/batch."""
    _refuse_nul(body)
    refuse_invalid_utf8(body)
    refuse_unstorable_numbers(body)
    try:
        if implied_type is None:
            envelope = _envelope_decoder.decode(body)
            return Envelope(
                envelope.batch,
                envelope.write_key,
                envelope.sent_at,
                envelope.context,
                envelope.integrations,
            )
        write_key = _write_key_decoder.decode(body).write_key
    except msgspec.ValidationError as error:
        raise IngestError(400, "invalid_body", f"invalid request body: {error}") from error
    except msgspec.DecodeError as error:
        raise IngestError(400, "malformed_json", f"malformed JSON: {error}") from error
    except RecursionError as error:
        raise IngestError(400, "malformed_json", "JSON nested too deeply") from error
    return Envelope([msgspec.Raw(body)], write_key, implied_type=implied_type)


def check_batch_size(envelope: Envelope) -> None:
    if not envelope.items:
        raise IngestError(400, "empty_batch", "the batch holds no events")
    if len(envelope.items) > MAX_BATCH_EVENTS:
        raise IngestError(400, "batch_too_large", f"at most {MAX_BATCH_EVENTS} events per batch")
    # The envelope's context and integrations become part of every event: they count in each.
    shared = sum(len(raw) for raw in (envelope.context, envelope.integrations) if raw != NULL)
    # Each becomes a field of every event, one level below the event's own object.
    shared_raws = (envelope.context, envelope.integrations)
    if any(depth_over(bytes(raw), MAX_DEPTH - 1) for raw in shared_raws):
        message = f"the batch's context or integrations nest deeper than {MAX_DEPTH - 1} levels"
        raise IngestError(400, "invalid_body", message)
    for index, item in enumerate(envelope.items):
        size = len(item) + shared
        if size > MAX_EVENT_BYTES:
            raise IngestError(
                400,
                "event_too_large",
                f"event {index}: {size} bytes with the batch's context, at most {MAX_EVENT_BYTES}",
                index,
            )


def _identifier(value: Identifier, field: str, index: int, limit: int = MAX_ID) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    if len(text) > limit:
        raise bad_event(index, f"{field} longer than {limit} characters")
    return text


def _decode_event(raw: msgspec.Raw, index: int) -> IncomingEvent:
    try:
        return _event_decoder.decode(raw)
    except msgspec.ValidationError as error:
        raise bad_event(index, str(error)) from error
    except msgspec.DecodeError as error:
        raise bad_event(index, f"malformed JSON: {error}") from error
    except RecursionError as error:
        raise bad_event(index, "JSON nested too deeply") from error


def _check_type_rules(event: IncomingEvent, kind: str | None, index: int) -> str:
    if kind not in EVENT_TYPES:
        expected = ", ".join(sorted(EVENT_TYPES))
        raise bad_event(index, f"unknown type {kind!r}; expected one of {expected}")
    if kind == "track" and not event.event:
        raise bad_event(index, "a track event needs `event` (its name)")
    if kind == "group" and event.group_id in (None, ""):
        raise bad_event(index, "a group event needs `groupId`")
    if kind == "alias" and (event.previous_id in (None, "") or event.user_id in (None, "")):
        raise bad_event(index, "an alias event needs `previousId` and `userId`")
    return kind


class _Shared(msgspec.Struct, frozen=True):
    """What a request gives every one of its events, checked once per request."""

    project_id: str
    clock: RequestClock
    implied_type: str | None
    sent_at: str | None
    context: msgspec.Raw
    integrations: msgspec.Raw
    client_ip: bytes | None


def _shared(envelope: Envelope, project_id: str, received_at: datetime, ip: str | None) -> _Shared:
    return _Shared(
        project_id,
        RequestClock(received_at),
        envelope.implied_type,
        envelope.sent_at,
        object_or_null(envelope.context, "the batch's context", 0),
        object_or_null(envelope.integrations, "the batch's integrations", 0),
        orjson.dumps(ip) if ip else None,
    )


def _id(value: Identifier, field: str, index: int, limit: int = MAX_ID) -> str | None:
    # Nearly every id is a short non-empty string: that case costs one check, not a call.
    if type(value) is str and 0 < len(value) <= limit:
        return value
    return None if value is None else _identifier(value, field, index, limit)


_OBJECT_OR_NULL = frozenset(b"{n")


def _objects(event: IncomingEvent, index: int) -> None:
    """`properties`, `traits`, `context` and `integrations` are each an object or null."""
    # msgspec hands back the exact JSON span, so its first byte tells the JSON type.
    for raw in (event.properties, event.traits, event.context, event.integrations):
        if raw is not NULL and memoryview(raw)[0] not in _OBJECT_OR_NULL:
            for field in ("properties", "traits", "context", "integrations"):
                object_or_null(getattr(event, field), field, index)


def build_record(raw: msgspec.Raw, index: int, shared: _Shared) -> EventRecord:
    """Validate one event and turn it into the record the processor reads."""
    event = _decode_event(raw, index)
    kind = _check_type_rules(event, shared.implied_type or event.type, index)
    user_id = _id(event.user_id, "userId", index)
    anonymous_id = _id(event.anonymous_id, "anonymousId", index)
    if user_id is None and anonymous_id is None:
        raise bad_event(index, "`userId` or `anonymousId` is required")
    message_id = _id(event.message_id, "messageId", index, MAX_MESSAGE_ID)
    clock = shared.clock
    timestamp, day, original, sent_at = clock.times(
        event.original_timestamp or event.timestamp, event.sent_at or shared.sent_at, index
    )
    _objects(event, index)
    context = with_ip(merge_raw(shared.context, event.context, index), shared.client_ip, index)
    traits = event.traits
    if kind == "identify":
        traits = traits_of(traits, context, index)
    # By position, in EventRecord's order (see there why).
    return EventRecord(
        shared.project_id,
        # Without a client messageId a retry cannot be recognised; Segment does the same.
        message_id or f"ep-{uuid.uuid4()}",
        kind,
        clock.received_iso,
        timestamp,
        day,
        original,
        sent_at,
        user_id,
        anonymous_id,
        event.event if kind == "track" else None,
        event.name,
        event.category,
        None if event.group_id is None else _id(event.group_id, "groupId", index),
        None if event.previous_id is None else _id(event.previous_id, "previousId", index),
        event.properties,
        traits,
        context,
        merge_raw(shared.integrations, event.integrations, index),
    )


def build_records(
    envelope: Envelope, *, project_id: str, received_at: datetime, client_ip: str | None = None
) -> list[EventRecord]:
    """Every event of the request, or the first problem (nothing is produced then).

    `client_ip` (the sender's address) becomes `context.ip` where the event has none."""
    check_batch_size(envelope)
    refuse_deep_events(envelope.items)
    shared = _shared(envelope, project_id, received_at, client_ip)
    return [build_record(raw, index, shared) for index, raw in enumerate(envelope.items)]
