"""The dashboard's analytics pages: overview, live events, search and one event with its trace.

Pages are rendered here; the figures, the live feed and the traces are read by the pages' scripts
from the JSON api (/api/projects/{id}/stats/overview, /live, /events/{id}/trace), authenticated by
the access cookie.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from eventpipe.api.deps import RedisDep, ResourcesDep, SessionDep
from eventpipe.dashboard.firstrun import has_accounts
from eventpipe.dashboard.pages import ProjectDep, page_user, redirect, render
from eventpipe.domain.events import EVENT_TYPES
from eventpipe.domain.projects import projects_of
from eventpipe.domain.search import (
    EventFilter,
    SearchError,
    get_event,
    property_path,
    search_events,
)

router = APIRouter(include_in_schema=False)

# (range, label, keyboard shortcut), as Plausible's: the first is live.
RANGES = (
    ("30m", "30 minutes", "r"),
    ("today", "Today", "d"),
    ("24h", "24 hours", "h"),
    ("7d", "7 days", "w"),
    ("30d", "30 days", "m"),
)
DEFAULT_RANGE = "24h"
TYPES = sorted(EVENT_TYPES)
PAGE_SIZE = 50
SEARCH_FIELDS = ("name", "type", "user_id", "anonymous_id", "from", "to", "property", "value")


@router.get("/")
async def home(
    request: Request, resources: ResourcesDep, redis: RedisDep, session: SessionDep
) -> Response:
    """The first run, the sign-in page, or the user's first project."""
    if not await has_accounts(session):
        return redirect("/setup")
    user = await page_user(request, resources, redis, session)
    mine = await projects_of(session, user_id=user.id)
    if not mine:
        return redirect("/projects/new")
    return redirect(f"/projects/{mine[0][0].id}")


@router.get("/projects/{project_id}")
async def overview(
    request: Request,
    page: ProjectDep,
    range_: Annotated[str, Query(alias="range")] = "",
    start: Annotated[str, Query(alias="from")] = "",
    end: Annotated[str, Query(alias="to")] = "",
) -> Response:
    if range_ not in {key for key, _, _ in RANGES} and not (start and end):
        range_ = DEFAULT_RANGE
    if range_:
        start = end = ""
    return render(
        request,
        "overview.html",
        page=page,
        tab="overview",
        ranges=RANGES,
        range=range_,
        start=start,
        end=end,
    )


@router.get("/projects/{project_id}/live")
async def live(request: Request, page: ProjectDep) -> Response:
    return render(request, "live.html", page=page, tab="live")


def _utc(value: str, field: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise SearchError(f"`{field}` is not a date and time") from error
    # The form's times are UTC, as every time the dashboard shows.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def event_filter(form: dict[str, str]) -> EventFilter:
    """The search form's fields (empty ones ignored) as the archive's filter, with the JSON
    api's rules (so that its next pages, read by the page's script, accept the same search)."""
    if any("\x00" in value for value in form.values()):
        raise SearchError("a field holds a NUL character")
    path = form["property"].strip()
    if bool(path) != bool(form["value"]):
        raise SearchError("`property` and `value` go together")
    return EventFilter(
        name=form["name"] or None,
        type=form["type"] or None,
        user_id=form["user_id"] or None,
        anonymous_id=form["anonymous_id"] or None,
        start=_utc(form["from"], "from"),
        end=_utc(form["to"], "to"),
        property_path=property_path(path) if path else (),
        property_value=form["value"] if path else None,
    )


@router.get("/projects/{project_id}/events")
async def search(
    request: Request,
    page: ProjectDep,
    session: SessionDep,
    cursor: str | None = None,
) -> Response:
    form = {name: request.query_params.get(name, "") for name in SEARCH_FIELDS}
    events: list[dict[str, object]] = []
    next_cursor: str | None = None
    error = None
    try:
        events, next_cursor = await search_events(
            session,
            project_id=page.project.id,
            filters=event_filter(form),
            limit=PAGE_SIZE,
            cursor=cursor or None,
        )
    except SearchError as problem:
        error = str(problem)
    given = {name: value for name, value in form.items() if value}
    return render(
        request,
        "search.html",
        page=page,
        tab="events",
        form=form,
        types=TYPES,
        events=events,
        error=error,
        next_cursor=next_cursor,
        more_query=urlencode({**given, "cursor": next_cursor or ""}),
        api_query=urlencode(_api_params(given)),
    )


def _api_params(given: dict[str, str]) -> dict[str, str]:
    """The same search as the JSON api's query (its times in ISO-8601 with their zone)."""
    params = dict(given)
    for field in ("from", "to"):
        moment = _safe_utc(params.get(field, ""))
        if moment is not None:
            params[field] = moment.isoformat()
    return params


def _safe_utc(value: str) -> datetime | None:
    try:
        return _utc(value, "")
    except SearchError:
        return None


def _pretty_json(value: object) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        # orjson stops at 64-bit integers; the archive returns `1e20` as a 21-digit integer.
        return json.dumps(value, indent=2, ensure_ascii=False)


@router.get("/projects/{project_id}/events/{message_id:path}")
async def event(
    request: Request, page: ProjectDep, session: SessionDep, message_id: str
) -> Response:
    found = await get_event(session, project_id=page.project.id, message_id=message_id)
    shown = _pretty_json(found) if found else ""
    return render(
        request,
        "event.html",
        page=page,
        tab="events",
        message_id=message_id,
        event=found,
        event_json=shown,
    )
