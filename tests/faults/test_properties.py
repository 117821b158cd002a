"""Properties of the hostile-input path, checked by hypothesis over generated inputs.

- Validation: any body (arbitrary bytes, arbitrary JSON, events with any value in any field)
  becomes valid event records, or is refused with the IngestError that the ingest routes answer
  as a 400 JSON error; never another exception. An accepted record survives its encoding, and the
  processor can turn it into an archive row PostgreSQL accepts (UTF-8, no NUL, objects only).
- Clock skew: timestamp = receivedAt - (sentAt - originalTimestamp), in the one stored form,
  whatever ISO-8601 form the client used; `day` is the client's own UTC day.
- Aggregation: the Redis step (step.lua, on a real Redis) applied to a batch twice leaves what
  applying it once left, whether the second time is a replay of the same offsets or a client's
  retry at new ones; and what it counts is each distinct messageId once.

Examples are derandomized (the same inputs every run, as the schema fuzzing's fixed seed) and no
example database is written.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventpipe.api.routes.ingest import refusal
from eventpipe.domain.events import EVENT_TYPES, EventRecord, decode_record, encode_record
from eventpipe.domain.keys import ALL, dedupe_mark, offset_field, offsets_key, tag
from eventpipe.ingest.body import decode_content, read_limited
from eventpipe.ingest.clock import RequestClock, canonical_ms, corrected_time, iso, text_ms
from eventpipe.ingest.errors import IngestError
from eventpipe.ingest.segment import build_records, decode_envelope
from eventpipe.ingest.storable import MAX_DEPTH
from eventpipe.local.stack import StackUrls
from eventpipe.processor.aggregate import event_name
from eventpipe.processor.archive import archive_row
from eventpipe.processor.sinks import RedisStep

RECEIVED = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
STORED_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# What decode_envelope and build_records may refuse with (body.py's come from decode_content).
BODY_CODES = {
    "malformed_json", "invalid_body", "invalid_event", "event_too_large", "nul_character",
    "batch_too_large", "empty_batch", "number_out_of_range",
}  # fmt: skip
FIELDS = (
    "type", "messageId", "userId", "anonymousId", "event", "name", "category", "groupId",
    "previousId", "timestamp", "originalTimestamp", "sentAt", "properties", "traits", "context",
    "integrations", "writeKey",
)  # fmt: skip
ROUTES = (None, *sorted(EVENT_TYPES))  # None: /v1/batch
PROPERTY_SETTINGS = settings(
    max_examples=120,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- strategies ---------------------------------------------------------------------------------

# Every code point, lone surrogates included: json.dumps writes them as \ud800 escapes.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
hostile_text = st.sampled_from(
    ["", "\x00", "a\x00b", "\\u0000", "$all", "$page", "\u202e", "<script>", "'; DROP TABLE",
     "\ud800", "\udc00x", "🎉", "\x7f", "k" * 1100]
)  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
    | hostile_text
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(any_text | hostile_text, children, max_size=3)
    ),
    max_leaves=12,
)


def utc_offsets() -> st.SearchStrategy[timezone]:
    minutes = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)
    # UTC half the time: "Z" is what SDKs send, and the stored form's own suffix.
    return st.just(UTC) | minutes.map(lambda m: timezone(timedelta(minutes=m)))


moments = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 30), timezones=utc_offsets()
)


def _offset(moment: datetime, style: str) -> str:
    offset = moment.utcoffset() or timedelta(0)
    if style == "Z" and not offset:
        return "Z"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    colon = "" if style == "basic" else ":"
    return f"{sign}{minutes // 60:02d}{colon}{minutes % 60:02d}"


def _fraction(moment: datetime, digits: int) -> str:
    return "" if digits == 0 else "." + f"{moment.microsecond:06d}"[:digits]


def iso_forms(moment: datetime, digits: int, form: str) -> str:
    """`moment` in one of the ISO-8601 forms Python's fromisoformat reads; a precision of
    `digits` fractional digits (the moment is truncated to it by the caller)."""
    clock = f"{moment:%H:%M:%S}{_fraction(moment, digits)}"
    day = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    if form == "extended":
        return f"{day}T{clock}{_offset(moment, 'Z')}"
    if form == "space":
        return f"{day} {clock}{_offset(moment, 'extended')}"
    if form == "week":
        year, week, weekday = moment.isocalendar()
        return f"{year:04d}-W{week:02d}-{weekday}T{clock}{_offset(moment, 'Z')}"
    compact = f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
    return f"{compact}T{moment:%H%M%S}{_fraction(moment, digits)}{_offset(moment, 'basic')}"


@st.composite
def client_times(draw: st.DrawFn) -> tuple[datetime, str]:
    """A moment and how a client wrote it (its precision is what the text carries)."""
    digits = draw(st.sampled_from([0, 3, 3, 6]))
    moment = draw(moments)
    moment = moment.replace(
        microsecond=moment.microsecond // 10 ** (6 - digits) * 10 ** (6 - digits)
    )
    form = draw(st.sampled_from(["extended", "extended", "space", "week", "basic"]))
    return moment, iso_forms(moment, digits, form)


field_values: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(sorted(EVENT_TYPES)) | json_values,
    "messageId": any_text | st.integers() | json_values,
    "userId": any_text | st.integers() | hostile_text | json_values,
    "anonymousId": any_text | st.integers() | json_values,
    "event": any_text | hostile_text | json_values,
    "timestamp": client_times().map(lambda t: t[1]) | any_text | json_values,
    "sentAt": client_times().map(lambda t: t[1]) | json_values,
    "properties": st.dictionaries(any_text | hostile_text, json_values, max_size=4) | json_values,
    "context": st.dictionaries(st.sampled_from(["ip", "traits", "x"]), json_values) | json_values,
}
any_events = st.fixed_dictionaries(
    {}, optional={name: field_values.get(name, json_values) for name in FIELDS}
)
# Events that pass the type rules, their content hostile yet legal: every code point but NUL and
# the surrogates, markup, numbers at a double's edges. Two private-use characters mark where
# `json_bodies` then puts what json.dumps cannot write: bad bytes inside a string (IN_TEXT), a
# number literal or a deep nesting in place of a whole value (AS_VALUE).
IN_TEXT, AS_VALUE = "\ue000", "\ue001"
legal_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00") | st.just(IN_TEXT), max_size=12
)
legal_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | legal_text
    | st.sampled_from(["\\u0000", "<script>alert(1)</script>", "\u202e", "{{7*7}}", "$all"])
    | st.just(AS_VALUE),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(legal_text, children, max_size=3)
    ),
    max_leaves=12,
)
legal_events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(sorted(EVENT_TYPES)),
        "userId": legal_text.filter(bool) | st.integers(),
        "event": legal_text.filter(bool),
        "groupId": legal_text.filter(bool),
        "previousId": legal_text.filter(bool),
    },
    optional={
        "messageId": legal_text,
        "timestamp": client_times().map(lambda t: t[1]),
        "properties": st.dictionaries(legal_text, legal_values, max_size=4),
        "traits": st.dictionaries(legal_text, legal_values, max_size=3),
        "context": st.dictionaries(st.sampled_from(["ip", "traits", "page"]), legal_values),
    },
)
events = legal_events | any_events


IN_TEXT_BYTES = [b"x", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\\u0000", b"\\ud800"]
AS_VALUE_BYTES = [
    b"0", b"1e999", b"-1e400", b"1e-16384", b"1e308", b"1.7976931348623157e308", b"1.8e308",
    b"0." + b"1" * 16384, b"0." + b"1" * 16383, b"123456789012345678901234567890", b"5e-324",
    b"[" * 58 + b"]" * 58, b"[" * 70 + b"]" * 70, b"[" * 300 + b"]" * 300, b"{}",
]  # fmt: skip


def _fill_in(draw: st.DrawFn, body: bytes) -> bytes:
    for marker in (AS_VALUE.encode(), json.dumps(AS_VALUE).encode()[1:-1]):
        body = body.replace(b'"' + marker + b'"', draw(st.sampled_from(AS_VALUE_BYTES)))
    for marker in (IN_TEXT.encode(), json.dumps(IN_TEXT).encode()[1:-1]):
        body = body.replace(marker, draw(st.sampled_from(IN_TEXT_BYTES)))
    return body


@st.composite
def json_bodies(draw: st.DrawFn) -> tuple[str | None, bytes]:
    route = draw(st.sampled_from(ROUTES))
    if route is None:
        envelope = draw(
            st.fixed_dictionaries(
                {"batch": st.lists(events, max_size=4)},
                optional={"sentAt": field_values["sentAt"], "context": field_values["context"]},
            )
        )
        document: Any = envelope
    else:
        document = draw(events)
    ascii_only = draw(st.booleans())
    text = json.dumps(document, ensure_ascii=ascii_only)
    # Raw surrogates are not UTF-8: `surrogatepass` writes them as a client with a bug would.
    return route, _fill_in(draw, text.encode("utf-8", "surrogatepass"))


@st.composite
def damaged_bodies(draw: st.DrawFn) -> tuple[str | None, bytes]:
    route, body = draw(json_bodies())
    at = draw(st.integers(min_value=0, max_value=len(body)))
    noise = draw(
        st.binary(max_size=6)
        | st.sampled_from([b"\\u0000", b"\x00", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"1e999",
                           b"[" * 70, b'"', b"\\"])
    )  # fmt: skip
    return route, body[:at] + noise + body[at + draw(st.integers(0, 3)) :]


any_bodies = (
    json_bodies() | damaged_bodies() | st.tuples(st.sampled_from(ROUTES), st.binary(max_size=64))
)


# What replaces the mark in an otherwise legal event, and the outcome it must have.
FILLINGS: dict[str, tuple[str, bytes, str]] = {
    "plain text": (IN_TEXT, b"x", "accepted"),
    "a byte that is never UTF-8": (IN_TEXT, b"\xff", "malformed_json"),
    "an overlong encoding": (IN_TEXT, b"\xc0\xaf", "malformed_json"),
    "a surrogate encoded as UTF-8": (IN_TEXT, b"\xed\xa0\x80", "malformed_json"),
    "a truncated sequence": (IN_TEXT, b"\xe2\x82", "malformed_json"),
    "a NUL escape": (IN_TEXT, b"\\u0000", "nul_character"),
    "a lone surrogate escape": (IN_TEXT, b"\\ud800", "malformed_json"),
    "zero": (AS_VALUE, b"0", "accepted"),
    "1e308": (AS_VALUE, b"1e308", "accepted"),
    "the largest double": (AS_VALUE, b"1.7976931348623157e308", "accepted"),
    "the smallest double": (AS_VALUE, b"5e-324", "accepted"),
    "a 30-digit integer": (AS_VALUE, b"123456789012345678901234567890", "accepted"),
    "16383 decimals": (AS_VALUE, b"0." + b"1" * 16383, "accepted"),
    "1e999": (AS_VALUE, b"1e999", "number_out_of_range"),
    "-1e400": (AS_VALUE, b"-1e400", "number_out_of_range"),
    "1.8e308": (AS_VALUE, b"1.8e308", "number_out_of_range"),
    "1e-16384": (AS_VALUE, b"1e-16384", "number_out_of_range"),
    "16384 decimals": (AS_VALUE, b"0." + b"1" * 16384, "number_out_of_range"),
    "nested 58 deep": (AS_VALUE, b"[" * 58 + b"]" * 58, "accepted"),
    "nested 70 deep": (AS_VALUE, b"[" * 70 + b"]" * 70, "invalid_event"),
    "nested 300 deep": (AS_VALUE, b"[" * 300 + b"]" * 300, "invalid_event"),
}


@st.composite
def marked_bodies(draw: st.DrawFn, kind: str, filling: bytes) -> tuple[str | None, bytes]:
    """A legal event, one of its values (text in any field, or a whole value in a raw field)
    replaced by what json.dumps cannot write."""
    route = draw(st.sampled_from(ROUTES))
    event = draw(legal_events)
    if kind == IN_TEXT:
        where = draw(st.sampled_from(["properties", "traits", "context", "key", "event", "userId"]))
        mark = f"a{IN_TEXT}b"
        if where == "key":
            event["properties"] = {mark: 1}
        else:
            event[where] = {"k": mark} if where in ("properties", "traits", "context") else mark
    else:
        event[draw(st.sampled_from(["properties", "traits", "context"]))] = {"k": AS_VALUE}
    document = event if route is not None else {"batch": [event]}
    text = json.dumps(document, ensure_ascii=draw(st.booleans())).encode()
    for marker in (kind.encode(), json.dumps(kind).encode()[1:-1]):
        if kind == IN_TEXT:
            text = text.replace(marker, filling)
        else:  # once: legal values hold the mark too, and 16 KB numbers add up
            text = text.replace(b'"' + marker + b'"', filling, 1).replace(
                b'"' + marker + b'"', b"0"
            )
    return route, text


# --- (a) validation -----------------------------------------------------------------------------


def ingest(body: bytes, route: str | None, received: datetime = RECEIVED) -> list[EventRecord]:
    """What the ingest routes do with a decoded body, short of Kafka."""
    envelope = decode_envelope(body, route)
    return build_records(envelope, project_id="p-1", received_at=received, client_ip="203.0.113.9")


def assert_refused_as_the_routes_answer_it(error: IngestError) -> None:
    assert error.status == 400, error.message
    assert error.code in BODY_CODES, error.code
    answer = refusal(error)
    assert answer.status_code == 400
    assert answer.media_type == "application/json"
    shown = orjson.loads(bytes(answer.body))["error"]
    assert shown["code"] == error.code and shown["message"] == error.message


def _storable_number(literal: str) -> int:
    # A double holds it (what a reader gets back) and PostgreSQL's numeric keeps its decimals.
    assert math.isfinite(float(literal)), literal[:40]
    exponent = Decimal(literal).as_tuple().exponent
    assert isinstance(exponent, int) and -exponent <= 16383, literal[:40]
    return 0


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def assert_json_object_or_null(raw: msgspec.Raw) -> None:
    """A raw field the archive stores and every reader gives back."""
    text = bytes(raw)
    text.decode()  # UTF-8, or the archive's text conversion fails
    assert b"\\u0000" not in text.replace(b"\\\\", b""), text
    value = json.loads(text, parse_int=_storable_number, parse_float=_storable_number)
    assert isinstance(value, dict | None), text
    # One level below the event's own object; the readers (pydantic, orjson) stop at 255.
    assert _depth(value) <= MAX_DEPTH - 1, text[:80]


def assert_archivable(record: EventRecord) -> None:
    assert decode_record(encode_record(record)) == record
    assert record.type in EVENT_TYPES
    assert record.user_id or record.anonymous_id
    for stored in (record.received_at, record.timestamp):
        assert STORED_TIME.match(stored), stored
    for optional in (record.original_timestamp, record.sent_at):
        assert optional is None or STORED_TIME.match(optional), optional
    assert record.day == (record.original_timestamp or record.received_at)[:10]
    date.fromisoformat(record.day)
    for raw in (record.properties, record.traits, record.context, record.integrations):
        assert_json_object_or_null(raw)
    row = archive_row(record, 0, 0)
    for value in row:
        if isinstance(value, str):
            assert "\x00" not in value
            value.encode()  # no lone surrogate: PostgreSQL text is UTF-8


def assert_valid_records_or_a_400(
    bodies: st.SearchStrategy[tuple[str | None, bytes]], examples: int = 120
) -> Counter[str]:
    """The property over `bodies`; how many were accepted and refused with each code."""
    outcomes: Counter[str] = Counter()

    @settings(PROPERTY_SETTINGS, max_examples=examples)
    @given(bodies)
    def check(case: tuple[str | None, bytes]) -> None:
        route, body = case
        try:
            records = ingest(body, route)
        except IngestError as error:
            assert_refused_as_the_routes_answer_it(error)
            outcomes[error.code] += 1
            return
        assert records
        for record in records:
            assert_archivable(record)
        outcomes["accepted"] += 1

    check()
    return outcomes


def test_any_body_becomes_valid_records_or_a_400() -> None:
    outcomes = assert_valid_records_or_a_400(any_bodies)
    # The control: the inputs reach acceptance and the main refusals alike (a generator that
    # only ever made malformed bodies would pass the property vacuously).
    assert outcomes["accepted"] >= 20, outcomes
    assert {"malformed_json", "invalid_event", "nul_character"} <= outcomes.keys(), outcomes


@pytest.mark.parametrize("filling", FILLINGS.values(), ids=FILLINGS.keys())
def test_one_bad_value_in_a_legal_event_is_refused_not_stored(
    filling: tuple[str, bytes, str],
) -> None:
    """Invalid UTF-8, NUL, lone surrogates, numbers past a double or PostgreSQL's numeric, and
    nesting past the readers, in the raw fields, keys and text fields of an otherwise valid
    event: what PostgreSQL or a reader would refuse later is refused here; the rest is stored."""
    kind, value, expected = filling
    outcomes = assert_valid_records_or_a_400(marked_bodies(kind, value), examples=12)
    assert set(outcomes) == {expected}, outcomes


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(["gzip", "x-gzip", "GZIP", "br", "identity"]))
def test_any_content_encoding_is_decoded_within_the_limit_or_a_400(
    body: bytes, encoding: str
) -> None:
    for sent in (body, gzip.compress(body)):
        try:
            data = decode_content(sent, encoding, limit=1024)
        except IngestError as error:
            assert error.status == 400
            assert error.code in {"unsupported_encoding", "malformed_gzip", "request_too_large"}
            continue
        assert len(data) <= 1024
        if encoding.lower() == "identity":
            assert data == sent
        elif sent is not body:
            assert data == body  # a real gzip of at most the limit comes back whole


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=8))
def test_a_body_is_read_whole_or_refused_past_the_limit(parts: list[bytes]) -> None:
    whole = b"".join(parts)
    try:
        read = asyncio.run(read_limited(_chunks(parts), limit=1000))
    except IngestError as error:
        assert (error.status, error.code) == (400, "request_too_large")
        assert len(whole) > 1000
        return
    assert read == whole and len(whole) <= 1000


# --- (b) clock skew -----------------------------------------------------------------------------


def ms_floor(moment: datetime) -> datetime:
    return moment - timedelta(microseconds=moment.microsecond % 1000)


receptions = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@PROPERTY_SETTINGS
@given(client_times(), client_times() | st.none(), receptions, st.sampled_from(["batch", "own"]))
def test_timestamp_is_corrected_by_the_clients_skew_in_one_form(
    original: tuple[datetime, str],
    sent: tuple[datetime, str] | None,
    received: datetime,
    where: str,
) -> None:
    event: dict[str, Any] = {"type": "track", "userId": "u", "event": "E", "timestamp": original[1]}
    envelope: dict[str, Any] = {"batch": [event]}
    if sent is not None:
        (event if where == "own" else envelope)["sentAt"] = sent[1]
    try:
        (record,) = ingest(json.dumps(envelope).encode(), None, received)
    except IngestError as error:
        # Only a correction that leaves the calendar (before year 1, after 9999) is refused.
        assert sent is not None and error.code == "invalid_event", error.message
        with pytest.raises(OverflowError):
            received - (sent[0] - original[0])
        return
    client_time = ms_floor(original[0].astimezone(UTC))
    assert record.original_timestamp is not None
    assert STORED_TIME.match(record.original_timestamp), record.original_timestamp
    assert datetime.fromisoformat(record.original_timestamp) == client_time
    # The client's own UTC day: a retry, sent later, files the event under the same day.
    assert record.day == client_time.date().isoformat()
    assert record.received_at == f"{ms_floor(received):%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z"
    assert STORED_TIME.match(record.timestamp), record.timestamp
    if sent is None:
        assert record.timestamp == record.original_timestamp and record.sent_at is None
        return
    expected = ms_floor(received - (sent[0] - original[0]))
    assert datetime.fromisoformat(record.timestamp) == expected
    assert record.sent_at is not None
    assert datetime.fromisoformat(record.sent_at) == ms_floor(sent[0].astimezone(UTC))


stored_times = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
).map(iso)


@PROPERTY_SETTINGS
@given(stored_times, stored_times, receptions)
def test_the_millisecond_arithmetic_equals_datetimes(
    original: str, sent: str, received: datetime
) -> None:
    """The fast path (integer milliseconds, memoised seconds) against datetime, the reference."""
    assert text_ms(canonical_ms(original) or 0) == original
    try:
        reference = iso(corrected_time(received, parse_utc(sent), parse_utc(original)))
    except OverflowError:
        with pytest.raises(IngestError, match="too far apart"):
            RequestClock(received).times(original, sent, 0)
        return
    assert RequestClock(received).times(original, sent, 0) == (
        reference,
        original[:10],
        original,
        sent,
    )


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@settings(max_examples=50, derandomize=True, database=None, deadline=None)
@given(receptions)
def test_without_a_client_time_the_arrival_is_the_time_and_the_day(received: datetime) -> None:
    (record,) = ingest(b'{"userId": "u", "sentAt": "2001-02-03T04:05:06Z"}', "identify", received)
    assert record.timestamp == record.received_at
    assert record.original_timestamp is None
    assert record.day == received.date().isoformat() == record.received_at[:10]


def test_a_week_date_time_is_stored_in_the_one_form() -> None:
    """The example hypothesis found: 24 characters with `T` at 10, `.` at 19 and `Z` at 23 were
    taken for the stored form, and "2026-W48-3" became the event's day."""
    body = b'{"userId": "u", "event": "E", "timestamp": "2026-W48-3T14:03:59.123Z"}'
    (record,) = ingest(body, "track")
    assert (record.day, record.timestamp) == ("2026-11-25", "2026-11-25T14:03:59.123Z")


