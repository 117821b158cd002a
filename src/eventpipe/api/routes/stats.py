"""Live analytics of a project, read from the aggregates in Redis: exact counts, live within a
second of the processor; unique users within HyperLogLog's ~0.8 %."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from cachetools import TTLCache
from fastapi import APIRouter, Depends, Query, Response
from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventpipe.api.deps import RedisDep, ResourcesDep, Viewer
from eventpipe.api.openapi import PROJECT_ERRORS
from eventpipe.core.errors import ApiError, json_response
from eventpipe.domain import aggregates
from eventpipe.domain.analytics import (
    CountsPeriod,
    CountsPublic,
    Overview,
    RangePublic,
    SeriesPoint,
    TopEvent,
    TopPublic,
    TotalsPublic,
    UsersPoint,
    UsersPublic,
)
from eventpipe.domain.timerange import RangeError, TimeRange, custom_range, preset_range

router = APIRouter(prefix="/api/projects/{project_id}/stats", tags=["stats"])

Preset = Literal["30m", "today", "24h", "7d", "30d"]
Resolution = Literal["minute", "hour", "day"]
RangeQuery = Annotated[Preset | None, Query(alias="range", description="a preset range")]
FromQuery = Annotated[datetime | None, Query(alias="from", description="start (ISO-8601)")]
ToQuery = Annotated[datetime | None, Query(alias="to", description="end, excluded (ISO-8601)")]
ResolutionQuery = Annotated[Resolution | None, Query(description="bucket size")]
CompareQuery = Annotated[bool, Query(description="add the previous period of equal length")]
EventQuery = Annotated[list[str] | None, Query(alias="event", max_length=50)]


def window_of(
    preset: RangeQuery = None,
    start: FromQuery = None,
    end: ToQuery = None,
    resolution: ResolutionQuery = None,
) -> TimeRange:
    """The range asked for: a preset, or `from` and `to` (then `resolution` may be chosen)."""
    now = datetime.now(UTC)
    try:
        if preset is not None:
            if start or end or resolution:
                raise RangeError("give `range`, or `from` and `to`, not both")
            return preset_range(preset, now)
        if start is None or end is None:
            raise RangeError("give `range` (30m, today, 24h, 7d, 30d), or both `from` and `to`")
        return custom_range(start, end, resolution, now)
    except RangeError as error:
        raise ApiError(422, "invalid_range", str(error)) from error


Window = Annotated[TimeRange, Depends(window_of)]


def _range(window: TimeRange) -> RangePublic:
    return RangePublic.model_validate(
        {"from": window.start, "to": window.end, "resolution": window.resolution}
    )


def _iso(moment: datetime) -> str:
    # As pydantic writes the other answers' times: UTC as "Z".
    return moment.isoformat().replace("+00:00", "Z")


async def period_overview(
    redis: Redis, project: str, partitions: int, window: TimeRange
) -> tuple[dict[str, Any], dict[str, int]]:
    """The overview of one period (as its JSON, `PeriodPublic`), and its per-name sums.

    Built as plain JSON: the overview is the dashboard's hot read, and validating each point of
    its series through pydantic models cost more than reading it from Redis."""
    counts, (per_bucket, users) = await asyncio.gather(
        aggregates.period_counts(redis, project_id=project, partitions=partitions, window=window),
        aggregates.users_series(redis, project_id=project, partitions=partitions, window=window),
    )
    period = {
        "range": {"from": _iso(window.start), "to": _iso(window.end),
                  "resolution": window.resolution},
        "total": counts.total,
        "users": users,
        "series": [{"t": _iso(t), "total": n} for t, n in counts.totals],
        "users_series": [{"t": _iso(t), "users": n} for t, n in per_bucket],
    }  # fmt: skip
    return period, counts.by_name


async def _counts(
    redis: Redis, project: str, partitions: int, window: TimeRange, names: list[str]
) -> CountsPeriod:
    buckets = await aggregates.series(
        redis, project_id=project, partitions=partitions, window=window, names=names
    )
    series = [SeriesPoint(t=b.start, total=b.total, events=b.counts) for b in buckets]
    return CountsPeriod(range=_range(window), total=sum(b.total for b in buckets), series=series)


# The previous period is over: a late event still lands in it now and then, so its overview is
# kept a minute per api process (a third of the overview's reads, the comparison line).
_previous: TTLCache[tuple[str, TimeRange], dict[str, Any]] = TTLCache(maxsize=4096, ttl=60)


async def previous_overview(
    redis: Redis, project: str, partitions: int, window: TimeRange
) -> dict[str, Any]:
    before = window.previous()
    found = _previous.get((project, before))
    if found is None:
        found = _previous[project, before] = (
            await period_overview(redis, project, partitions, before)
        )[0]
    return found


async def _nothing() -> None:
    return None


def _unavailable(error: RedisError) -> ApiError:
    return ApiError(503, "unavailable", f"the live aggregates cannot be read now: {error}")


@router.get("/overview", responses=PROJECT_ERRORS, response_model=Overview)
async def overview(
    access: Viewer,
    redis: RedisDep,
    resources: ResourcesDep,
    window: Window,
    compare: CompareQuery = False,
    top: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Response:
    """Events and users over time, top events and the all-time total, in one answer."""
    project, partitions = str(access.project_id), resources.settings.partitions
    try:
        # Each read is one pipelined round trip of its own: all at once, on their own connections.
        (period, by_name), before, totals = await asyncio.gather(
            period_overview(redis, project, partitions, window),
            previous_overview(redis, project, partitions, window) if compare else _nothing(),
            aggregates.totals(redis, project_id=project, partitions=partitions),
        )
    except RedisError as error:
        raise _unavailable(error) from error
    ranked = [{"name": n, "count": c} for n, c in aggregates.top_events(by_name, top)]
    return json_response({**period, "top": ranked, "previous": before,
                          "all_time": totals[aggregates.ALL]})  # fmt: skip


@router.get("/counts", responses=PROJECT_ERRORS)
async def counts(
    access: Viewer,
    redis: RedisDep,
    resources: ResourcesDep,
    window: Window,
    compare: CompareQuery = False,
    event: EventQuery = None,
) -> CountsPublic:
    """Counts per event name in each bucket (minute: last 48 h; hour, day: 90 days)."""
    project, partitions, names = str(access.project_id), resources.settings.partitions, event or []
    try:
        period = await _counts(redis, project, partitions, window, names)
        previous = (
            await _counts(redis, project, partitions, window.previous(), names) if compare else None
        )
    except RedisError as error:
        raise _unavailable(error) from error
    return CountsPublic(**period.model_dump(by_alias=True), previous=previous)


@router.get("/users", responses=PROJECT_ERRORS)
async def users(
    access: Viewer,
    redis: RedisDep,
    resources: ResourcesDep,
    window: Window,
) -> UsersPublic:
    """Distinct users per hour or day, and over the whole range."""
    try:
        per_bucket, overall = await aggregates.users_series(
            redis, project_id=str(access.project_id), partitions=resources.settings.partitions,
            window=window,
        )  # fmt: skip
    except RedisError as error:
        raise _unavailable(error) from error
    series = [UsersPoint(t=t, users=n) for t, n in per_bucket]
    return UsersPublic(range=_range(window), users=overall, series=series)


@router.get("/top", responses=PROJECT_ERRORS)
async def top_events(
    access: Viewer,
    redis: RedisDep,
    resources: ResourcesDep,
    window: Window,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> TopPublic:
    """The most frequent event names of a range, most first."""
    try:
        counts = await aggregates.period_counts(
            redis, project_id=str(access.project_id), partitions=resources.settings.partitions,
            window=window,
        )  # fmt: skip
    except RedisError as error:
        raise _unavailable(error) from error
    ranked = [TopEvent(name=n, count=c) for n, c in aggregates.top_events(counts.by_name, limit)]
    return TopPublic(range=_range(window), events=ranked)


@router.get("/totals", responses=PROJECT_ERRORS)
async def totals(access: Viewer, redis: RedisDep, resources: ResourcesDep) -> TotalsPublic:
    """Events per name since the project began, and their sum."""
    try:
        found = await aggregates.totals(
            redis, project_id=str(access.project_id), partitions=resources.settings.partitions
        )
    except RedisError as error:
        raise _unavailable(error) from error
    total = found.pop(aggregates.ALL)
    return TotalsPublic(total=total, events=found)
