"""Segment's HTTP Tracking API, as pure functions: bytes in, event records or a precise error out.

The rules (field requirements, limits, clock-skew correction) are Segment's, as the official
Segment and RudderStack SDKs expect them: see docs/ingest.md.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import msgspec
import orjson

from eventpipe.domain.events import EVENT_TYPES, NULL, EventRecord
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


def parse_time(value: str | None, field: str, index: int) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        # A time without a zone is taken as UTC, as Segment does.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError as error:
        raise bad_event(index, f"{field} is not an ISO-8601 time: {value[:40]!r}") from error
    except OverflowError as error:
        raise bad_event(index, f"{field} is out of range: {value[:40]!r}") from error


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def corrected_time(
    received_at: datetime, sent_at: datetime | None, original: datetime | None
) -> datetime:
    """Segment's skew correction: the client's clock error is (sentAt - receivedAt)."""
    if sent_at is not None and original is not None:
        return received_at - (sent_at - original)
    return original or received_at


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


class _Clock:
    """A request's arrival time, and its parsed times memoised: the batch's `sentAt` is one
    string for every item, and formatting a time costs more than the rest of an event."""

    def __init__(self, received_at: datetime) -> None:
        self.received_at = received_at
        self.received_iso = iso(received_at)
        self._seen: dict[str, tuple[datetime, str] | None] = {}

    def parse(self, value: str | None, field: str, index: int) -> tuple[datetime, str] | None:
        if value is None:
            return None
        found = self._seen.get(value)
        if found is None:
            moment = parse_time(value, field, index)
            assert moment is not None  # noqa: S101 - value is not None
            # "2026-11-25T14:03:59.123Z", as the SDKs send it, is already the stored form. Every
            # separator is checked: "2026-W48-3T14:03:59.123Z" (a week date) parses too.
            canonical = len(value) == 24 and value[4:20:3] + value[23] == "--T::.Z"
            found = self._seen[value] = (moment, value if canonical else iso(moment))
        return found


def build_record(
    raw: msgspec.Raw,
    index: int,
    envelope: Envelope,
    *,
    project_id: str,
    clock: _Clock,
    client_ip: bytes | None = None,
) -> EventRecord:
    """Validate one event and turn it into the record the processor reads."""
    event = _decode_event(raw, index)
    kind = _check_type_rules(event, envelope.implied_type or event.type, index)
    user_id = _identifier(event.user_id, "userId", index)
    anonymous_id = _identifier(event.anonymous_id, "anonymousId", index)
    if user_id is None and anonymous_id is None:
        raise bad_event(index, "`userId` or `anonymousId` is required")
    message_id = _identifier(event.message_id, "messageId", index, MAX_MESSAGE_ID)
    original = clock.parse(event.original_timestamp or event.timestamp, "timestamp", index)
    sent_at = clock.parse(event.sent_at or envelope.sent_at, "sentAt", index)
    if original is None:
        timestamp_iso = clock.received_iso
    elif sent_at is None:
        timestamp_iso = original[1]
    else:
        try:
            timestamp_iso = iso(corrected_time(clock.received_at, sent_at[0], original[0]))
        except OverflowError as error:
            raise bad_event(index, "timestamp and sentAt are too far apart") from error
    context = merge_raw(
        object_or_null(envelope.context, "the batch's context", index),
        object_or_null(event.context, "context", index),
        index,
    )
    context = with_ip(context, client_ip, index)
    traits = object_or_null(event.traits, "traits", index)
    return EventRecord(
        project_id=project_id,
        # Without a client messageId a retry cannot be recognised; Segment does the same.
        message_id=message_id or f"ep-{uuid.uuid4()}",
        type=kind,
        received_at=clock.received_iso,
        timestamp=timestamp_iso,
        # "YYYY-MM-DD" of the client's own time (UTC), else of the arrival.
        day=(original[1] if original else clock.received_iso)[:10],
        original_timestamp=original[1] if original else None,
        sent_at=sent_at[1] if sent_at else None,
        user_id=user_id,
        anonymous_id=anonymous_id,
        event=event.event if kind == "track" else None,
        name=event.name,
        category=event.category,
        group_id=_identifier(event.group_id, "groupId", index),
        previous_id=_identifier(event.previous_id, "previousId", index),
        properties=object_or_null(event.properties, "properties", index),
        traits=traits_of(traits, context, index) if kind == "identify" else traits,
        context=context,
        integrations=merge_raw(
            object_or_null(envelope.integrations, "the batch's integrations", index),
            object_or_null(event.integrations, "integrations", index),
            index,
        ),
    )


def build_records(
    envelope: Envelope, *, project_id: str, received_at: datetime, client_ip: str | None = None
) -> list[EventRecord]:
    """Every event of the request, or the first problem (nothing is produced then).

    `client_ip` (the sender's address) becomes `context.ip` where the event has none."""
    check_batch_size(envelope)
    refuse_deep_events(envelope.items)
    clock = _Clock(received_at)
    ip = orjson.dumps(client_ip) if client_ip else None
    return [
        build_record(raw, index, envelope, project_id=project_id, clock=clock, client_ip=ip)
        for index, raw in enumerate(envelope.items)
    ]
