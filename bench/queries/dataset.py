"""The dataset's parameters, and the marker row that lets a later run reuse it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg

PARTITIONS = 12
# Bump when the generated data changes: a cached dataset of another version is loaded again.
GENERATOR_VERSION = 1
DATABASE = "bench_queries"
# `$page` first, `$identify` eighth, 48 track names: ranks of a Zipf-like draw (see _GENERATE).
_TRACK = tuple(f"{verb} {thing}" for verb in ("Viewed", "Clicked", "Added", "Removed",
    "Started", "Completed") for thing in ("Product", "Cart", "Checkout", "Video", "Article",
    "Banner", "Coupon", "Search"))  # fmt: skip
NAMES = ("$page", *_TRACK[:6], "$identify", *_TRACK[6:])
PLANS = ("free", "pro", "team", "enterprise")
SKUS = 50_000  # product ids per plan: 200,000 distinct values of `product_id`
PATHS = ("/", "/pricing", "/docs", "/blog", "/cart", "/shop/shoes", "/shop/books", "/account")
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Version/17.0 Safari/605.1.15",
)


@dataclass(frozen=True)
class Dataset:
    """The parameters of a generated dataset; a cached one is reused only if they are equal."""

    events: int
    days: int
    users: int = 200_000
    # The second project gets this share of the first one's events, interleaved in time.
    other_share: float = 0.1
    # A third, small project: its aggregates are written by the processor's own step too.
    check_events: int = 2_000
    version: int = GENERATOR_VERSION

    @property
    def rate_per_s(self) -> float:
        """Events per second of both big projects together."""
        return self.events * (1 + self.other_share) / (self.days * 86_400)

    @property
    def other_every(self) -> int:
        """Every n-th generated row is the second project's (0: none)."""
        return round((1 + self.other_share) / self.other_share) if self.other_share else 0


@dataclass
class Marker:
    """What the marker row says: the parameters, the projects, and where the data ends."""

    params: dict[str, Any]
    projects: dict[str, str]
    anchor: datetime
    load_seconds: float

    @property
    def main(self) -> str:
        return self.projects["main"]


_MARKER_TABLE = """
CREATE TABLE IF NOT EXISTS bench_queries_dataset (
    id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    params jsonb NOT NULL,
    projects jsonb NOT NULL,
    anchor timestamptz NOT NULL,
    load_seconds double precision NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
)
"""


def read_marker(url: str) -> Marker | None:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT to_regclass('bench_queries_dataset')").fetchone()
        if found is None or found[0] is None:
            return None
        row = conn.execute(
            "SELECT params, projects, anchor, load_seconds FROM bench_queries_dataset"
        ).fetchone()
    return None if row is None else Marker(row[0], row[1], row[2], row[3])


def write_marker(url: str, marker: Marker) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(_MARKER_TABLE)
        conn.execute(
            "INSERT INTO bench_queries_dataset (params, projects, anchor, load_seconds) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET anchor = EXCLUDED.anchor",
            (
                orjson.dumps(marker.params).decode(),
                orjson.dumps(marker.projects).decode(),
                marker.anchor,
                marker.load_seconds,
            ),
        )
