"""Segment-compatible ingest end to end: HTTP in, records read back from a real Kafka topic.

Each test runs the api in-process against the shared Kafka, Redis and PostgreSQL, with its own
topic, database, signing key and accounts. "Nothing reached the topic" is proved by reading the
whole topic after a valid sentinel request: a 200 means Kafka has acknowledged, so the topic's
contents up to its high watermarks are final when it is read.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from fastapi.testclient import TestClient

from eventpipe.api.app import create_app
from eventpipe.api.routes import ingest as ingest_routes
from eventpipe.auth.admin import create_user_sync
from eventpipe.auth.keys import generate_key_file
from eventpipe.core.config import Settings
from eventpipe.core.kafka import consumer_config
from eventpipe.domain.events import EventRecord, decode_record
from eventpipe.migrations.runner import upgrade
from tests.integration.support import TOPIC_PARTITIONS

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
READ_TIMEOUT_S = 30.0

Json = dict[str, Any]


# --- helpers shared with the other ingest, SDK and outage tests ---------------------------------


@dataclass(frozen=True)
class Account:
    email: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Delivered:
    """One record as read back from the topic, with where Kafka put it."""

    partition: int
    offset: int
    key: bytes
    record: EventRecord


def api_settings(settings: Settings, keys_dir: Path, **update: Any) -> Settings:
    """An api under test: a migrated database, its own signing key, cheap Argon2, no key cache."""
    upgrade(str(settings.database_url))
    generate_key_file(keys_dir)
    base: Json = {
        "jwt_keys_dir": keys_dir,
        "password_time_cost": 1,
        "password_memory_kib": 8192,
        # TestClient's address is the same for every test and the counters live in Redis.
        "login_failures_per_address": 100_000,
        # A revoked key is refused at once instead of after the cache time.
        "write_key_cache_s": 0,
    }
    return settings.model_copy(update={**base, **update})


def sign_in(http: httpx.Client, settings: Settings, email: str) -> Account:
    create_user_sync(settings, email=email, password=PASSWORD)
    answer = http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return Account(email, {"Authorization": f"Bearer {answer.json()['access_token']}"})


def create_project(http: httpx.Client, account: Account, name: str = "Shop") -> str:
    answer = http.post("/api/projects", json={"name": name}, headers=account.headers)
    assert answer.status_code == 201, answer.text
    project_id: str = answer.json()["id"]
    return project_id


def keys_path(project_id: str) -> str:
    return f"/api/projects/{project_id}/write-keys"


def create_write_key(
    http: httpx.Client, account: Account, project_id: str, name: str = "server"
) -> Json:
    """The 201 answer of key creation: the only one that holds the full key."""
    answer = http.post(keys_path(project_id), json={"name": name}, headers=account.headers)
    assert answer.status_code == 201, answer.text
    body: Json = answer.json()
    return body


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def post_event(
    http: httpx.Client,
    path: str,
    body: Json | bytes,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a JSON body (bytes are sent as they are) with the write key as Basic auth."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(basic(key) if key else {}), **(headers or {})}
    response: httpx.Response = http.post(path, content=content, headers=sent)
    return response


def read_topic(bootstrap: str, topic: str, timeout: float = READ_TIMEOUT_S) -> list[Delivered]:
    """Every record in the topic now, up to each partition's high watermark, in offset order."""
    consumer = Consumer(consumer_config(bootstrap, f"test-reader-{uuid.uuid4().hex}"))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends: dict[int, int] = {}
        for partition in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > 0:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        return _consume_until(consumer, ends, timeout)
    finally:
        consumer.close()


def _consume_until(consumer: Consumer, ends: dict[int, int], timeout: float) -> list[Delivered]:
    delivered: list[Delivered] = []
    deadline = time.monotonic() + timeout
    while ends:
        assert time.monotonic() < deadline, f"records up to {ends} not read in {timeout:.0f} s"
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        partition, offset = message.partition(), message.offset()
        key, value = message.key(), message.value()
        assert partition is not None and offset is not None and key and value
        delivered.append(Delivered(partition, offset, key, decode_record(value)))
        if offset + 1 >= ends.get(partition, 0):
            ends.pop(partition, None)
    return sorted(delivered, key=lambda d: (d.partition, d.offset))


