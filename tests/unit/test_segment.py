from __future__ import annotations

import gzip
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest

from eventpipe.domain.events import decode_record, encode_record, record_key
from eventpipe.ingest import storable
from eventpipe.ingest.body import decode_content
from eventpipe.ingest.clock import corrected_time
from eventpipe.ingest.errors import IngestError
from eventpipe.ingest.segment import (
    MAX_EVENT_BYTES,
    MAX_REQUEST_BYTES,
    build_records,
    decode_envelope,
)

RECEIVED = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def _batch(*events: Mapping[str, object], **envelope: object) -> bytes:
    return orjson.dumps({"batch": list(events), **envelope})


def _records(body: bytes, implied: str | None = None) -> list[object]:
    envelope = decode_envelope(body, implied)
    return list(build_records(envelope, project_id="p1", received_at=RECEIVED))


def _error(body: bytes, implied: str | None = None) -> IngestError:
    with pytest.raises(IngestError) as caught:
        _records(body, implied)
    return caught.value


def test_track_fields_are_kept_and_raw_json_untouched() -> None:
    body = _batch(
        {
            "type": "track",
            "event": "Signed Up",
            "userId": 42,
            "messageId": "m-1",
            "properties": {"plan": "pro", "n": [1, 2.5, None]},
            "context": {"ip": "1.2.3.4"},
            "integrations": {"All": False},
        }
    )
    envelope = decode_envelope(body, None)
    (record,) = build_records(envelope, project_id="p1", received_at=RECEIVED)
    assert record.user_id == "42"
    assert record.message_id == "m-1"
    assert orjson.loads(bytes(record.properties)) == {"plan": "pro", "n": [1, 2.5, None]}
    assert orjson.loads(bytes(record.integrations)) == {"All": False}
    assert record_key(record) == b"p1:42"
    assert decode_record(encode_record(record)) == record


def test_skew_correction_follows_segment() -> None:
    client_ahead = timedelta(hours=1)
    original = RECEIVED - timedelta(seconds=30) + client_ahead
    sent = RECEIVED + client_ahead
    assert corrected_time(RECEIVED, sent, original) == RECEIVED - timedelta(seconds=30)
    assert corrected_time(RECEIVED, None, original) == original
    assert corrected_time(RECEIVED, None, None) == RECEIVED


def test_envelope_sent_at_and_context_apply_to_items() -> None:
    body = _batch(
        {"type": "page", "anonymousId": "a", "timestamp": "2026-11-25T13:00:00Z",
         "context": {"page": {"path": "/"}, "ip": "item"}},
        sentAt="2026-11-25T13:00:10Z",
        context={"ip": "envelope", "library": {"name": "x"}},
    )  # fmt: skip
    envelope = decode_envelope(body, None)
    (record,) = build_records(envelope, project_id="p1", received_at=RECEIVED)
    assert record.timestamp == "2026-11-25T11:59:50.000Z"
    assert record.original_timestamp == "2026-11-25T13:00:00.000Z"
    assert record.day == "2026-11-25"
    assert orjson.loads(bytes(record.context)) == {
        "ip": "item", "library": {"name": "x"}, "page": {"path": "/"},
    }  # fmt: skip


def test_message_id_generated_when_absent() -> None:
    body = orjson.dumps({"userId": "u", "traits": {"a": 1}})
    (first,) = build_records(
        decode_envelope(body, "identify"), project_id="p", received_at=RECEIVED
    )
    (second,) = build_records(
        decode_envelope(body, "identify"), project_id="p", received_at=RECEIVED
    )
    assert first.message_id != second.message_id
    assert first.type == "identify"


@pytest.mark.parametrize(
    ("event", "needle"),
    [
        ({"type": "track", "event": "e"}, "userId` or `anonymousId"),
        ({"type": "track", "userId": "u"}, "needs `event`"),
        ({"type": "click", "userId": "u"}, "unknown type 'click'"),
        ({"type": "alias", "userId": "u"}, "previousId"),
        ({"type": "group", "userId": "u"}, "groupId"),
        ({"type": "track", "userId": "u", "event": "e", "timestamp": "yesterday"}, "ISO-8601"),
        ({"type": "track", "userId": "u", "event": "e", "properties": [1]}, "JSON object"),
        ({"type": "track", "userId": "u", "event": "e", "messageId": "m" * 101}, "messageId"),
        ({"type": "track", "userId": "u", "event": 5}, "Expected `str"),
    ],
)
def test_invalid_events_name_problem_and_index(event: dict[str, object], needle: str) -> None:
    good = {"type": "track", "userId": "u", "event": "ok"}
    error = _error(_batch(good, event))
    assert (error.status, error.code, error.index) == (400, "invalid_event", 1)
    assert needle in error.message


def test_oversized_event_is_refused_with_its_index() -> None:
    big = {"type": "track", "userId": "u", "event": "e", "properties": {"x": "y" * MAX_EVENT_BYTES}}
    error = _error(_batch({"type": "track", "userId": "u", "event": "e"}, big))
    assert (error.status, error.code, error.index) == (400, "event_too_large", 1)


def test_malformed_json_and_empty_batch() -> None:
    assert _error(b'{"batch": [').code == "malformed_json"
    assert _error(b'{"batch": {}}').code == "invalid_body"
    assert _error(_batch()).code == "empty_batch"


def test_gzip_is_inflated_within_bounds() -> None:
    payload = _batch({"type": "track", "userId": "u", "event": "e"})
    assert decode_content(gzip.compress(payload), "gzip") == payload
    bomb = gzip.compress(b" " * (MAX_REQUEST_BYTES * 20))
    with pytest.raises(IngestError, match="once decompressed"):
        decode_content(bomb, "gzip")
    with pytest.raises(IngestError, match="damaged"):
        decode_content(b"not gzip at all", "gzip")
    with pytest.raises(IngestError, match="truncated"):
        decode_content(gzip.compress(payload)[:-12], "gzip")
    with pytest.raises(IngestError, match="not gzip"):
        decode_content(payload, "br")


def test_nul_characters_are_refused_but_an_escaped_backslash_is_not() -> None:
    event = {"type": "track", "userId": "u", "event": "e", "properties": {"a": "x\u0000y"}}
    assert _error(_batch(event)).code == "nul_character"
    literal = {"type": "track", "userId": "u", "event": "e", "properties": {"a": "\\u0000"}}
    (record,) = _records(_batch(literal))
    assert record is not None


def test_hex_ids_that_look_like_exponents_cost_no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quarter of uuid4s hold `<digit>e<3 digits>`: a batch of them must not fall back to
    parsing the whole body in Python (it did past 64, at ~7 us per event), and a real number
    past a double's range beside them is still refused."""
    ids = [f"ab12e345-{n:04d}-4a67-8b90-0123456789ab" for n in range(100)]
    page = {"path": "/pricing", "title": "Pricing - Example", "url": "https://example.com/pricing"}
    events: list[dict[str, object]] = [
        {"type": "track", "userId": "u", "event": "E", "messageId": i, "properties": page}
        for i in ids
    ]
    parses: list[bytes] = []
    monkeypatch.setattr(storable, "json", SimpleNamespace(loads=parses.append))
    assert len(_records(_batch(*events))) == 100
    assert parses == []
    events[-1]["properties"] = {"big": "PLACEHOLDER"}
    body = _batch(*events).replace(b'"PLACEHOLDER"', b"1e400")
    monkeypatch.undo()
    assert _error(body).code == "number_out_of_range"