# --- (c) aggregation: the Redis step is idempotent ----------------------------------------------


@pytest.fixture(scope="module")
def redis_client(stack_urls: StackUrls) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack_urls.redis_url)
    yield client
    client.close()


names = st.sampled_from(["Signed Up", "Order Completed", ALL, "$page", "ünï 🎉", "a:b{p1}"])
moments_in_two_hours = st.integers(min_value=0, max_value=2 * 3600 * 1000 - 1).map(
    lambda ms: datetime(2026, 11, 25, 23, 0, tzinfo=UTC) + timedelta(milliseconds=ms)
)
event_shapes = st.tuples(
    st.sampled_from([f"m{i}" for i in range(8)]),  # few ids: duplicates within a batch
    st.sampled_from(["track"] * 5 + sorted(EVENT_TYPES)),
    names,
    st.sampled_from(["u1", "u2", "u3", "anonymous"]),
    moments_in_two_hours,
)
Shape = tuple[str, str, str, str, datetime]


def make_record(project: str, shape: Shape) -> EventRecord:
    message_id, kind, name, user, moment = shape
    stamp = f"{moment:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z"
    return EventRecord(
        project_id=project, message_id=message_id, type=kind, received_at=stamp,
        timestamp=stamp, day=stamp[:10], user_id=None if user == "anonymous" else user,
        anonymous_id="anon-1" if user == "anonymous" else None,
        event=name if kind == "track" else None,
    )  # fmt: skip


