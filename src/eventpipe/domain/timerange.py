"""Time ranges of the analytics: presets, resolutions, their buckets and their previous period.

A range is [start, end) in UTC, its ends floored to its resolution. Each resolution reads what the
aggregates keep: minutes for 48 hours, hours and days for 90 days (domain/keys.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eventpipe.domain.keys import DAY, HOUR, MINUTE, MINUTE_TTL_S

STEPS = {MINUTE: timedelta(minutes=1), HOUR: timedelta(hours=1), DAY: timedelta(days=1)}
# How far back each resolution can read (what the aggregates keep), less the current bucket.
REACH = {MINUTE: timedelta(seconds=MINUTE_TTL_S), HOUR: timedelta(days=90), DAY: timedelta(days=90)}
MAX_BUCKETS = {MINUTE: 48 * 60, HOUR: 90 * 24, DAY: 90}
PRESETS = ("30m", "today", "24h", "7d", "30d")


class RangeError(ValueError):
    """A range the aggregates cannot answer; the message says why."""


def floor(moment: datetime, resolution: str) -> datetime:
    moment = moment.astimezone(UTC)
    if resolution == MINUTE:
        return moment.replace(second=0, microsecond=0)
    if resolution == HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    resolution: str

    def buckets(self) -> list[datetime]:
        step, moment, out = STEPS[self.resolution], self.start, []
        while moment < self.end:
            out.append(moment)
            moment += step
        return out

    def coarsened(self, resolution: str) -> TimeRange:
        """The same range at a coarser resolution, widened to whole buckets."""
        end = floor(self.end - timedelta(microseconds=1), resolution) + STEPS[resolution]
        return TimeRange(floor(self.start, resolution), end, resolution)

    def previous(self) -> TimeRange:
        """The period of equal length just before this one."""
        length = self.end - self.start
        return TimeRange(self.start - length, self.start, self.resolution)


def default_resolution(length: timedelta) -> str:
    if length <= timedelta(hours=2):
        return MINUTE
    if length <= timedelta(days=3):
        return HOUR
    return DAY


def preset_range(preset: str, now: datetime) -> TimeRange:
    """`30m`, `today`, `24h`, `7d` or `30d`, ending with the bucket that holds `now`."""
    if preset == "30m":
        end = floor(now, MINUTE) + STEPS[MINUTE]
        return TimeRange(end - timedelta(minutes=30), end, MINUTE)
    if preset == "today":
        start = floor(now, DAY)
        return TimeRange(start, start + timedelta(days=1), HOUR)
    if preset == "24h":
        end = floor(now, HOUR) + STEPS[HOUR]
        return TimeRange(end - timedelta(hours=24), end, HOUR)
    days = {"7d": 7, "30d": 30}.get(preset)
    if days is None:
        raise RangeError(f"unknown range {preset!r}; one of {', '.join(PRESETS)}")
    end = floor(now, DAY) + STEPS[DAY]
    return TimeRange(end - timedelta(days=days), end, DAY)


def custom_range(
    start: datetime, end: datetime, resolution: str | None, now: datetime
) -> TimeRange:
    """[start, end) at `resolution` (by default one that suits the length), checked."""
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise RangeError("`to` must be after `from`")
    resolution = resolution or default_resolution(end - start)
    if resolution not in STEPS:
        raise RangeError(f"unknown resolution {resolution!r}; one of minute, hour, day")
    window = TimeRange(floor(start, resolution), end, resolution).coarsened(resolution)
    oldest = floor(now - REACH[resolution], resolution) + STEPS[resolution]
    if window.start < oldest:
        raise RangeError(f"{resolution} counts are kept since {oldest.isoformat()}; start later")
    if len(window.buckets()) > MAX_BUCKETS[resolution]:
        most = MAX_BUCKETS[resolution]
        raise RangeError(f"at most {most} {resolution} buckets; choose a coarser resolution")
    return window


def _utc(moment: datetime) -> datetime:
    # A time without zone is taken as UTC, the zone of every stored time.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
