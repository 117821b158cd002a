"""Checks: the read functions against the archive, and the loader's keys against the processor's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from redis.asyncio import Redis as AsyncRedis

from bench.queries.dataset import Marker
from bench.queries.reads import (
    archive_counts,
    archive_users,
    series_of,
    summed,
    totals_of,
    users_of,
)
from bench.queries.timing import verdict
from eventpipe.domain import keys
from eventpipe.domain.timerange import PRESETS, TimeRange, preset_range

_FOREVER = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


async def check_against_archive(client: AsyncRedis, url: str, project: str, now: datetime) -> bool:
    """totals, series and users_series of every preset beside what the archive holds."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        everything = await archive_counts(conn, project, *_FOREVER)
        totals = await totals_of(client, project)
        ok = totals == {**everything, keys.ALL: sum(everything.values())}
        print(
            f"  totals() = the archive's counts per name ({len(everything)} names, "
            f"{sum(everything.values()):,} events){'':<12}{verdict(ok)}"
        )
        for preset in PRESETS:
            ok = await check_window(client, conn, project, preset_range(preset, now), preset) and ok
    return ok


async def check_window(
    client: AsyncRedis,
    conn: psycopg.AsyncConnection[tuple[Any, ...]],
    project: str,
    window: TimeRange,
    label: str,
) -> bool:
    got = summed(await series_of(client, project, window))
    expected = await archive_counts(conn, project, window.start, window.end)
    same = {k: v for k, v in got.items() if v} == expected
    _, users = await users_of(client, project, window)
    # A minute range's users are those of the hours it touches (aggregates._users_resolution).
    wide = window.coarsened(keys.DAY if window.resolution == keys.DAY else keys.HOUR)
    distinct = await archive_users(conn, project, wide)
    error = users / distinct - 1 if distinct else 0.0
    close = abs(error) < 0.02
    own = ""
    if wide != window:  # say how far that is from the users of the range itself
        own = f"; in the range itself: {await archive_users(conn, project, window):,}"
    print(
        f"  {label:<6} series() summed = the archive's {sum(expected.values()):>12,} events  "
        f"{verdict(same)};  users {users:>9,} vs count(DISTINCT) {distinct:>9,} "
        f"({error:+.2%}, HyperLogLog)  {verdict(close)}{own}"
    )
    return same and close


async def answers_of(client: AsyncRedis, project: str, now: datetime) -> dict[str, object]:
    """Every answer the overview's functions give for `project`, by a label."""
    out: dict[str, object] = {"totals": await totals_of(client, project)}
    for preset in PRESETS:
        window = preset_range(preset, now)
        for label, each in ((preset, window), (f"{preset} previous", window.previous())):
            out[f"series {label}"] = await series_of(client, project, each)
            out[f"users {label}"] = await users_of(client, project, each)
    return out


async def check_loader(client: AsyncRedis, marker: Marker, now: datetime) -> bool:
    """The loader's keys answer as the processor's step's do (the same events written both ways)."""
    ours = await answers_of(client, marker.projects["check"], now)
    theirs = await answers_of(client, marker.projects["check_copy"], now)
    differ = [label for label in ours if ours[label] != theirs[label]]
    print(
        f"  the loader's aggregates = the processor's step's (plan_step + RedisStep) for the same "
        f"{marker.params['check_events']:,} events, {len(ours)} answers  "
        f"{verdict(not differ)}{'  differ: ' + ', '.join(differ) if differ else ''}"
    )
    return not differ
