"""Response bodies of the read path: live analytics, event search and the trace."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RangePublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to", description="excluded")
    resolution: str


class SeriesPoint(BaseModel):
    t: datetime
    total: int
    events: dict[str, int] | None = Field(
        default=None, description="per-name counts (in /stats/counts; absent in the overview)"
    )


class UsersPoint(BaseModel):
    t: datetime
    users: int


class PeriodPublic(BaseModel):
    range: RangePublic
    total: int
    users: int = Field(description="distinct users over the whole range (hour or day buckets)")
    series: list[SeriesPoint]
    users_series: list[UsersPoint]


class TopEvent(BaseModel):
    name: str
    count: int


class Overview(PeriodPublic):
    top: list[TopEvent]
    previous: PeriodPublic | None
    all_time: int


class CountsPeriod(BaseModel):
    range: RangePublic
    total: int
    series: list[SeriesPoint]


class CountsPublic(CountsPeriod):
    previous: CountsPeriod | None


class UsersPublic(BaseModel):
    range: RangePublic
    users: int
    series: list[UsersPoint]


class TopPublic(BaseModel):
    range: RangePublic
    events: list[TopEvent]


class TotalsPublic(BaseModel):
    total: int
    events: dict[str, int]


class EventPublic(BaseModel):
    message_id: str
    type: str
    event: str
    name: str | None
    category: str | None
    user_id: str | None
    anonymous_id: str | None
    distinct_id: str
    timestamp: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    received_at: datetime
    group_id: str | None
    previous_id: str | None
    properties: Any
    traits: Any
    context: Any
    integrations: Any
    day: str
    kafka_partition: int | None
    kafka_offset: int | None


class EventPage(BaseModel):
    events: list[EventPublic]
    next_cursor: str | None


class TraceStage(BaseModel):
    model_config = ConfigDict(extra="allow")

    stage: str
    reached: bool
    detail: str


class TracePublic(BaseModel):
    message_id: str
    status: str = Field(description="archived, counted, in_kafka, dead_lettered or unknown")
    explanation: str
    stages: list[TraceStage]
    checked: dict[str, int | bool]
