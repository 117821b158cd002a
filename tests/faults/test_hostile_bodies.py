"""Hostile request bodies against the real api, what tests/integration/test_ingest.py leaves out.

Covered there: a 520 KB batch, a 200 MiB gzip bomb (in-process memory), damaged and truncated
gzip, properties nested 1000 deep, form/text/octet-stream/no content type with gzip bodies,
hostile times and numbers merged from the envelope. Here:

- refusals: nesting one level past the limit and in the envelope, gzip in gzip, stacked and
  lying gzip, invalid UTF-8 in every kind of field, NUL in keys, values, ids and credentials,
  numbers PostgreSQL or a double cannot hold, bodies that are not JSON whatever their label.
  Each is a 400 (401 for a credential) JSON error saying what is wrong, and nothing reaches Kafka;
- acceptance: what is legal but unusual (the deepest nesting allowed, numbers at a double's
  edges, `\\u0000` as text, markup, RTL overrides, duplicate keys, a week-date time, no content
  type or a charset label that lies) is archived by a real processor, nothing dead-lettered,
  and read back the same through the event search and the event page;
- duplicate keys: the last occurrence wins, for the fields eventpipe reads (as msgspec decodes)
  and inside the JSON it stores (as PostgreSQL's jsonb keeps it, and JSON.parse reads it);
- memory and time: a 256 MiB body (declared, or chunked) and a 400 MiB gzip bomb sent over a
  socket to the api served by uvicorn: answered 400 long before the body ends, the peak of the
  memory every thread allocates (tracemalloc) barely moving.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import select
import socket
import struct
import threading
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import psycopg
import pytest
import uvicorn
from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient

from eventpipe.api.app import create_app
from eventpipe.core.config import Settings
from eventpipe.core.kafka import consumer_config, ensure_topics, producer_config
from eventpipe.core.signals import StopFlag
from eventpipe.domain.events import EventRecord, encode_record, record_key
from eventpipe.local.process import free_port
from eventpipe.processor.app import run_processor
from tests.integration import conftest as integration_fixtures
from tests.integration import ingest_fixtures
from tests.integration.support import (
    delete_topics,
    wait_for,
)
from tests.integration.test_ingest import (
    Account,
    Delivered,
    basic,
    by_message_id,
    json_value,
    post_event,
    read_topic,
)

pytestmark = pytest.mark.integration

# The integration tests' fixtures, found by name in this module: a fresh topic, database,
# in-process api, owner, project and write key per test.
unique = integration_fixtures.unique
topic = integration_fixtures.topic
database_url = integration_fixtures.database_url
settings = integration_fixtures.settings
app_settings = ingest_fixtures.app_settings
client = ingest_fixtures.client
account_factory = ingest_fixtures.account_factory
owner = ingest_fixtures.owner
project_id = ingest_fixtures.project_id
write_key = ingest_fixtures.write_key
topic_records = ingest_fixtures.topic_records
sentinel = ingest_fixtures.sentinel

MiB = 1 << 20
GZIP = {"Content-Encoding": "gzip"}
Json = dict[str, Any]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def event(**fields: Any) -> Json:
    return {"userId": "u", "event": "E", **fields}


def raw(*parts: str | bytes) -> bytes:
    return b"".join(part.encode() if isinstance(part, str) else part for part in parts)


def batch_of(*items: Json, **envelope: Any) -> bytes:
    return json.dumps({"batch": [{"type": "track", **item} for item in items], **envelope}).encode()


def gzip_bomb(inflated_mib: int, *, claimed_size: int | None = None) -> bytes:
    """A gzip'd batch whose one event inflates to `inflated_mib` MiB of spaces; its trailer
    tells the truth unless `claimed_size` is given. One compressed MiB, repeated (a full flush
    makes each the same), builds it in milliseconds instead of compressing it all."""
    head, block = b'{"batch": [{"type": "track", "userId": "u", "event": "E", "p": "', b" " * MiB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    piece = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH) == piece
    end = deflate.compress(b'"}]}') + deflate.flush()
    crc = zlib.crc32(head)
    for _ in range(inflated_mib):
        crc = zlib.crc32(block, crc)
    size = len(head) + inflated_mib * MiB + 4
    trailer = struct.pack("<II", zlib.crc32(b'"}]}', crc), (claimed_size or size) & 0xFFFFFFFF)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + start + piece * inflated_mib + end + trailer


def gzip_with_trailer(data: bytes, *, crc: int | None = None, size: int | None = None) -> bytes:
    """A gzip member of `data` whose trailer claims this CRC and length."""
    packed = bytearray(gzip.compress(data))
    real_crc, real_size = struct.unpack("<II", packed[-8:])
    packed[-8:] = struct.pack("<II", real_crc if crc is None else crc, size or real_size)
    return bytes(packed)


def pixel_data(document: bytes) -> str:
    return base64.urlsafe_b64encode(document).decode().rstrip("=")


# --- refusals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    path: str
    body: bytes
    code: str
    says: str  # a word the error message must hold: it says what is wrong
    headers: dict[str, str] | None = None
    status: int = 400
    method: str = "POST"
    keyed: bool = True  # sent with the write key as Basic auth


BOMB_100_MIB = gzip_bomb(100)
PIXEL = "/v1/pixel/track?data="
HOSTILE: dict[str, Hostile] = {
    # Nesting: past the limit by one, where it hides, and a body that is nothing but brackets.
    "properties nested 65 deep (the event 1, properties 2, 63 arrays)": Hostile(
        "/v1/track", raw('{"userId": "u", "event": "E", "properties": {"d": ', nested(63), "}}"),
        "invalid_event", "nested",
    ),
    "a batch item's integrations nested 70 deep": Hostile(
        "/v1/batch", batch_of(event(integrations={"x": json.loads(nested(68))})),
        "invalid_event", "nested",
    ),
    "the batch's context nested 64 deep (65 in each event)": Hostile(
        "/v1/batch", batch_of(event(), context={"d": json.loads(nested(63))}),
        "invalid_body", "nest",
    ),
    "an identify whose traits are in a context nested 200 deep": Hostile(
        "/v1/identify", raw('{"userId": "u", "context": {"traits": ', nested(200), "}}"),
        "invalid_event", "nested",
    ),
    "a batch that is 200,000 brackets deep": Hostile(
        "/v1/batch", raw('{"batch": ', nested(100_000), "}"), "malformed_json", "nested",
    ),
    # Compression: layers, stacked encodings, lying trailers.
    "gzip inside gzip": Hostile(
        "/v1/batch", gzip.compress(gzip.compress(batch_of(event()))), "malformed_json", "JSON",
        GZIP,
    ),
    "a 100 MiB gzip bomb inside gzip": Hostile(
        "/v1/batch", gzip.compress(BOMB_100_MIB), "malformed_json", "JSON", GZIP,
    ),
    "Content-Encoding: gzip, gzip": Hostile(
        "/v1/batch", gzip.compress(gzip.compress(batch_of(event()))), "unsupported_encoding",
        "gzip", {"Content-Encoding": "gzip, gzip"},
    ),
    "Content-Encoding: deflate": Hostile(
        "/v1/batch", zlib.compress(batch_of(event())), "unsupported_encoding", "deflate",
        {"Content-Encoding": "deflate"},
    ),
    "a 100 MiB gzip bomb whose trailer claims 100 bytes": Hostile(
        "/v1/batch", gzip_bomb(100, claimed_size=100),
        "request_too_large", "larger", GZIP,
    ),
    "a gzip whose trailer lies about its length": Hostile(
        "/v1/batch", gzip_with_trailer(batch_of(event()), size=7), "malformed_gzip", "gzip", GZIP,
    ),
    "a gzip whose trailer lies about its CRC": Hostile(
        "/v1/batch", gzip_with_trailer(batch_of(event()), crc=1234), "malformed_gzip", "gzip",
        GZIP,
    ),
    # Invalid UTF-8, in the raw fields carried unparsed and in the text fields.
    "a byte that is never UTF-8 in a property value": Hostile(
        "/v1/track", raw('{"userId": "u", "event": "E", "properties": {"a": "x', b"\xff", '"}}'),
        "malformed_json", "UTF-8",
    ),
    "a latin-1 property key": Hostile(
        "/v1/track", raw('{"userId": "u", "event": "E", "properties": {"caf', b"\xe9", '": 1}}'),
        "malformed_json", "UTF-8",
    ),
    "an overlong slash in the event name (was a 500)": Hostile(
        "/v1/track", raw('{"userId": "u", "event": "a', b"\xc0\xaf", '"}'), "malformed_json",
        "UTF-8",
    ),
    "a surrogate encoded in UTF-8 in the userId": Hostile(
        "/v1/batch", raw('{"batch": [{"type": "track", "event": "E", "userId": "', b"\xed\xa0\x80",
                         '"}]}'),
        "malformed_json", "UTF-8",
    ),
    "a truncated sequence in the batch's context": Hostile(
        "/v1/batch", raw('{"context": {"x": "', b"\xe2\x82", '"}, "batch": [{"type": "track", '
                         '"userId": "u", "event": "E"}]}'),
        "malformed_json", "UTF-8",
    ),
    "a lone surrogate escape in a property": Hostile(
        "/v1/track", raw('{"userId": "u", "event": "E", "properties": {"a": "\\udc00"}}'),
        "malformed_json", "JSON",
    ),
    "a UTF-16 body labelled so": Hostile(
        "/v1/track", json.dumps(event()).encode("utf-16"), "malformed_json", "UTF-8",
        {"Content-Type": "application/json; charset=utf-16"},
    ),
    "a UTF-8 byte-order mark": Hostile(
        "/v1/track", b"\xef\xbb\xbf" + json.dumps(event()).encode(), "malformed_json", "JSON",
    ),
    # NUL: as a JSON escape anywhere, as a raw byte, and in the credentials.
    "\\u0000 in a property key": Hostile(
        "/v1/track", raw('{"userId": "u", "event": "E", "properties": {"a\\u0000": 1}}'),
        "nul_character", "NUL",
    ),
    "\\u0000 in the event name": Hostile(
        "/v1/track", raw('{"userId": "u", "event": "E\\u0000"}'), "nul_character", "NUL",
    ),
    "\\u0000 in the messageId": Hostile(
        "/v1/batch", batch_of(event(messageId="m\x00")), "nul_character", "NUL",
    ),
    "\\u0000 in the batch's sentAt": Hostile(
        "/v1/batch", batch_of(event(), sentAt="2026-11-25T00:00:00Z\x00"), "nul_character",
        "NUL",
    ),
    "\\u0000 after an escaped backslash": Hostile(
        "/v1/track", raw('{"userId": "u", "event": "E", "properties": {"a": "\\\\\\u0000"}}'),
        "nul_character", "NUL",
    ),
    "\\u0000 in the writeKey of the body": Hostile(
        "/v1/track", json.dumps(event(writeKey="wk_\x00")).encode(), "nul_character", "NUL",
        keyed=False,
    ),
    "a raw NUL byte in a string": Hostile(
        "/v1/track", raw('{"userId": "u\x00", "event": "E"}'), "malformed_json", "JSON",
    ),
    "a raw NUL byte between tokens": Hostile(
        "/v1/track", raw('{"userId": "u",\x00 "event": "E"}'), "malformed_json", "JSON",
    ),
    "a NUL in the Basic-auth write key": Hostile(
        "/v1/track", json.dumps(event()).encode(), "invalid_write_key", "key",
        {"Authorization": "Basic " + base64.b64encode(b"wk_\x00:").decode()}, 401, keyed=False,
    ),
    "a NUL in ?writeKey=": Hostile(
        "/v1/track?writeKey=wk_%00", json.dumps(event()).encode(), "invalid_write_key", "key",
        status=401, keyed=False,
    ),
    "a pixel whose event holds \\u0000": Hostile(
        PIXEL + pixel_data(raw('{"userId": "u\\u0000", "event": "E"}')), b"", "nul_character",
        "NUL", method="GET",
    ),
    "a pixel whose event is not UTF-8": Hostile(
        PIXEL + pixel_data(raw('{"userId": "', b"\xff", '", "event": "E"}')), b"",
        "malformed_json", "UTF-8", method="GET",
    ),
    # Numbers the archive (PostgreSQL numeric) or a reader (a double) cannot hold.
    "1e999 in a property (PostgreSQL refuses it)": Hostile(
        "/v1/track", raw('{"userId": "u", "event": "E", "properties": {"n": 1e999}}'),
        "number_out_of_range", "number",
    ),
    "-1e400 in the traits (past a double)": Hostile(
        "/v1/identify", raw('{"userId": "u", "traits": {"n": -1e400}}'), "number_out_of_range",
        "number",
    ),
    "16,384 decimals in a batch item's context": Hostile(
        "/v1/batch", raw('{"batch": [{"type": "page", "userId": "u", "context": {"n": 0.',
                         "1" * 16384, "}}]}"),
        "number_out_of_range", "decimals",
    ),
    "1e-16384 in the batch's integrations": Hostile(
        "/v1/batch", raw('{"integrations": {"n": 1e-16384}, "batch": [{"type": "page", '
                         '"userId": "u"}]}'),
        "number_out_of_range", "number",
    ),
    # Not JSON, whatever the label says (the label itself is not checked: see test_ingest).
    "a multipart form": Hostile(
        "/v1/batch", raw('--b\r\nContent-Disposition: form-data; name="batch"\r\n\r\n[]\r\n--b--'),
        "malformed_json", "JSON", {"Content-Type": "multipart/form-data; boundary=b"},
    ),
    "an XML document": Hostile(
        "/v1/track", raw('<?xml version="1.0"?><track userId="u" event="E"/>'), "malformed_json",
        "JSON", {"Content-Type": "application/xml"},
    ),
    "an HTML page with a script": Hostile(
        "/v1/track", raw("<html><script>alert(1)</script></html>"), "malformed_json", "JSON",
        {"Content-Type": "text/html"},
    ),
}  # fmt: skip


def refusal_problem(answer: httpx.Response, case: Hostile) -> str | None:
    """What is wrong with the answer to a hostile request; None when it is right."""
    if answer.status_code != case.status:
        return f"status {answer.status_code}: {answer.text[:200]}"
    if answer.headers.get("content-type") != "application/json":
        return f"content type {answer.headers.get('content-type')}"
    error = answer.json().get("error", {})
    if error.get("code") != case.code:
        return f"code {error.get('code')!r}, expected {case.code!r}: {error}"
    if case.says.lower() not in str(error.get("message", "")).lower():
        return f"message {error.get('message')!r} does not say {case.says!r}"
    return None


def test_hostile_bodies_are_json_errors_saying_why_and_nothing_reaches_kafka(
    client: TestClient,
    write_key: str,
    sentinel: Callable[[], str],
    topic_records: Callable[[], list[Delivered]],
) -> None:
    assert all(len(case.body) <= 500 * 1024 for case in HOSTILE.values())
    problems = []
    for name, case in HOSTILE.items():
        headers = {**(basic(write_key) if case.keyed else {}), **(case.headers or {})}
        if case.method == "GET":
            answer = client.get(case.path, headers=headers)
        else:
            answer = post_event(client, case.path, case.body, headers=headers)
        problem = refusal_problem(answer, case)
        if problem is not None:
            problems.append(f"{name}: {problem}")
    assert not problems, "\n".join(problems)
    last = sentinel()
    assert [d.record.message_id for d in topic_records()] == [last]


# --- what is legal but unusual is archived and read back ----------------------------------------


@contextmanager
def running_processor(api: Settings) -> Iterator[Settings]:
    """A real processor (in a thread) on the api's topic and database, with a DLQ of its own;
    the settings it runs with."""
    topic_name = api.events_topic
    ensure_topics(api.kafka_bootstrap or "", {f"{topic_name}.dlq": 1})
    processing = api.model_copy(
        update={
            "dlq_topic": f"{topic_name}.dlq",
            "processor_group": f"{topic_name}-processors",
            "processor_metrics_port": 0,
        }
    )
    stop = StopFlag()
    thread = threading.Thread(target=run_processor, args=(processing, stop))
    thread.start()
    try:
        yield processing
    finally:
        stop.set()
        thread.join(timeout=60)
        delete_topics(processing.kafka_bootstrap or "", [processing.dlq_topic])
    assert not thread.is_alive()


@pytest.fixture
def processor(app_settings: Settings) -> Iterator[Settings]:
    with running_processor(app_settings) as processing:
        yield processing


def archived_count(settings_: Settings) -> int:
    with psycopg.connect(str(settings_.database_url)) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def as_read(value: Any) -> Any:
    """A JSON value with its numbers as a JSON reader holds them, doubles: `1e308` comes back as
    PostgreSQL writes it, 1 and 308 zeros, the same double; 16383 decimals, the nearest one."""
    if isinstance(value, dict):
        return {key: as_read(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_read(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


DEEPEST = json.loads(nested(62))  # the event 1, properties 2, 62 arrays: 64 levels, the limit
SIXTEEN_K = "0." + "1" * 16383
UNUSUAL: dict[str, tuple[bytes, dict[str, str] | None]] = {
    "backslash-u0000 as text": (
        raw('{"userId": "u", "event": "E", "properties": {"t": "\\\\u0000", "k\\\\u0000": 1}}'),
        None,
    ),
    "markup and an RTL override": (
        json.dumps(event(event="<script>alert(1)</script>", properties={
            "<img src=x onerror=alert(1)>": "'; DROP TABLE events; --",
            "rtl": "abc\u202edef", "emoji": "🎉", "template": "{{7*7}}",
        })).encode(),
        None,
    ),
    "numbers at a double's edges": (
        raw('{"userId": "u", "event": "E", "properties": {"max": 1.7976931348623157e308, '
            '"min": 5e-324, "e308": 1e308, "e20": 1e20, "big": 123456789012345678901234567890, '
            '"neg": -0.0, "decimals": ', SIXTEEN_K, "}}"),
        None,
    ),
    "the deepest nesting allowed": (json.dumps(event(properties={"d": DEEPEST})).encode(), None),
    "duplicate keys": (
        raw('{"userId": "u", "event": "First", "event": "Last", "properties": {"k": 1, "k": 2},'
            ' "properties": {"k": 3, "k": 4, "j": {"x": 1, "x": 5}}}'),
        None,
    ),
    "a week-date timestamp": (
        json.dumps(event(timestamp="2026-W48-3T14:03:59.123Z")).encode(), None,
    ),
    "32 KB of two-byte characters": (
        json.dumps(event(properties={"pad": "é" * 16_300}), ensure_ascii=False).encode(), None,
    ),
    "no content type": (json.dumps(event(properties={"p": 1})).encode(), {}),
    "a latin-1 label on UTF-8": (
        json.dumps(event(properties={"p": "é"}), ensure_ascii=False).encode(),
        {"Content-Type": "application/json; charset=iso-8859-1"},
    ),
}  # fmt: skip
# What each is read back as (the last of duplicate keys; a week date as the calendar date).
EXPECTED: dict[str, tuple[str, Any]] = {
    "backslash-u0000 as text": ("E", {"t": "\\u0000", "k\\u0000": 1}),
    "markup and an RTL override": ("<script>alert(1)</script>", {
        "<img src=x onerror=alert(1)>": "'; DROP TABLE events; --", "rtl": "abc\u202edef",
        "emoji": "🎉", "template": "{{7*7}}",
    }),
    "numbers at a double's edges": ("E", {
        "max": 1.7976931348623157e308, "min": 5e-324, "e308": 1e308, "e20": 1e20,
        "big": 123456789012345678901234567890, "neg": -0.0, "decimals": float(SIXTEEN_K),
    }),
    "the deepest nesting allowed": ("E", {"d": DEEPEST}),
    "duplicate keys": ("Last", {"k": 4, "j": {"x": 5}}),
    "a week-date timestamp": ("E", None),
    "32 KB of two-byte characters": ("E", {"pad": "é" * 16_300}),
    "no content type": ("E", {"p": 1}),
    "a latin-1 label on UTF-8": ("E", {"p": "é"}),
}  # fmt: skip


def send_unusual(client: TestClient, write_key: str) -> dict[str, str]:
    """Each unusual event sent, by name: its messageId."""
    ids = {}
    for number, (name, (body, headers)) in enumerate(UNUSUAL.items()):
        message_id = f"unusual-{number}"
        document = body[:-1] + raw(f', "messageId": "{message_id}"}}')
        request = client.build_request(
            "POST", "/v1/track", content=document, headers={**basic(write_key), **(headers or {})}
        )
        if headers == {}:
            request.headers.pop("Content-Type", None)
        answer = client.send(request)
        assert answer.status_code == 200, (name, answer.text)
        ids[name] = message_id
    return ids


def test_unusual_legal_events_are_archived_and_read_back_the_same(
    client: TestClient,
    write_key: str,
    owner: Account,
    project_id: str,
    processor: Settings,
) -> None:
    ids = send_unusual(client, write_key)
    wait_for(
        lambda: archived_count(processor) >= len(ids),
        60,
        "the unusual events archived",
        lambda: f"{archived_count(processor)} of {len(ids)}",
    )
    # Nothing the api accepted was refused by the archive.
    assert read_topic(processor.kafka_bootstrap or "", processor.dlq_topic, timeout=10) == []

    token = owner.headers["Authorization"].removeprefix("Bearer ")
    for name, message_id in ids.items():
        name_shown, properties = EXPECTED[name]
        found = client.get(f"/api/projects/{project_id}/events/{message_id}", headers=owner.headers)
        assert found.status_code == 200, (name, found.text[:300])
        body = found.json()
        assert body["event"] == name_shown, name
        assert as_read(body["properties"]) == as_read(properties), name
        client.cookies.set("ep_access", token)
        page = client.get(f"/projects/{project_id}/events/{quote(message_id)}")
        client.cookies.clear()
        assert page.status_code == 200, (name, page.text[:300])
        assert html.escape(name_shown) in page.text, name
    week = client.get(
        f"/api/projects/{project_id}/events/{ids['a week-date timestamp']}", headers=owner.headers
    ).json()
    assert week["day"] == "2026-11-25"
    assert datetime.fromisoformat(week["original_timestamp"]) == datetime(
        2026, 11, 25, 14, 3, 59, 123000, tzinfo=UTC
    )
    listed = client.get(f"/api/projects/{project_id}/events?limit=100", headers=owner.headers)
    assert listed.status_code == 200, listed.text[:300]
    assert {e["message_id"] for e in listed.json()["events"]} == set(ids.values())


def test_of_duplicate_keys_the_last_wins(
    client: TestClient,
    write_key: str,
    unique: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    """The rule, as JSON.parse and PostgreSQL's jsonb have it: the last occurrence of a key wins.
    eventpipe reads its own fields so (msgspec); the raw fields travel as sent, and the archive
    keeps the last (the previous test reads them back)."""
    doubled = raw(
        '{"type": "identify", "type": "track", "userId": "first", "userId": "last", '
        '"event": "First", "event": "Last", "messageId": "m-first", '
        f'"messageId": "m-{unique}", "properties": {{"k": 1, "k": 2}}}}'
    )
    assert post_event(client, "/v1/batch", raw('{"batch": [', doubled, "]}"), write_key).is_success
    kept = {"type": "track", "userId": "u", "event": "Kept", "messageId": f"b-{unique}"}
    batches = raw(
        '{"batch": [{"type": "track", "userId": "u", "event": "Dropped"}], "batch": ',
        json.dumps([kept]),
        "}",
    )
    assert post_event(client, "/v1/batch", batches, write_key).is_success

    # The write key in the body: the last one counts, whichever is valid.
    def with_keys(first: str, second: str, **fields: Any) -> bytes:
        keys = f', "writeKey": "{first}", "writeKey": "{second}"}}'
        return json.dumps(event(**fields))[:-1].encode() + keys.encode()

    last_valid = with_keys("wk_nope", write_key, messageId=f"k-{unique}")
    assert post_event(client, "/v1/track", last_valid).is_success
    refused = post_event(client, "/v1/track", with_keys(write_key, "wk_nope"))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_write_key"

    records = {i: d.record for i, d in by_message_id(topic_records()).items()}
    assert records.keys() == {f"m-{unique}", f"b-{unique}", f"k-{unique}"}
    last = records[f"m-{unique}"]
    assert (last.type, last.user_id, last.event) == ("track", "last", "Last")
    assert bytes(last.properties) == b'{"k": 1, "k": 2}'  # as sent; JSON readers take 2
    assert json_value(last.properties) == {"k": 2}
    assert records[f"b-{unique}"].event == "Kept"


# --- memory and time: the api served by uvicorn, over a socket -----------------------------------


@contextmanager
def served(api: Settings) -> Iterator[tuple[str, int]]:
    """The api served by uvicorn (its httptools protocol, as `eventpipe api`) in a thread of
    this process, on a free port: (host, port). Its memory is this process's, traced below."""
    port = free_port()
    config = uvicorn.Config(create_app(api), host="127.0.0.1", port=port, http="httptools",
                            log_level="warning", access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass(frozen=True)
class RawAnswer:
    status: int
    body: bytes
    sent: int  # body bytes the client had sent when the answer was complete
    seconds: float


def _complete(received: bytes) -> tuple[int, bytes] | None:
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return None
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(":", 1) for line in lines[1:])
    length = int({k.lower(): v for k, v in fields.items()}.get("content-length", "0"))
    return (int(lines[0].split()[1]), body[:length]) if len(body) >= length else None


