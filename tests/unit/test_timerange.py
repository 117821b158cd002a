from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eventpipe.domain.timerange import RangeError, custom_range, preset_range

NOW = datetime(2026, 11, 30, 14, 7, 31, tzinfo=UTC)


def test_presets_end_with_the_bucket_that_holds_now() -> None:
    last = preset_range("30m", NOW)
    assert (last.start, last.end, last.resolution) == (
        datetime(2026, 11, 30, 13, 38, tzinfo=UTC), datetime(2026, 11, 30, 14, 8, tzinfo=UTC),
        "minute",
    )  # fmt: skip
    assert len(last.buckets()) == 30
    today = preset_range("today", NOW)
    assert today.start == datetime(2026, 11, 30, tzinfo=UTC) and len(today.buckets()) == 24
    assert len(preset_range("24h", NOW).buckets()) == 24
    month = preset_range("30d", NOW)
    assert month.resolution == "day" and month.end == datetime(2026, 12, 1, tzinfo=UTC)
    assert len(month.buckets()) == 30


def test_the_previous_period_is_as_long_and_just_before() -> None:
    week = preset_range("7d", NOW)
    before = week.previous()
    assert before.end == week.start and before.end - before.start == week.end - week.start


def test_a_custom_range_is_widened_to_whole_buckets_at_a_resolution_that_suits_it() -> None:
    window = custom_range(NOW - timedelta(hours=5), NOW, None, NOW)
    assert window.resolution == "hour"
    assert window.start == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert window.end == datetime(2026, 11, 30, 15, tzinfo=UTC)
    naive = custom_range(datetime(2026, 11, 30, 13), datetime(2026, 11, 30, 14), None, NOW)
    assert naive.start.tzinfo == UTC and naive.resolution == "minute"


def test_the_cover_of_users_is_the_hours_a_minute_range_touches() -> None:
    window = preset_range("30m", NOW).coarsened("hour")
    assert window.buckets() == [datetime(2026, 11, 30, 13, tzinfo=UTC),
                                datetime(2026, 11, 30, 14, tzinfo=UTC)]  # fmt: skip


@pytest.mark.parametrize(
    ("start", "end", "resolution", "problem"),
    [
        (NOW, NOW - timedelta(hours=1), None, "after"),
        (NOW - timedelta(days=3), NOW, "minute", "kept since"),
        (NOW - timedelta(days=120), NOW, "day", "kept since"),
        (NOW - timedelta(days=10), NOW + timedelta(days=90), "day", "at most 90"),
    ],
)
def test_ranges_beyond_what_the_aggregates_keep_are_refused(
    start: datetime, end: datetime, resolution: str | None, problem: str
) -> None:
    with pytest.raises(RangeError, match=problem):
        custom_range(start, end, resolution, NOW)


def test_an_unknown_preset_is_refused() -> None:
    with pytest.raises(RangeError, match="30m, today, 24h, 7d, 30d"):
        preset_range("1y", NOW)
