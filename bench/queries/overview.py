"""The overview, in-process: its five reads of one range, each alone, then together."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from redis.asyncio import Redis as AsyncRedis

from bench.queries.dataset import PARTITIONS
from bench.queries.reads import counts_of, series_of, totals_of, users_of
from bench.queries.timing import (
    TARGET_OVERVIEW_P99_MS,
    Call,
    Meters,
    Timing,
    print_header,
    print_timing,
    time_calls,
)
from eventpipe.api.routes import stats
from eventpipe.domain import aggregates
from eventpipe.domain.timerange import PRESETS, preset_range

OVERVIEW = "overview, as the route reads it"


def overview_calls(client: AsyncRedis, project: str, preset: str, now: datetime) -> dict[str, Call]:
    window = preset_range(preset, now)
    previous = window.previous()

    async def as_the_route(_n: int) -> object:
        # api/routes/stats.py `overview` with compare=true: its reads at once, the previous
        # period from the route's one-minute cache.
        (_, by_name), *_ = await asyncio.gather(
            stats.period_overview(client, project, PARTITIONS, window),
            stats.previous_overview(client, project, PARTITIONS, window),
            totals_of(client, project),
        )  # fmt: skip
        return aggregates.top_events(by_name, 10)

    async def one_by_one(_n: int) -> object:
        await counts_of(client, project, window)
        await users_of(client, project, window)
        await counts_of(client, project, previous)
        await users_of(client, project, previous)
        return await totals_of(client, project)

    return {
        "period_counts": lambda _n: counts_of(client, project, window),
        "period_counts, previous period": lambda _n: counts_of(client, project, previous),
        "series (per name; /stats/counts)": lambda _n: series_of(client, project, window),
        "users_series": lambda _n: users_of(client, project, window),
        "users_series, previous period": lambda _n: users_of(client, project, previous),
        "totals": lambda _n: totals_of(client, project),
        "the five one after the other": one_by_one,
        OVERVIEW: as_the_route,
    }


async def measure_overview(
    client: AsyncRedis, project: str, calls: int, meters: Meters
) -> list[Timing]:
    print_header(
        f"overview, in-process: the functions of domain/aggregates.py on redis.asyncio "
        f"(uvloop), {calls} calls one at a time (ms)"
    )
    timings = []
    for preset in PRESETS:
        for label, call in overview_calls(client, project, preset, datetime.now(UTC)).items():
            target = (0.99, TARGET_OVERVIEW_P99_MS) if label == OVERVIEW else None
            timing = await time_calls(f"{preset:<6}{label}", call, calls, meters(), target)
            print_timing(timing)
            timings.append(timing)
    return timings
