"""Live analytics of a project, read from the aggregates in Redis: exact counts, live within a
second of the processor; unique users within HyperLogLog's ~0.8 %."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventpipe.api.deps import RedisDep, ResourcesDep, Viewer
from eventpipe.api.openapi import PROJECT_ERRORS
from eventpipe.core.errors import ApiError
from eventpipe.domain import aggregates
from eventpipe.domain.analytics import (
    CountsPublic,
    Overview,
    PeriodPublic,
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


async def _period(
    redis: Redis, project: str, partitions: int, window: TimeRange, names: list[str]
) -> tuple[PeriodPublic, list[aggregates.Bucket]]:
    buckets = await aggregates.series(
        redis, project_id=project, partitions=partitions, window=window, names=names
    )
    per_bucket, users = await aggregates.users_series(
        redis, project_id=project, partitions=partitions, window=window
    )
    period = PeriodPublic(
        range=_range(window),
        total=sum(b.total for b in buckets),
        users=users,
        series=[SeriesPoint(t=b.start, total=b.total, events=b.counts) for b in buckets],
        users_series=[UsersPoint(t=t, users=n) for t, n in per_bucket],
    )
    return period, buckets


def _unavailable(error: RedisError) -> ApiError:
    return ApiError(503, "unavailable", f"the live aggregates cannot be read now: {error}")


@router.get("/overview", responses=PROJECT_ERRORS)
async def overview(
    access: Viewer,
    redis: RedisDep,
    resources: ResourcesDep,
    window: Window,
    compare: CompareQuery = False,
    top: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Overview:
    """Events and users over time, top events and the all-time total, in one answer."""
    project, partitions = str(access.project_id), resources.settings.partitions
    try:
        period, buckets = await _period(redis, project, partitions, window, [])
        previous = (
            (await _period(redis, project, partitions, window.previous(), []))[0]
            if compare
            else None
        )
        totals = await aggregates.totals(redis, project_id=project, partitions=partitions)
    except RedisError as error:
        raise _unavailable(error) from error
    ranked = [TopEvent(name=n, count=c) for n, c in aggregates.top_events(buckets, top)]
    return Overview(
        **period.model_dump(by_alias=True), top=ranked, previous=previous,
        all_time=totals[aggregates.ALL],
    )  # fmt: skip


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
        period, _ = await _period(redis, project, partitions, window, names)
        previous = None
        if compare:
            previous = (await _period(redis, project, partitions, window.previous(), names))[0]
    except RedisError as error:
        raise _unavailable(error) from error
    return CountsPublic(range=period.range, total=period.total, series=period.series,
                        previous=previous)  # fmt: skip


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
        buckets = await aggregates.series(
            redis, project_id=str(access.project_id), partitions=resources.settings.partitions,
            window=window,
        )  # fmt: skip
    except RedisError as error:
        raise _unavailable(error) from error
    ranked = [TopEvent(name=n, count=c) for n, c in aggregates.top_events(buckets, limit)]
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
