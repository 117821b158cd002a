"""Reading the live aggregates: each figure is the sum of its per-partition keys (domain/keys.py).

A partition's keys share one Redis Cluster slot, so one script call per partition sums all the
buckets of a range inside Redis and answers only the totals: a month of hours is 720 hashes per
partition, too many to send back one by one within the overview's 20 ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis as AsyncRedis

from eventpipe.domain.keys import (
    ALL,
    DAY,
    HOUR,
    counts_key,
    day_counts_key,
    stamp,
    totals_key,
    users_key,
)
from eventpipe.domain.timerange import TimeRange

__all__ = ["ALL", "Bucket", "series", "top_events", "totals", "unique_users", "users_series"]

# KEYS: bucket keys of one partition; ARGV[1]: 'h' (hash) or 'z' (sorted set); ARGV[2..]: names
# to read (none: every name). Answers one flat {name, count, ...} list per key.
_SUM_SCRIPT = """
local kind, out = ARGV[1], {}
for i, key in ipairs(KEYS) do
  local found = {}
  if #ARGV > 1 then
    for a = 2, #ARGV do
      local v
      if kind == 'h' then v = redis.call('HGET', key, ARGV[a])
      else v = redis.call('ZSCORE', key, ARGV[a]) end
      if v then found[#found + 1] = ARGV[a]; found[#found + 1] = v end
    end
  elseif kind == 'h' then
    found = redis.call('HGETALL', key)
  else
    found = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  end
  out[i] = found
end
return out
"""


@dataclass(frozen=True)
class Bucket:
    start: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def series(
    redis: AsyncRedis,
    *,
    project_id: str,
    partitions: int,
    window: TimeRange,
    names: Sequence[str] = (),
) -> list[Bucket]:
    """Counts per event name in each bucket of `window`, oldest first (every bucket, zeros too)."""
    starts = window.buckets()
    resolution = window.resolution
    stamps = [stamp(b, resolution) for b in starts]
    kind = "z" if resolution == DAY else "h"

    def key_of(partition: int, bucket: str) -> str:
        if resolution == DAY:
            return day_counts_key(partition, project_id, bucket)
        return counts_key(partition, resolution, project_id, bucket)

    script = redis.register_script(_SUM_SCRIPT)
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            keys = [key_of(partition, b) for b in stamps]
            await script(keys=keys, args=[kind, *names], client=pipe)
        answers = await pipe.execute()
    merged: list[dict[str, int]] = [{} for _ in starts]
    for answer in answers:
        for counts, flat in zip(merged, answer, strict=True):
            for i in range(0, len(flat), 2):
                name = _text(flat[i])
                counts[name] = counts.get(name, 0) + int(float(flat[i + 1]))
    return [Bucket(start, counts) for start, counts in zip(starts, merged, strict=True)]


def top_events(buckets: Sequence[Bucket], limit: int) -> list[tuple[str, int]]:
    """The most frequent names over `buckets`, most first, ties by name."""
    summed: dict[str, int] = {}
    for bucket in buckets:
        for name, count in bucket.counts.items():
            summed[name] = summed.get(name, 0) + count
    return sorted(summed.items(), key=lambda item: (-item[1], item[0]))[:limit]


async def totals(redis: AsyncRedis, *, project_id: str, partitions: int) -> dict[str, int]:
    """Events per name since the start, and `$all`."""
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.hgetall(totals_key(partition, project_id))
        answers = await pipe.execute()
    merged: dict[str, int] = {}
    for answer in answers:
        for name, count in answer.items():
            text = _text(name)
            merged[text] = merged.get(text, 0) + int(count)
    merged.setdefault(ALL, 0)
    return merged


def _users_resolution(window: TimeRange) -> str:
    # Users are counted per hour and per day: a minute range reads the hours it touches.
    return DAY if window.resolution == DAY else HOUR


async def users_series(
    redis: AsyncRedis, *, project_id: str, partitions: int, window: TimeRange
) -> tuple[list[tuple[datetime, int]], int]:
    """Distinct users per hour (or day) bucket of `window`, and over the whole of it."""
    resolution = _users_resolution(window)
    starts = window.coarsened(resolution).buckets()
    stamps = [stamp(b, resolution) for b in starts]
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            keys = [users_key(partition, resolution, project_id, b) for b in stamps]
            for key in keys:
                pipe.pfcount(key)
            # One partition's keys share a slot: PFCOUNT of several is their union's count.
            pipe.pfcount(*keys)
        answers = await pipe.execute()
    per_bucket = [0] * len(starts)
    overall = 0
    step = len(starts) + 1
    for partition in range(partitions):
        row = answers[partition * step : (partition + 1) * step]
        for i, count in enumerate(row[:-1]):
            per_bucket[i] += int(count)
        overall += int(row[-1])
    return list(zip(starts, per_bucket, strict=True)), overall


async def unique_users(
    redis: AsyncRedis, *, project_id: str, partitions: int, period: str, bucket: str
) -> int:
    """Distinct users in one `period` ("hour" or "day") bucket (`YYYYmmddHH` or `YYYYmmdd`)."""
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.pfcount(users_key(partition, period, project_id, bucket))
        counts = await pipe.execute()
    return sum(int(c) for c in counts)