def by_message_id(delivered: list[Delivered]) -> dict[str, Delivered]:
    found = {d.record.message_id: d for d in delivered}
    assert len(found) == len(delivered), "a messageId is in the topic twice"
    return found


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, index: int | None = None
) -> Json:
    """A JSON error body `{"error": {"code", "message", ...}}` with this status (and code)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: Json = response.json()["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if index is not None:
        assert error["index"] == index, error
    return error


def json_value(raw: Any) -> Any:
    """A record's raw JSON field as a Python value (None for JSON null)."""
    return orjson.loads(bytes(raw))


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- every route, and what a record keeps ------------------------------------------------------

PROPERTIES: Json = {
    "revenue": 19.99,
    "quantity": 3,
    "beyond_double": 9007199254740993,
    "negative": -0.5,
    "exponent": 1.5e-7,
    "text": 'Grüße, "quoted" \\ back\nslash 日本 🎉',
    "tags": ["a", "b", 1, None, True],
    "nested": {"deep": {"ok": True, "none": None, "empty_list": [], "empty": {}}},
}
TRAITS: Json = {"email": "ada@example.com", "plan": "pro", "logins": 42, "vip": False}
CONTEXT: Json = {
    "ip": "203.0.113.9",
    "library": {"name": "raw-http", "version": "1.0"},
    "locale": "fr-FR",
    "page": {"path": "/cart", "referrer": None},
}
INTEGRATIONS: Json = {"All": False, "Mixpanel": True, "Amplitude": {"session_id": 1700000000}}

# Per type: the event (without `type` and `messageId`) and whose id keys it.
EXAMPLES: dict[str, tuple[Json, str]] = {
    "track": (
        {"userId": "u-track", "event": "Order Completed", "properties": PROPERTIES},
        "u-track",
    ),
    "identify": (
        {"userId": "u-identify", "anonymousId": "anon-identify", "traits": TRAITS},
        "u-identify",
    ),
    "page": ({"anonymousId": "anon-page", "name": "Cart", "properties": PROPERTIES}, "anon-page"),
    "screen": ({"userId": 42, "name": "Home", "properties": {}}, "42"),
    "group": ({"userId": "u-group", "groupId": "g-1", "traits": TRAITS}, "u-group"),
    "alias": ({"userId": "u-alias", "previousId": "anon-alias"}, "u-alias"),
}


def example(kind: str, message_id: str) -> Json:
    fields, _ = EXAMPLES[kind]
    return {
        **fields,
        "messageId": message_id,
        "context": CONTEXT,
        "integrations": INTEGRATIONS,
    }


def string_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def assert_record_matches(delivered: Delivered, kind: str, sent: Json, project_id: str) -> None:
    record = delivered.record
    _, distinct_id = EXAMPLES[kind]
    assert delivered.key == f"{project_id}:{distinct_id}".encode()
    assert (record.project_id, record.type, record.message_id) == (
        project_id,
        kind,
        sent["messageId"],
    )
    assert record.user_id == string_or_none(sent.get("userId"))
    assert record.anonymous_id == string_or_none(sent.get("anonymousId"))
    assert record.event == sent.get("event")
    assert record.name == sent.get("name")
    assert record.group_id == sent.get("groupId")
    assert record.previous_id == sent.get("previousId")
    for field in ("properties", "traits", "context", "integrations"):
        assert json_value(getattr(record, field)) == sent.get(field), field
    # Carried as the client's own JSON text, not re-serialized (see eventpipe.domain.events).
    for field in ("properties", "traits"):
        if field in sent:
            assert bytes(getattr(record, field)) == json.dumps(sent[field]).encode(), field


def test_every_route_writes_its_events_keyed_by_project_and_user(
    client: TestClient,
    write_key: str,
    project_id: str,
    unique: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    sent: dict[str, tuple[str, Json]] = {}
    for kind in EXAMPLES:
        event = example(kind, f"{kind}-single-{unique}")
        response = post_event(client, f"/v1/{kind}", event, write_key)
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True}
        sent[event["messageId"]] = (kind, event)
    batch = [{"type": kind, **example(kind, f"{kind}-batch-{unique}")} for kind in EXAMPLES]
    sent.update({event["messageId"]: (event["type"], event) for event in batch})
    response = post_event(client, "/v1/batch", {"batch": batch}, write_key)
    assert response.status_code == 200, response.text

    delivered = by_message_id(topic_records())
    assert delivered.keys() == sent.keys()
    for message_id, (kind, event) in sent.items():
        assert_record_matches(delivered[message_id], kind, event, project_id)