def snapshot(client: redis.Redis, partition: int, project: str) -> dict[str, Any]:
    """Every aggregate key of one project in one partition and its value, keyed without the
    project id (so two projects' snapshots compare)."""
    found: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{tag(partition)}:*{project}*", count=1000):
        name = key.decode().replace(project, "P")
        kind = client.type(key)
        if kind == b"zset":
            pairs = client.zrange(key, 0, -1, withscores=True)
            assert isinstance(pairs, list)  # the sync client: not an awaitable
            found[name] = dict(pairs)
        elif kind == b"hash":
            found[name] = client.hgetall(key)
        else:
            # A HyperLogLog's registers (its first 16 bytes cache the count, set by PFCOUNT).
            registers = client.get(key)
            assert isinstance(registers, bytes)
            found[name] = (registers[16:], client.pfcount(key))
    return found


def expected_counts(records: list[EventRecord]) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """Totals per name and per (minute, name): each distinct messageId once, its first copy;
    `$all` is every event, once, also when an event's own name is `$all`."""
    totals: Counter[str] = Counter()
    minutes: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    for record in records:
        if record.message_id in seen:
            continue
        seen.add(record.message_id)
        minute = record.timestamp[:16]
        for member in {event_name(record), ALL}:
            totals[member] += 1
            minutes[(minute, member)] += 1
    return totals, minutes


