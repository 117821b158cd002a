from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from eventpipe.api.livestream import Seconds, _events_message
from eventpipe.domain import live
from eventpipe.domain.search import (
    SearchError,
    _containments,
    decode_cursor,
    encode_cursor,
    property_path,
)


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    moment = datetime(2026, 11, 30, 14, 7, 31, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(moment, "m-1")) == (moment, "m-1")
    for forged in ("nope", "W10", "WyJ4IiwgMV0"):
        with pytest.raises(SearchError):
            decode_cursor(forged)


def test_a_property_value_matches_as_text_and_as_the_json_scalar_it_spells() -> None:
    assert [orjson.loads(d) for d in _containments(("cart", "size"), "2")] == [
        {"cart": {"size": "2"}}, {"cart": {"size": 2}},
    ]  # fmt: skip
    assert [orjson.loads(d) for d in _containments(("plan",), "pro")] == [{"plan": "pro"}]
    # A value spelling an object is compared as text only: containment of {} would match all.
    assert [orjson.loads(d) for d in _containments(("a",), "{}")] == [{"a": "{}"}]
    with pytest.raises(SearchError):
        property_path("a..b")


def test_a_live_entry_fits_one_data_line_and_keeps_its_exact_count() -> None:
    encoded = [b'{"message_id":"m%d",\n "properties": {}}' % i for i in range(30)]
    entry = live.entry(30, encoded)
    chunk, count = _events_message("1700000000000-0", entry)
    assert count == 30
    lines = chunk.decode().split("\n")
    assert lines[:2] == ["id: 1700000000000-0", "event: events"] and lines[3:] == ["", ""]
    data = orjson.loads(lines[2].removeprefix("data: "))
    assert data["n"] == 30 and len(data["events"]) == live.SAMPLE and data["t"] == 1700000000000


def test_per_second_counts_include_the_quiet_seconds() -> None:
    seconds = Seconds(100)
    assert seconds.add(100_500, 3) == []
    out = seconds.add(102_100, 2) + seconds.flush(103)
    assert [orjson.loads(m.decode().split("data: ")[1]) for m in out] == [
        {"t": 100, "n": 3}, {"t": 101, "n": 0}, {"t": 102, "n": 2},
    ]  # fmt: skip