def test_one_users_events_stay_in_one_partition_in_order(
    client: TestClient,
    write_key: str,
    project_id: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    def event(user: str, seq: int) -> Json:
        return {"type": "track", "userId": user, "event": "Step", "properties": {"seq": seq}}

    for start in range(0, 24, 8):
        steps = [event("steady", seq) for seq in range(start, start + 8)]
        others = [event(f"other-{seq}", seq) for seq in range(start, start + 8)]
        response = post_event(client, "/v1/batch", {"batch": steps + others}, write_key)
        assert response.status_code == 200, response.text
    for seq in range(24, 30):
        assert post_event(client, "/v1/track", event("steady", seq), write_key).status_code == 200

    delivered = topic_records()
    steady = [d for d in delivered if d.record.user_id == "steady"]
    assert len(steady) == 30
    assert {d.key for d in steady} == {f"{project_id}:steady".encode()}
    assert len({d.partition for d in steady}) == 1
    assert [json_value(d.record.properties)["seq"] for d in steady] == list(range(30))
    # 24 other users over 3 partitions: the key, not chance, keeps "steady" together.
    assert len({d.partition for d in delivered if d.record.user_id != "steady"}) > 1
    # Java's partitioner, as every Kafka client computes it: a retry lands where the first send
    # did, whichever client sends it (the processor's dedupe is per partition).
    assert all(d.partition == java_partition(d.key, TOPIC_PARTITIONS) for d in delivered)


def java_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed record: murmur2, positive, modulo."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (seed 0x9747b28c), as a signed 32-bit value's bits."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little") * m & mask
        k = (k ^ (k >> 24)) * m & mask
        h = (h * m & mask) ^ k
    tail = data[whole:]
    if tail:
        h = (h ^ int.from_bytes(tail, "little")) * m & mask
    h = (h ^ (h >> 13)) * m & mask
    return h ^ (h >> 15)


def test_message_id_is_kept_when_sent_and_generated_when_absent(
    client: TestClient, write_key: str, topic_records: Callable[[], list[Delivered]]
) -> None:
    base = {"type": "track", "userId": "u", "event": "Clicked"}
    batch = [{**base, "messageId": "client-chosen-1"}, {**base, "messageId": 12345}, base, base]
    assert post_event(client, "/v1/batch", {"batch": batch}, write_key).status_code == 200
    assert post_event(client, "/v1/track", base, write_key).status_code == 200

    ids = [d.record.message_id for d in topic_records()]
    assert len(ids) == 5
    assert {"client-chosen-1", "12345"} <= set(ids)
    generated = [i for i in ids if i not in ("client-chosen-1", "12345")]
    assert len(generated) == 3
    assert len(set(generated)) == 3 and all(generated)


def test_client_clock_skew_is_removed_and_original_timestamp_kept(
    client: TestClient, write_key: str, unique: str, topic_records: Callable[[], list[Delivered]]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ahead = now + timedelta(hours=1)  # this client's clock is an hour fast
    behind = now - timedelta(hours=2)
    base = {"type": "track", "userId": "u", "event": "Timed"}
    batch = [
        {
            **base,
            "messageId": f"ahead-{unique}",
            "timestamp": iso_ms(ahead - timedelta(seconds=90)),
        },
        # RudderStack's node SDK sends sentAt per message: it wins over the envelope's.
        {
            **base,
            "messageId": f"own-sent-at-{unique}",
            "timestamp": iso_ms(behind - timedelta(seconds=30)),
            "sentAt": iso_ms(behind),
        },
        # originalTimestamp, when sent, is the event's time rather than timestamp.
        {
            **base,
            "messageId": f"original-{unique}",
            "originalTimestamp": iso_ms(ahead - timedelta(seconds=10)),
            "timestamp": iso_ms(ahead - timedelta(days=1)),
        },
    ]
    before = datetime.now(UTC)
    envelope = {"batch": batch, "sentAt": iso_ms(ahead)}
    assert post_event(client, "/v1/batch", envelope, write_key).status_code == 200
    fixed_time = "2024-05-01T12:00:00.250Z"
    lone = {"userId": "u", "event": "Lone", "messageId": f"no-sent-at-{unique}"}
    assert post_event(client, "/v1/track", {**lone, "timestamp": fixed_time}, write_key).is_success
    bare = {"userId": "u", "event": "Bare", "messageId": f"no-time-{unique}"}
    assert post_event(client, "/v1/track", bare, write_key).status_code == 200
    after = datetime.now(UTC)

    records = {i: d.record for i, d in by_message_id(topic_records()).items()}
    expected_skew = {
        f"ahead-{unique}": (timedelta(seconds=90), ahead - timedelta(seconds=90)),
        f"own-sent-at-{unique}": (timedelta(seconds=30), behind - timedelta(seconds=30)),
        f"original-{unique}": (timedelta(seconds=10), ahead - timedelta(seconds=10)),
    }
    for message_id, (age, original) in expected_skew.items():
        record = records[message_id]
        received = parse_iso(record.received_at)
        assert before - timedelta(milliseconds=1) <= received <= after
        assert abs(parse_iso(record.timestamp) - (received - age)) <= timedelta(milliseconds=1)
        assert record.original_timestamp is not None
        assert parse_iso(record.original_timestamp) == original
    assert records[f"ahead-{unique}"].sent_at == iso_ms(ahead)
    assert records[f"own-sent-at-{unique}"].sent_at == iso_ms(behind)
    without_sent_at = records[f"no-sent-at-{unique}"]
    assert (without_sent_at.timestamp, without_sent_at.sent_at) == (fixed_time, None)
    assert records[f"no-time-{unique}"].timestamp == records[f"no-time-{unique}"].received_at


def test_envelope_context_and_integrations_apply_to_every_item(
    client: TestClient, write_key: str, unique: str, topic_records: Callable[[], list[Delivered]]
) -> None:
    envelope_context = {"library": {"name": "sdk", "version": "9"}, "ip": "198.51.100.7"}
    envelope_integrations = {"All": True, "Slack": False}
    own = {
        "type": "track",
        "userId": "u",
        "event": "Own",
        "messageId": f"own-{unique}",
        "context": {"ip": "203.0.113.1", "locale": "de-DE"},
        "integrations": {"Slack": True},
    }
    inherits = {"type": "identify", "userId": "u", "messageId": f"inherits-{unique}"}
    body = {
        "batch": [own, inherits],
        "context": envelope_context,
        "integrations": envelope_integrations,
    }
    assert post_event(client, "/v1/batch", body, write_key).status_code == 200

    records = {i: d.record for i, d in by_message_id(topic_records()).items()}
    merged = records[f"own-{unique}"]
    # The event's own keys win over the envelope's.
    assert json_value(merged.context) == {
        "library": {"name": "sdk", "version": "9"},
        "ip": "203.0.113.1",
        "locale": "de-DE",
    }
    assert json_value(merged.integrations) == {"All": True, "Slack": True}
    plain = records[f"inherits-{unique}"]
    assert json_value(plain.context) == envelope_context
    assert json_value(plain.integrations) == envelope_integrations


def test_write_key_in_the_body_is_accepted(
    client: TestClient,
    write_key: str,
    project_id: str,
    unique: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    item = {"type": "track", "userId": "u", "event": "E", "messageId": f"batch-{unique}"}
    response = post_event(client, "/v1/batch", {"batch": [item], "writeKey": write_key})
    assert response.status_code == 200, response.text
    single = {"userId": "u", "writeKey": write_key, "messageId": f"single-{unique}"}
    assert post_event(client, "/v1/identify", single).status_code == 200

    records = by_message_id(topic_records())
    assert records.keys() == {f"batch-{unique}", f"single-{unique}"}
    assert {d.record.project_id for d in records.values()} == {project_id}


def test_gzip_bodies_are_accepted(
    client: TestClient, write_key: str, unique: str, topic_records: Callable[[], list[Delivered]]
) -> None:
    item = {"userId": "u", "event": "Zipped", "properties": PROPERTIES}
    batch = {"batch": [{**item, "type": "track", "messageId": f"batch-{unique}"}]}
    zipped = {"Content-Encoding": "gzip"}
    for path, body in (("/v1/batch", batch), ("/v1/track", {**item, "messageId": f"one-{unique}"})):
        compressed = gzip.compress(json.dumps(body).encode())
        response = post_event(client, path, compressed, write_key, zipped)
        assert response.status_code == 200, response.text

    records = by_message_id(topic_records())
    assert records.keys() == {f"batch-{unique}", f"one-{unique}"}
    assert all(json_value(d.record.properties) == PROPERTIES for d in records.values())


CONTENT_TYPES = {
    # rudder-sdk-node 3.x posts its gzip JSON batches as a form; browsers send text/plain.
    "form": "application/x-www-form-urlencoded",
    "text": "text/plain;charset=UTF-8",
    "octets": "application/octet-stream",
    "none": None,
}


def test_json_is_read_whatever_the_content_type_says(
    client: TestClient, write_key: str, unique: str, topic_records: Callable[[], list[Delivered]]
) -> None:
    for name, content_type in CONTENT_TYPES.items():
        body = {"batch": [track(messageId=f"{name}-{unique}")]}
        request = client.build_request(
            "POST", "/v1/batch", content=gzip.compress(json.dumps(body).encode()),
            headers={**basic(write_key), "Content-Encoding": "gzip"},
        )  # fmt: skip
        request.headers.pop("Content-Type", None)
        if content_type is not None:
            request.headers["Content-Type"] = content_type
        response = client.send(request)
        assert response.status_code == 200, (name, response.text)

    ids = by_message_id(topic_records()).keys()
    assert ids == {f"{name}-{unique}" for name in CONTENT_TYPES}


# --- refusals: status, error body, and nothing in the topic -------------------------------------


def track(**fields: Any) -> Json:
    return {"type": "track", "userId": "u", "event": "E", **fields}


def batch_of(*items: Json) -> bytes:
    return json.dumps({"batch": list(items)}).encode()


def damaged_gzip() -> bytes:
    data = bytearray(gzip.compress(batch_of(*[track(n=n) for n in range(50)])))
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


@dataclass(frozen=True)
class Refusal:
    path: str
    body: bytes
    status: int
    code: str
    index: int | None = None
    headers: dict[str, str] | None = None


GZIP = {"Content-Encoding": "gzip"}
REFUSALS: dict[str, Refusal] = {
    "event over 32 KB": Refusal(
        "/v1/batch",
        batch_of(track(), track(), track(properties={"pad": "x" * 33_000})),
        400,
        "event_too_large",
        2,
    ),
    "single event over 32 KB": Refusal(
        "/v1/track",
        json.dumps(track(properties={"pad": "x" * 33_000})).encode(),
        400,
        "event_too_large",
        0,
    ),
    "batch over 500 KB": Refusal(
        "/v1/batch",
        batch_of(*[track(properties={"pad": "x" * 26_000}) for _ in range(20)]),
        400,
        "request_too_large",
    ),
    "damaged gzip": Refusal("/v1/batch", damaged_gzip(), 400, "malformed_gzip", None, GZIP),
    "truncated gzip": Refusal(
        "/v1/batch", gzip.compress(batch_of(track()))[:-12], 400, "malformed_gzip", None, GZIP
    ),
    "plain JSON sent as gzip": Refusal(
        "/v1/batch", batch_of(track()), 400, "malformed_gzip", None, GZIP
    ),
    "unsupported encoding": Refusal(
        "/v1/batch",
        batch_of(track()),
        400,
        "unsupported_encoding",
        None,
        {"Content-Encoding": "br"},
    ),
    "malformed JSON batch": Refusal(
        "/v1/batch", b'{"batch": [{"type": "track",', 400, "malformed_json"
    ),
    "malformed JSON event": Refusal(
        "/v1/track", b'{"userId": "u", "event": }', 400, "malformed_json"
    ),
    "JSON that is not an object": Refusal("/v1/identify", b'["u"]', 400, "invalid_body"),
    "batch missing": Refusal(
        "/v1/batch", b'{"sentAt": "2024-01-01T00:00:00Z"}', 400, "invalid_body"
    ),
    "empty batch": Refusal("/v1/batch", batch_of(), 400, "empty_batch"),
    "batch of 2,501 events": Refusal(
        "/v1/batch", batch_of(*[{"type": "identify", "userId": "u"}] * 2501), 400, "batch_too_large"
    ),
    "form content type that is not JSON": Refusal(
        "/v1/batch",
        b"batch=1&sentAt=2024",
        400,
        "malformed_json",
        None,
        {"Content-Type": "application/x-www-form-urlencoded"},
    ),
    "unknown type": Refusal(
        "/v1/batch", batch_of(track(), {**track(), "type": "purchase"}), 400, "invalid_event", 1
    ),
    "missing type": Refusal(
        "/v1/batch", batch_of({"userId": "u", "event": "E"}), 400, "invalid_event", 0
    ),
    "no userId nor anonymousId": Refusal(
        "/v1/batch",
        batch_of(track(), track(), {"type": "page", "name": "Home"}),
        400,
        "invalid_event",
        2,
    ),
    "empty userId": Refusal(
        "/v1/track", json.dumps(track(userId="")).encode(), 400, "invalid_event", 0
    ),
    "track without event": Refusal(
        "/v1/batch", batch_of(track(), {"type": "track", "userId": "u"}), 400, "invalid_event", 1
    ),
    "alias without previousId": Refusal(
        "/v1/batch",
        batch_of(track(), track(), {"type": "alias", "userId": "u"}),
        400,
        "invalid_event",
        2,
    ),
    "alias route without previousId": Refusal(
        "/v1/alias", b'{"userId": "u"}', 400, "invalid_event", 0
    ),
    "group without groupId": Refusal(
        "/v1/batch", batch_of({"type": "group", "userId": "u"}), 400, "invalid_event", 0
    ),
    "properties not an object": Refusal(
        "/v1/batch", batch_of(track(), track(properties=[1, 2])), 400, "invalid_event", 1
    ),
    "timestamp not ISO-8601": Refusal(
        "/v1/batch", batch_of(track(timestamp="yesterday")), 400, "invalid_event", 0
    ),
    "messageId of 101 characters": Refusal(
        "/v1/batch", batch_of(track(messageId="m" * 101)), 400, "invalid_event", 0
    ),
}


def test_events_and_batches_within_the_limits_are_accepted(
    client: TestClient, write_key: str, topic_records: Callable[[], list[Delivered]]
) -> None:
    """The refusals below are the limits, not something stricter: just under each one passes."""
    large = [track(messageId=f"large-{n}", properties={"pad": "x" * 32_600}) for n in range(15)]
    body = batch_of(*large)
    assert all(len(json.dumps(item)) < 32 * 1024 for item in large)
    assert 470 * 1024 < len(body) <= 500 * 1024
    assert post_event(client, "/v1/batch", body, write_key).status_code == 200
    many = [{"type": "identify", "userId": f"u{n}", "messageId": f"many-{n}"} for n in range(2500)]
    assert post_event(client, "/v1/batch", batch_of(*many), write_key).status_code == 200

    ids = by_message_id(topic_records()).keys()
    assert ids == {item["messageId"] for item in large + many}


@pytest.mark.parametrize("refusal", REFUSALS.values(), ids=REFUSALS.keys())
def test_bad_input_is_refused_and_nothing_reaches_the_topic(
    client: TestClient,
    write_key: str,
    refusal: Refusal,
    sentinel: Callable[[], str],
    topic_records: Callable[[], list[Delivered]],
) -> None:
    response = post_event(client, refusal.path, refusal.body, write_key, refusal.headers)

    assert_error(response, refusal.status, refusal.code, refusal.index)
    if refusal.index is None:
        assert "index" not in response.json()["error"]
    last = sentinel()
    assert [d.record.message_id for d in topic_records()] == [last]


def deeply_nested(depth: int) -> bytes:
    return (
        b'{"userId": "u", "event": "E", "properties": {"d": ' + b"[" * depth + b"]" * depth + b"}}"
    )


# Inputs within every size limit that a client can send by mistake or on purpose; each must be
# refused as bad input (400), not crash the handler (500).
HOSTILE: dict[str, tuple[str, bytes]] = {
    "properties nested 1000 deep": ("/v1/track", deeply_nested(1000)),
    "batch item nested 1000 deep": (
        "/v1/batch",
        b'{"batch": [' + deeply_nested(1000)[:-1] + b', "type": "track"}]}',
    ),
    "skew correction past year 9999": (
        "/v1/batch",
        batch_of(track(timestamp="9999-12-31T00:00:00Z", sentAt="0001-01-01T00:00:00Z")),
    ),
    "context number beyond a double, merged with the envelope's": (
        "/v1/batch",
        b'{"context": {"ip": "198.51.100.7"}, "batch": [{"type": "track", "userId": "u", '
        b'"event": "E", "context": {"n": 1e400}}]}',
    ),
    "timestamp before year 1 in UTC": (
        "/v1/track",
        json.dumps(track(timestamp="0001-01-01T00:00:00+01:00")).encode(),
    ),
}


@pytest.mark.parametrize("path, body", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_values_are_refused_with_400_not_500(
    client: TestClient,
    write_key: str,
    path: str,
    body: bytes,
    sentinel: Callable[[], str],
    topic_records: Callable[[], list[Delivered]],
) -> None:
    assert len(body) < 32 * 1024
    assert_error(post_event(client, path, body, write_key), 400)
    last = sentinel()
    assert [d.record.message_id for d in topic_records()] == [last]


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/track", "/v1/alias"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_get_405_in_json(client: TestClient, path: str, method: str) -> None:
    assert_error(client.request(method, path), 405, "method_not_allowed")


def test_an_unexpected_error_is_a_json_500_with_the_usual_headers(
    client: TestClient, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest routes bypass the middleware that turns an exception into JSON: their
    endpoint does it itself, with the security headers and CORS of every ingest answer."""

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ingest_routes, "build_records", broken)
    origin = {"Origin": "https://shop.example"}
    for path in ("/v1/batch", "/v1/track"):
        event = {"type": "track", "userId": "u", "event": "E"}
        body = {"batch": [event]} if path == "/v1/batch" else event
        response = post_event(client, path, body, write_key, origin)
        assert response.status_code == 500, response.text
        assert response.json()["error"]["code"] == "internal_error"
        assert "a bug" not in response.text
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["access-control-allow-origin"] == origin["Origin"]


def test_envelope_context_cannot_push_an_event_past_32_kb(
    client: TestClient,
    write_key: str,
    sentinel: Callable[[], str],
    topic_records: Callable[[], list[Delivered]],
) -> None:
    # Merged into every item, a large envelope context would make each record larger than the
    # per-event limit (and 2,500 tiny items times a 400 KB context, a gigabyte from one request).
    body = {
        "context": {"pad": "x" * 33_000},
        "batch": [{"type": "identify", "userId": f"u{n}"} for n in range(3)],
    }
    assert_error(post_event(client, "/v1/batch", body, write_key), 400)
    last = sentinel()
    assert [d.record.message_id for d in topic_records()] == [last]


def gzip_bomb(inflated_mib: int) -> bytes:
    """A valid gzip'd batch whose one event inflates to `inflated_mib` MiB of spaces."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [
        compressor.compress(b'{"batch": [{"type": "track", "userId": "u", "event": "E", "p": "')
    ]
    block = b" " * (1 << 20)
    parts += [compressor.compress(block) for _ in range(inflated_mib)]
    parts += [compressor.compress(b'"}]}'), compressor.flush()]
    return b"".join(parts)


def test_gzip_bomb_is_refused_without_inflating_it(
    client: TestClient,
    write_key: str,
    sentinel: Callable[[], str],
    topic_records: Callable[[], list[Delivered]],
) -> None:
    bomb = gzip_bomb(200)
    assert len(bomb) < 500 * 1024  # within the wire limit: only inflating it can refuse it

    tracemalloc.start()  # traces the api's thread as well: TestClient runs it in-process
    try:
        response = post_event(client, "/v1/batch", bomb, write_key, GZIP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert_error(response, 400, "request_too_large")
    # Inflating all of it would allocate at least 200 MiB (a bound on memory, not on time: speed
    # belongs in benchmarks, never in a timed test).
    assert peak < 32 * 1024 * 1024, f"peak Python memory {peak / 2**20:.0f} MiB"
    last = sentinel()
    assert [d.record.message_id for d in topic_records()] == [last]


# --- write keys: who may ingest ---------------------------------------------------------------


def test_ingest_needs_a_known_unrevoked_write_key(
    client: TestClient,
    owner: Account,
    project_id: str,
    unique: str,
    sentinel: Callable[[], str],
    topic_records: Callable[[], list[Delivered]],
) -> None:
    event = {"userId": "u", "event": "E"}
    unknown = "wk_" + "x" * 32
    assert_error(post_event(client, "/v1/track", event), 401, "missing_write_key")
    assert_error(post_event(client, "/v1/track", event, unknown), 401, "invalid_write_key")
    in_body = {**event, "writeKey": unknown}
    assert_error(post_event(client, "/v1/track", in_body), 401, "invalid_write_key")
    garbled = {"Authorization": "Basic not*base64"}
    assert_error(post_event(client, "/v1/track", event, headers=garbled), 401)

    doomed = create_write_key(client, owner, project_id, "doomed")
    before = {**event, "messageId": f"before-revoke-{unique}"}
    assert post_event(client, "/v1/track", before, doomed["key"]).status_code == 200
    revoked = client.delete(f"{keys_path(project_id)}/{doomed['id']}", headers=owner.headers)
    assert revoked.status_code == 204
    assert_error(post_event(client, "/v1/track", event, doomed["key"]), 401, "invalid_write_key")
    doomed_in_body = {**event, "writeKey": doomed["key"]}
    assert_error(post_event(client, "/v1/track", doomed_in_body), 401, "invalid_write_key")
    batch = {"batch": [{**event, "type": "track"}], "writeKey": doomed["key"]}
    assert_error(post_event(client, "/v1/batch", batch), 401, "invalid_write_key")

    # The project's other key is untouched; nothing refused above reached the topic.
    last = sentinel()
    ids = {d.record.message_id for d in topic_records()}
    assert ids == {f"before-revoke-{unique}", last}


def test_rate_limit_answers_429_with_retry_after(
    app_settings: Settings,
    write_key: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    def batch(name: str, count: int) -> Json:
        items = [{"type": "track", "userId": f"u{n}", "event": "E"} for n in range(count)]
        return {"batch": [{**item, "messageId": f"{name}-{n}"} for n, item in enumerate(items)]}

    limited = app_settings.model_copy(update={"ingest_rate_limit_per_s": 5})
    with TestClient(create_app(limited), raise_server_exceptions=False) as client:
        assert post_event(client, "/v1/batch", batch("within", 5), write_key).status_code == 200
        over = post_event(client, "/v1/batch", batch("over", 6), write_key)
        assert_error(over, 429, "rate_limited")
        retry_after = int(over.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        # A later one-second window admits again; until then the answer stays 429.
        deadline = time.monotonic() + retry_after + 5
        while (answer := post_event(client, "/v1/batch", batch("later", 1), write_key)).is_error:
            assert_error(answer, 429, "rate_limited")
            assert time.monotonic() < deadline, "still limited long after Retry-After"
            time.sleep(0.1)

    ids = by_message_id(topic_records()).keys()
    assert ids == {*(f"within-{n}" for n in range(5)), "later-0"}


def test_write_key_is_shown_once_and_listed_by_prefix(
    client: TestClient, owner: Account, project_id: str
) -> None:
    created = create_write_key(client, owner, project_id, "backend")
    key = created["key"]
    assert key.startswith("wk_") and len(key) >= 32
    assert created["prefix"] == key[:10] and created["name"] == "backend"
    assert created["revoked_at"] is None

    listed = client.get(keys_path(project_id), headers=owner.headers)
    assert listed.status_code == 200
    entry = {"id", "name", "prefix", "created_at", "revoked_at", "allowed_origins"}
    assert [set(item) for item in listed.json()] == [entry]
    assert listed.json()[0]["id"] == created["id"]
    assert key not in listed.text and key[10:] not in listed.text

    gone = client.delete(f"{keys_path(project_id)}/{created['id']}", headers=owner.headers)
    assert gone.status_code == 204
    assert client.get(keys_path(project_id), headers=owner.headers).json()[0]["revoked_at"]
    again = client.delete(f"{keys_path(project_id)}/{created['id']}", headers=owner.headers)
    assert_error(again, 404, "not_found")


def test_viewer_lists_write_keys_but_cannot_create_or_revoke_them(
    client: TestClient,
    owner: Account,
    project_id: str,
    account_factory: Callable[[str], Account],
) -> None:
    existing = create_write_key(client, owner, project_id)
    viewer = account_factory("viewer")
    added = client.post(
        f"/api/projects/{project_id}/members",
        json={"email": viewer.email, "role": "viewer"},
        headers=owner.headers,
    )
    assert added.status_code == 201, added.text

    assert client.get(keys_path(project_id), headers=viewer.headers).status_code == 200
    refused = client.post(keys_path(project_id), json={"name": "mine"}, headers=viewer.headers)
    assert_error(refused, 403, "forbidden")
    revoke = client.delete(f"{keys_path(project_id)}/{existing['id']}", headers=viewer.headers)
    assert_error(revoke, 403, "forbidden")
    assert len(client.get(keys_path(project_id), headers=owner.headers).json()) == 1
    assert post_event(client, "/v1/identify", {"userId": "u"}, existing["key"]).status_code == 200


def test_another_tenant_gets_404_for_write_keys(
    client: TestClient,
    owner: Account,
    project_id: str,
    write_key: str,
    account_factory: Callable[[str], Account],
) -> None:
    mine = client.get(keys_path(project_id), headers=owner.headers).json()[0]
    stranger = account_factory("stranger")
    own_project = create_project(client, stranger, "Elsewhere")
    key_path = f"{keys_path(project_id)}/{mine['id']}"

    assert_error(client.get(keys_path(project_id), headers=stranger.headers), 404, "not_found")
    create = client.post(keys_path(project_id), json={"name": "x"}, headers=stranger.headers)
    assert_error(create, 404, "not_found")
    assert_error(client.delete(key_path, headers=stranger.headers), 404, "not_found")
    # Another project's key id, through a project the stranger owns: still not found.
    through_own = client.delete(f"{keys_path(own_project)}/{mine['id']}", headers=stranger.headers)
    assert_error(through_own, 404, "not_found")

    assert post_event(client, "/v1/identify", {"userId": "u"}, write_key).status_code == 200