def counted(state: dict[str, Any]) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    totals: Counter[str] = Counter()
    minutes: Counter[tuple[str, str]] = Counter()
    for key, value in state.items():
        if ":total:" in key:
            totals.update({k.decode(): int(v) for k, v in value.items()})
        elif ":counts:minute:" in key:
            digits = key.rsplit(":", 1)[1]
            minute = f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:]}"
            minutes.update({(minute, k.decode()): int(v) for k, v in value.items()})
    return totals, minutes


def forget(client: redis.Redis, partition: int, projects: list[str], field: str) -> None:
    for project in projects:
        keys = list(client.scan_iter(match=f"{tag(partition)}:*{project}*", count=1000))
        keys += [dedupe_mark(partition, project, f"m{i}") for i in range(8)]
        client.delete(*keys)
    client.hdel(offsets_key(partition), field)


@settings(max_examples=30, derandomize=True, database=None, deadline=None)
@given(st.lists(event_shapes, min_size=1, max_size=12), st.integers(min_value=0, max_value=11))
def test_aggregating_a_batch_twice_equals_aggregating_it_once(
    redis_client: redis.Redis, shapes: list[Shape], partition: int
) -> None:
    once, doubled = str(uuid.uuid4()), str(uuid.uuid4())
    group = f"properties-{uuid.uuid4().hex}"
    step = RedisStep(redis_client, group=group, topic="t", dedupe_ttl_s=3600)
    batch = [make_record(once, shape) for shape in shapes]
    size = len(batch)
    try:
        first = step.apply(partition, batch, 0, size)
        state = snapshot(redis_client, partition, once)
        assert counted(state) == expected_counts(batch)
        assert first.new + first.duplicates == size
        assert first.new == len({record.message_id for record in batch})

        # A replay of the same offsets (a crash before the commit) changes nothing at all.
        assert step.apply(partition, batch, 0, size).skipped
        assert snapshot(redis_client, partition, once) == state
        # A client's retry: the same messages again, at new offsets. Every one is a duplicate.
        again = step.apply(partition, batch, size, 2 * size)
        assert (again.new, again.duplicates) == (0, size)
        assert snapshot(redis_client, partition, once) == state

        # The batch followed by itself in one step counts as the batch once.
        twice = [make_record(doubled, shape) for shape in shapes] * 2
        step.apply(partition, twice, 2 * size, 4 * size)
        assert snapshot(redis_client, partition, doubled) == state
    finally:
        forget(redis_client, partition, [once, doubled], offset_field(group, "t"))


def test_an_event_named_all_is_counted_once_in_the_total(redis_client: redis.Redis) -> None:
    """The example hypothesis found: a track event named `$all` (the total's own member) was
    added to the total twice, once as its name and once as an event."""
    project, group = str(uuid.uuid4()), f"properties-{uuid.uuid4().hex}"
    step = RedisStep(redis_client, group=group, topic="t", dedupe_ttl_s=3600)
    moment = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    batch = [make_record(project, ("m0", "track", ALL, "u1", moment)),
             make_record(project, ("m1", "track", "Other", "u1", moment))]  # fmt: skip
    try:
        step.apply(3, batch, 0, 2)
        totals, _ = counted(snapshot(redis_client, 3, project))
        assert totals == {ALL: 2, "Other": 1}
    finally:
        forget(redis_client, 3, [project], offset_field(group, "t"))