def send_huge(
    address: tuple[str, int], head: bytes, chunks: Iterator[bytes], timeout: float = 30.0
) -> RawAnswer:
    """Send `head` then `chunks` for as long as the server reads, while reading its answer."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        received, sent, pending = b"", 0, next(chunks, b"")
        while (answer := _complete(received)) is None:
            assert time.monotonic() - started < timeout, f"no answer after {sent} bytes"
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], 1.0)
            if readable:
                data = sock.recv(65536)
                assert data, f"closed without an answer after {sent} bytes: {received!r}"
                received += data
            if writable and pending:
                try:
                    count = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    pending = b""  # the server stopped reading: its answer is on its way
                    continue
                sent += count
                pending = pending[count:] or next(chunks, b"")
    return RawAnswer(answer[0], answer[1], sent, time.monotonic() - started)


def spaces(first: bytes, total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """`first`, then JSON whitespace up to `total` bytes: only its size can refuse it."""
    yield first
    block = b" " * chunk
    for _ in range((total - len(first)) // chunk):
        yield block


def chunked(parts: Iterator[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def request_head(path: str, key: str, **fields: str) -> bytes:
    """A request's head; `Content_Length="9"` is the header Content-Length: 9."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines.append(f"Authorization: {basic(key)['Authorization']}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_huge_bodies_and_bombs_are_refused_in_bounded_memory_and_time(
    app_settings: Settings,
    write_key: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    huge = 256 * MiB
    bomb = gzip_bomb(400)  # 400 MiB of spaces once inflated, under 500 KB on the wire
    assert len(bomb) < 500 * 1024
    start = b'{"batch": ['
    with served(app_settings) as address:
        # Warm: a batch just under the limit, so the buffers a normal request needs are there.
        warm = batch_of(*[event(properties={"pad": "x" * 31_000}) for _ in range(15)])
        with httpx.Client(base_url=f"http://{address[0]}:{address[1]}", timeout=30) as http:
            assert post_event(http, "/v1/batch", warm, write_key).status_code == 200
        # Every Python allocation of every thread (uvicorn's, the app's, this client's).
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            answers = {
                "declared 256 MiB": send_huge(
                    address,
                    request_head("/v1/batch", write_key, Content_Length=str(huge)),
                    spaces(start, huge),
                ),
                "chunked 256 MiB": send_huge(
                    address,
                    request_head("/v1/batch", write_key, Transfer_Encoding="chunked"),
                    chunked(spaces(start, huge)),
                ),
                "gzip bomb of 400 MiB": send_huge(
                    address,
                    request_head("/v1/batch", write_key, Content_Length=str(len(bomb)),
                                 Content_Encoding="gzip"),
                    iter([bomb]),
                ),
            }  # fmt: skip
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    for name, answer in answers.items():
        assert answer.status == 400, (name, answer.body)
        assert json.loads(answer.body)["error"]["code"] == "request_too_large", name
        # Answered while most of the body was still to come: nothing waited for the whole of it.
        assert answer.sent < 16 * MiB, (name, answer.sent)
    figures = {
        name: f"{a.sent / MiB:.1f} MiB sent, {a.seconds:.2f} s" for name, a in answers.items()
    }
    # Holding any of them whole would take 256 MiB or more; the api reads 500 KB at most.
    growth = peak - before
    assert growth < 16 * MiB, f"peak memory grew {growth / MiB:.1f} MiB: {figures}"
    assert len(topic_records()) == 15  # the warm batch only


