"""Reading the live aggregates: each figure is the sum of its per-partition keys (domain/keys.py).

A partition's keys share one Redis Cluster slot, so one script call per partition reads all the
buckets of a range inside Redis. The overview's path answers little: each bucket's `$all` and one
ZUNION of the range's buckets (per-name sums, in Redis's C code), never every (bucket, name) pair.
Unions of users over finished buckets are cached a minute (`merged_users_key`): merging a month of
HyperLogLogs is the costly part, and a finished bucket only changes with a late event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import NoScriptError

from eventpipe.domain.keys import (
    ALL,
    DAY,
    HOUR,
    counts_key,
    day_counts_key,
    merged_users_key,
    stamp,
    totals_key,
    users_key,
)
from eventpipe.domain.timerange import STEPS, TimeRange, floor

__all__ = [
    "ALL", "Bucket", "PeriodCounts", "period_counts", "series", "top_events", "totals",
    "unique_users", "users_series",
]  # fmt: skip

MERGED_USERS_TTL_S = 60
# Script source -> its SHA, once loaded (the same on every Redis: SHA-1 of the source).
_SHAS: dict[str, str] = {}

# KEYS: bucket keys of one partition (sorted sets). ARGV[1]: the mode, ARGV[2]: the total's member.
# 'sum': each bucket's total, and the union of the buckets (per-name sums); 'names': each bucket's
# scores of ARGV[3..]; 'all': each bucket's every (name, count).
_COUNTS_SCRIPT = """
local mode, all = ARGV[1], ARGV[2]
if mode == 'sum' then
  local totals, union = {}, {}
  for i, key in ipairs(KEYS) do totals[i] = redis.call('ZSCORE', key, all) or '0' end
  if #KEYS > 0 then
    -- unpack() expands only as the last argument: the command's arguments go in one table.
    local args = {#KEYS}
    for i, key in ipairs(KEYS) do args[i + 1] = key end
    args[#args + 1] = 'WITHSCORES'
    union = redis.call('ZUNION', unpack(args))
  end
  return {totals, union}
end
local out = {}
for i, key in ipairs(KEYS) do
  if mode == 'names' then
    local scores = redis.call('ZMSCORE', key, unpack(ARGV, 3))
    for j = 1, #scores do scores[j] = scores[j] or '0' end
    out[i] = scores
  else
    out[i] = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  end
end
return out
"""

# KEYS[1]: the cache of the finished buckets' union; KEYS[2..]: the buckets, the first ARGV[1] of
# them finished. Answers each bucket's count of users, then the count over all of them.
_USERS_SCRIPT = """
local finished = tonumber(ARGV[1])
local out, union = {}, {}
for i = 2, #KEYS do out[#out + 1] = redis.call('PFCOUNT', KEYS[i]) end
if finished > 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('PFMERGE', KEYS[1], unpack(KEYS, 2, finished + 1))
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  end
  union[1] = KEYS[1]
end
for i = finished + 2, #KEYS do union[#union + 1] = KEYS[i] end
if #union > 0 then out[#out + 1] = redis.call('PFCOUNT', unpack(union)) else out[#out + 1] = 0 end
return out
"""


@dataclass(frozen=True)
class Bucket:
    start: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class PeriodCounts:
    """A range's total per bucket, and its per-name sums."""

    totals: list[tuple[datetime, int]]
    by_name: dict[str, int]

    @property
    def total(self) -> int:
        return sum(count for _, count in self.totals)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bucket_keys(project_id: str, partition: int, resolution: str, stamps: list[str]) -> list[str]:
    if resolution == DAY:
        return [day_counts_key(partition, project_id, b) for b in stamps]
    return [counts_key(partition, resolution, project_id, b) for b in stamps]


async def _run_script(
    redis: AsyncRedis, source: str, calls: list[tuple[list[str], list[str | int]]]
) -> list[Any]:
    """`source` once per (keys, args), in one pipelined round trip by its SHA; loaded on first
    use (redis-py's Script in a pipeline would ask SCRIPT EXISTS first: a round trip more)."""
    sha = _SHAS.get(source)
    for _ in range(2):
        if sha is None:
            sha = _SHAS[source] = str(await redis.script_load(source))
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(sha, len(keys), *keys, *map(str, args))
                return list(await pipe.execute())
        except NoScriptError:
            sha = None  # Redis restarted, or flushed its scripts: load it again
    raise NoScriptError("the script could not be loaded")


def _number(value: bytes | str | float) -> int:
    return int(float(value))


async def _read_buckets(
    redis: AsyncRedis, project_id: str, partitions: int, window: TimeRange, args: list[str | int]
) -> list[Any]:
    """The counts script over `window`'s buckets, one call per partition (`args`: its mode)."""
    stamps = [stamp(b, window.resolution) for b in window.buckets()]
    calls = [
        (_bucket_keys(project_id, p, window.resolution, stamps), args) for p in range(partitions)
    ]
    return await _run_script(redis, _COUNTS_SCRIPT, calls)


async def period_counts(
    redis: AsyncRedis, *, project_id: str, partitions: int, window: TimeRange
) -> PeriodCounts:
    """Each bucket's total and the range's per-name sums (the overview's path)."""
    starts = window.buckets()
    answers = await _read_buckets(redis, project_id, partitions, window, ["sum", ALL])
    per_bucket = [0] * len(starts)
    by_name: dict[str, int] = {}
    for bucket_totals, union in answers:
        for i, value in enumerate(bucket_totals):
            per_bucket[i] += _number(value)
        for i in range(0, len(union), 2):
            name = _text(union[i])
            if name != ALL:
                by_name[name] = by_name.get(name, 0) + _number(union[i + 1])
    return PeriodCounts(list(zip(starts, per_bucket, strict=True)), by_name)


async def series(
    redis: AsyncRedis,
    *,
    project_id: str,
    partitions: int,
    window: TimeRange,
    names: Sequence[str] = (),
) -> list[Bucket]:
    """Counts per event name in each bucket of `window`, oldest first (every bucket, zeros too);
    only `names` when given."""
    args: list[str | int] = ["names", ALL, *names] if names else ["all", ALL]
    starts = window.buckets()
    answers = await _read_buckets(redis, project_id, partitions, window, args)
    merged: list[dict[str, int]] = [{} for _ in starts]
    for answer in answers:
        for counts, flat in zip(merged, answer, strict=True):
            pairs = (
                zip(names, flat, strict=True) if names else zip(flat[::2], flat[1::2], strict=True)
            )
            for raw_name, value in pairs:
                name, count = _text(raw_name), _number(value)
                if name != ALL and count:
                    counts[name] = counts.get(name, 0) + count
    return [Bucket(start, counts) for start, counts in zip(starts, merged, strict=True)]


def top_events(by_name: dict[str, int], limit: int) -> list[tuple[str, int]]:
    """The most frequent names, most first, ties by name."""
    return sorted(by_name.items(), key=lambda item: (-item[1], item[0]))[:limit]


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
    current = floor(datetime.now(UTC), resolution)
    finished = sum(1 for b in starts if b + STEPS[resolution] <= current)
    calls: list[tuple[list[str], list[str | int]]] = []
    for partition in range(partitions):
        cache = merged_users_key(
            partition, project_id, resolution, stamps[0], stamps[max(finished, 1) - 1]
        )
        keys = [cache, *(users_key(partition, resolution, project_id, b) for b in stamps)]
        calls.append((keys, [finished, MERGED_USERS_TTL_S]))
    answers = await _run_script(redis, _USERS_SCRIPT, calls)
    per_bucket = [0] * len(starts)
    overall = 0
    for answer in answers:
        for i, count in enumerate(answer[:-1]):
            per_bucket[i] += int(count)
        overall += int(answer[-1])
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
