"""The event set: what the api would write for Segment events of ~300-byte properties."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import orjson

from bench.loadgen import iso_ms
from eventpipe.domain.events import NULL, EventRecord, decode_record, encode_record, record_key

PARTITIONS = 12
USERS = 10_000
DUPLICATE_FRACTION = 0.01
# 48 track names, plus `$page` and `$identify`: the ~50 names a count is kept under.
TRACK_NAMES = tuple(f"{verb} {thing}" for verb in ("Viewed", "Clicked", "Added", "Removed",
    "Started", "Completed") for thing in ("Product", "Cart", "Checkout", "Video", "Article",
    "Banner", "Coupon", "Search"))  # fmt: skip
Pair = tuple[bytes, bytes]


def _properties(rng: random.Random) -> msgspec.Raw:
    n = rng.randrange(1_000_000)
    return msgspec.Raw(orjson.dumps({
        "product_id": f"sku-{n:07d}",
        "category": rng.choice(("shoes", "books", "garden", "music", "toys", "kitchen")),
        "price": round(rng.uniform(1, 500), 2),
        "currency": "EUR",
        "quantity": rng.randrange(1, 5),
        "path": f"/shop/{rng.choice(('shoes', 'books', 'garden'))}/{n}",
        "referrer": f"https://www.example.com/campaign/{rng.randrange(500)}?utm_source=news",
        "search": rng.choice(("", "running shoes", "garden chair", "vinyl")),
        "session_id": f"s-{rng.getrandbits(64):016x}",
        "experiment": {"name": "checkout-v2", "variant": rng.choice(("a", "b"))},
        "consent": True,
    }))  # fmt: skip


_CONTEXT = msgspec.Raw(
    b'{"library":{"name":"analytics-python","version":"2.4.0"},"ip":"203.0.113.7"}'
)
_TRAITS = msgspec.Raw(b'{"plan":"pro","seats":3}')


class _Maker:
    """Records as the api builds them (`build_record`), made directly: ~5 us each, not ~25."""

    def __init__(self, project_id: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.project_id = project_id
        self.id_prefix = f"{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"[:24]
        self.properties = [_properties(self.rng) for _ in range(4_096)]
        self.made = 0

    def record(self, stamp: str, day: str) -> EventRecord:
        rng = self.rng
        user = rng.randrange(USERS)
        draw = rng.random()
        kind, name = ("track", rng.choice(TRACK_NAMES)) if draw < 0.85 else (
            ("page", None) if draw < 0.95 else ("identify", None))  # fmt: skip
        self.made += 1
        return EventRecord(
            project_id=self.project_id, message_id=f"{self.id_prefix}{self.made:012x}",
            type=kind, received_at=stamp, timestamp=stamp, day=day, original_timestamp=stamp,
            sent_at=stamp, user_id=f"user-{user:05d}" if user % 5 else None,
            anonymous_id=None if user % 5 else f"anon-{user:05d}", event=name,
            name="Shop" if kind == "page" else None, properties=rng.choice(self.properties),
            traits=_TRAITS if kind == "identify" else NULL, context=_CONTEXT,
        )  # fmt: skip


def make_pairs(count: int, project_id: str, seed: int = 11) -> list[Pair]:
    """`count` (key, value) records, 1 % of them a client's retry of an earlier event.

    Event times advance through the set as a live stream's would (10k events per second), so a
    batch touches one or two minute buckets, as it would in production.
    """
    maker = _Maker(project_id, seed)
    start = datetime.now(UTC) - timedelta(seconds=count / 10_000 + 5)
    unique = count - round(count * DUPLICATE_FRACTION)
    pairs: list[Pair] = []
    while len(pairs) < unique:
        moment = start + timedelta(seconds=len(pairs) / 10_000)
        stamp, day = iso_ms(moment), moment.date().isoformat()
        for _ in range(min(1_000, unique - len(pairs))):
            record = maker.record(stamp, day)
            pairs.append((record_key(record), encode_record(record)))
    # A retry is the same event sent again shortly after: same messageId, a later receivedAt.
    for _ in range(count - unique):
        at = maker.rng.randrange(unique)
        key, value = pairs[at]
        record = decode_record(value)
        later = datetime.fromisoformat(record.received_at) + timedelta(seconds=2)
        retry = msgspec.structs.replace(record, received_at=iso_ms(later))
        place = min(len(pairs), at + maker.rng.randrange(1, 5_000))
        pairs.insert(place, (key, encode_record(retry)))
    return pairs