def test_a_record_an_older_api_let_through_is_dead_lettered_and_the_rest_flows(
    processor: Settings, project_id: str
) -> None:
    """Before the ingest fix a bad byte in `properties` was acknowledged; in the processor it
    raised UnicodeDecodeError on its way to PostgreSQL, the processor stopped, and every restart
    stopped on it again: its partition stood still. Records of that kind may still be in Kafka."""
    moment = "2026-11-25T14:03:59.123Z"
    good = EventRecord(project_id=project_id, message_id="good", type="track",
                       received_at=moment, timestamp=moment, day=moment[:10], user_id="u",
                       event="E")  # fmt: skip
    bad = msgspec.structs.replace(good, message_id="bad", properties=msgspec.Raw(b'{"a": "\xff"}'))
    producer = Producer(producer_config(processor.kafka_bootstrap or ""))
    for record in (bad, good):  # one user, so one partition: the bad one first
        producer.produce(processor.events_topic, encode_record(record), record_key(record))
    assert producer.flush(30) == 0

    wait_for(lambda: archived_count(processor) == 1, 60, "the good event archived")
    (letter,) = read_topic_values(processor.kafka_bootstrap or "", processor.dlq_topic)
    assert b'"message_id":"bad"' in letter


def read_topic_values(bootstrap: str, topic_name: str) -> list[bytes]:
    """Every message value in a one-partition topic, waiting for the first."""
    consumer = Consumer(consumer_config(bootstrap, f"test-reader-{uuid.uuid4().hex}"))
    consumer.subscribe([topic_name])
    found: list[bytes] = []

    def read() -> bool:
        found.extend(m.value() or b"" for m in consumer.consume(10, 0.5) if m.error() is None)
        return bool(found)

    try:
        wait_for(read, 30, f"a message in {topic_name}")
    finally:
        consumer.close()
    return found
