"""Exports: what a user asks for, the record the worker reports progress in, and the job."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import procrastinate
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.core.queue import Queue, Task, defer_in
from eventpipe.domain.events import EVENT_TYPES
from eventpipe.domain.search import EventFilter, property_path
from eventpipe.domain.tables import Export, ExportState
from eventpipe.exports.formats import ExportFormat, extension

FilterText = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
LIVE_STATES = (ExportState.QUEUED, ExportState.RUNNING, ExportState.SUCCEEDED)


class ExportFilters(BaseModel):
    """The event search's filters (docs/queries.md), all optional."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: FilterText | None = None
    type: Literal[tuple(sorted(EVENT_TYPES))] | None = None  # type: ignore[valid-type]
    user_id: FilterText | None = None
    anonymous_id: FilterText | None = None
    property: FilterText | None = Field(default=None, description="dotted path")
    value: FilterText | None = None

    @field_validator("property")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None:
            property_path(value)
        return value


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format: ExportFormat
    start: datetime | None = Field(default=None, alias="from", description="included; none: all")
    end: datetime | None = Field(
        default=None, alias="to", description="excluded; none: now, to the minute"
    )
    filters: ExportFilters = Field(default_factory=ExportFilters)

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value


class Progress(BaseModel):
    rows: int
    estimated: int | None = Field(description="the planner's estimate of the rows to write")


class JobPublic(BaseModel):
    id: uuid.UUID
    kind: Literal["export"] = "export"
    project_id: uuid.UUID
    state: ExportState
    format: ExportFormat
    inputs: dict[str, Any]
    attempts: int
    progress: Progress
    size_bytes: int | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    download_url: str | None = Field(default=None, description="while succeeded; expires")
    download_expires_at: datetime | None = None


def normalised_inputs(body: ExportCreate, *, now: datetime) -> dict[str, Any]:
    """The request with its defaults made explicit: `to` unset means now, to the minute, so a
    double click finds the same export and a later request does not."""
    end = body.end or now.replace(second=0, microsecond=0)
    return {
        "format": body.format.value,
        "from": body.start.isoformat() if body.start else None,
        "to": end.isoformat(),
        "filters": body.filters.model_dump(exclude_none=True),
    }


def inputs_digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(inputs, option=orjson.OPT_SORT_KEYS)).hexdigest()


def event_filter(inputs: dict[str, Any]) -> EventFilter:
    filters = inputs["filters"]
    return EventFilter(
        name=filters.get("name"), type=filters.get("type"), user_id=filters.get("user_id"),
        anonymous_id=filters.get("anonymous_id"),
        start=datetime.fromisoformat(inputs["from"]) if inputs["from"] else None,
        end=datetime.fromisoformat(inputs["to"]),
        property_path=property_path(filters["property"]) if "property" in filters else (),
        property_value=filters.get("value"),
    )  # fmt: skip


def file_key(export: Export) -> str:
    return f"{export.id}{extension(ExportFormat(export.format))}"


async def _live_export(session: AsyncSession, project_id: uuid.UUID, digest: str) -> Export | None:
    found = await session.scalars(
        select(Export).where(
            Export.project_id == project_id,
            Export.inputs_digest == digest,
            Export.state.in_([state.value for state in LIVE_STATES]),
        )
    )
    return found.first()


async def create_export(
    session: AsyncSession, queue: procrastinate.App, *, project_id: uuid.UUID,
    user_id: uuid.UUID, body: ExportCreate,
) -> Export:  # fmt: skip
    """The project's live export of these inputs, or a new one whose job is deferred in the
    same transaction: once this returns, the job exists as surely as the row."""
    inputs = normalised_inputs(body, now=datetime.now(UTC))
    digest = inputs_digest(inputs)
    existing = await _live_export(session, project_id, digest)
    if existing is not None:
        return existing
    export = Export(
        id=uuid.uuid4(), project_id=project_id, created_by=user_id, format=body.format.value,
        inputs=inputs, inputs_digest=digest, state=ExportState.QUEUED.value,
    )  # fmt: skip
    session.add(export)
    try:
        await session.flush()
    except IntegrityError:
        # The same inputs, committed by a concurrent request since we looked.
        await session.rollback()
        raced = await _live_export(session, project_id, digest)
        if raced is None:
            raise
        return raced
    export.job_id = await defer_in(
        session, queue, Task.EXPORT, queue=Queue.EXPORTS, export_id=str(export.id)
    )
    await session.commit()
    return export


async def get_export(session: AsyncSession, export_id: uuid.UUID) -> Export | None:
    return await session.get(Export, export_id)


async def exports_of(session: AsyncSession, *, project_id: uuid.UUID, limit: int) -> list[Export]:
    found = await session.scalars(
        select(Export)
        .where(Export.project_id == project_id)
        .order_by(Export.created_at.desc())
        .limit(limit)
    )
    return list(found)


async def set_export(session: AsyncSession, export_id: uuid.UUID, **values: Any) -> None:
    await session.execute(update(Export).where(Export.id == export_id).values(**values))
    await session.commit()
