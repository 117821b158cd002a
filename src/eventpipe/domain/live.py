"""The live stream's contract: what the processor appends to a project's Redis stream and the api
reads back (`ep:live:<project>`, domain/keys.py).

One stream entry per project and applied batch, after dedupe: `n`, the count of new events (exact),
and `e`, a JSON array of at most SAMPLE of them as the api wrote them to Kafka. At a high rate a
person reads a sample anyway; the per-second counts, from `n`, stay exact. The stream is capped at
MAX_ENTRIES (approximately: cheap for Redis), the window a reconnecting client can resume in.
"""

from __future__ import annotations

from typing import Any

SAMPLE = 20
MAX_ENTRIES = 2_000
COUNT_FIELD = b"n"
EVENTS_FIELD = b"e"


def entry(new: int, encoded: list[bytes]) -> dict[Any, Any]:
    """A stream entry: `new` events counted, `encoded` (their records' JSON) sampled."""
    return {COUNT_FIELD: str(new).encode(), EVENTS_FIELD: b"[" + b",".join(encoded[:SAMPLE]) + b"]"}
