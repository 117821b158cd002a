"""The dashboard's pages of the background jobs: a project's exports, and its alert rules with
their webhook endpoints and delivery logs.

Plain HTML forms as in manage.py, decided by the same body schemas and domain functions as the
JSON routes (api/routes/exports.py, api/routes/alerts.py). Reloading the exports page shows each
export's state; with scripts, static/exports.js follows the unfinished ones at GET /api/jobs/{id}.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.alerts.addresses import RefusedAddress
from eventpipe.api.deps import ResourcesDep, SessionDep
from eventpipe.api.resources import Resources
from eventpipe.api.routes.exports import job_public
from eventpipe.core.queue import UNAVAILABLE
from eventpipe.dashboard.pages import PageError, ProjectDep, ProjectPage, redirect, render, when
from eventpipe.domain import alerts
from eventpipe.domain.events import EVENT_TYPES
from eventpipe.domain.exports import ExportCreate, JobPublic, Progress, create_export, exports_of
from eventpipe.domain.tables import AlertComparison, AlertRule, ExportState, Role
from eventpipe.exports.formats import ExportFormat

router = APIRouter(include_in_schema=False)

EXPORTS_SHOWN = 50
DELIVERIES_SHOWN = 100
FILTER_FIELDS = ("name", "type", "user_id", "anonymous_id")
# The search page's fields (routes.SEARCH_FIELDS) and the file's format.
EXPORT_FIELDS = ("format", "from", "to", *FILTER_FIELDS, "property", "value")
RULE_FIELDS = ("name", "event", "comparison", "threshold", "window_minutes", "webhook_url")
NEW_EXPORT = dict.fromkeys(EXPORT_FIELDS, "") | {"format": ExportFormat.CSV.value}
NEW_RULE = dict.fromkeys(RULE_FIELDS, "") | {"comparison": "above", "window_minutes": "5"}
FORMATS = [choice.value for choice in ExportFormat]
TYPES = sorted(EVENT_TYPES)
COMPARISONS = {choice.value: choice.value.replace("_", " ") for choice in AlertComparison}
UNITS = ("B", "kB", "MB", "GB", "TB")
NOTICES = {
    "requested": "Export requested. Asking again for the same export finds this one.",
    "enabled": "The endpoint is enabled again: the next message will be delivered.",
    "deleted": "The rule, its endpoint and its delivery log are deleted.",
}


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


def _problem(error: ValueError) -> str:
    """What is wrong with a form, for its page: the field and pydantic's message, or ours."""
    if not isinstance(error, ValidationError):
        return str(error)
    first = error.errors()[0]
    fields = [str(part) for part in first["loc"] if isinstance(part, str)]
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{fields[-1]}: {message}" if fields else message


async def _form(request: Request, fields: tuple[str, ...]) -> dict[str, str]:
    """The posted form's text fields (absent ones empty)."""
    posted = await request.form()
    return {name: value if isinstance(value := posted.get(name), str) else "" for name in fields}


# --- exports ------------------------------------------------------------------------------------


def size_text(size: int | None) -> str:
    """A file size in decimal units, as exports.js shows it."""
    if size is None:
        return ""
    value, unit = float(size), 0
    while value >= 1000 and unit < len(UNITS) - 1:
        value, unit = value / 1000, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {UNITS[unit]}"


def rows_text(progress: Progress) -> str:
    if progress.estimated is None:
        return f"{progress.rows:,} rows"
    return f"{progress.rows:,} of about {progress.estimated:,} rows"


def progress_bar(job: JobPublic) -> tuple[int, int] | None:
    """The <progress> element's (value, max); None while running without an estimate
    (indeterminate). exports.js does the same."""
    rows, estimated = job.progress.rows, job.progress.estimated
    if job.state == ExportState.SUCCEEDED:
        return (1, 1)
    if estimated:
        return (min(rows, estimated), estimated)
    return None if job.state == ExportState.RUNNING else (0, 1)


def export_summary(inputs: dict[str, Any]) -> str:
    """What an export holds: its range and filters."""
    span = f"{when(inputs.get('from')) or 'the first event'} to {when(inputs.get('to'))}"
    filters = dict(inputs.get("filters") or {})
    path, value = filters.pop("property", None), filters.pop("value", None)
    given = [f"{field} = {shown}" for field, shown in filters.items()]
    if path is not None:
        given.append(f"{path} = {value}")
    return "; ".join([span, *given])


def export_body(form: dict[str, str]) -> ExportCreate:
    """The form as the JSON api's body, with the search page's rules; ValueError says why not."""
    path = form["property"].strip()
    if bool(path) != bool(form["value"]):
        raise ValueError("`property` and `value` go together")
    filters = {field: form[field] for field in FILTER_FIELDS if form[field]}
    if path:
        filters.update(property=path, value=form["value"])
    body = ExportCreate.model_validate(
        {"format": form["format"], "from": form["from"] or None, "to": form["to"] or None,
         "filters": filters}
    )  # fmt: skip
    if body.start and body.end and body.end <= body.start:
        raise ValueError("`to` must be after `from`")
    return body


async def _exports_page(
    request: Request, page: ProjectPage, session: AsyncSession, resources: Resources,
    status: int = 200, *, form: dict[str, str] | None = None, error: str | None = None,
) -> Response:  # fmt: skip
    rows = await exports_of(session, project_id=page.project.id, limit=EXPORTS_SHOWN)
    return render(
        request, "exports.html", status, page=page, tab="exports",
        # Viewers too: an export holds what they may already search (as the JSON api allows).
        jobs=[job_public(row, resources) for row in rows], can_edit=page.can(Role.VIEWER),
        notice=_notice(request), error=error, form=form or NEW_EXPORT, formats=FORMATS,
        types=TYPES, size_text=size_text, rows_text=rows_text, progress_bar=progress_bar,
        export_summary=export_summary, link_minutes=resources.settings.export_link_ttl_s // 60,
        retention_days=resources.settings.export_retention_days,
    )  # fmt: skip


@router.get("/projects/{project_id}/exports")
async def exports(
    request: Request, page: ProjectDep, session: SessionDep, resources: ResourcesDep
) -> Response:
    return await _exports_page(request, page, session, resources)


@router.post("/projects/{project_id}/exports")
async def request_export(
    request: Request, page: ProjectDep, session: SessionDep, resources: ResourcesDep
) -> Response:
    """An export of the archived events that match (the same one again for the same inputs)."""
    page.require(Role.VIEWER)
    form = await _form(request, EXPORT_FIELDS)
    try:
        body = export_body(form)
    except ValueError as error:
        return await _exports_page(
            request, page, session, resources, 422, form=form, error=_problem(error)
        )
    if resources.queue is None:
        raise PageError(503, "The job queue needs PostgreSQL (EVENTPIPE_DATABASE_URL).")
    # Read before: create_export may roll back, which expires the rows this page loaded.
    project_id, user_id = page.project.id, page.user.id
    try:
        export = await create_export(
            session, resources.queue, project_id=project_id, user_id=user_id, body=body
        )
    except UNAVAILABLE as error:
        raise PageError(503, "The job queue is unavailable; try again.") from error
    return redirect(f"/projects/{project_id}/exports?done=requested#job-{export.id}")


# --- alerts -------------------------------------------------------------------------------------


async def _alerts_page(
    request: Request, page: ProjectPage, session: AsyncSession, status: int = 200,
    *, form: dict[str, str] | None = None, error: str | None = None,
) -> Response:  # fmt: skip
    # The public schema, which has no secret: a page listing rules cannot show one.
    rules = [
        alerts.AlertRulePublic.model_validate(rule)
        for rule in await alerts.rules_of(session, project_id=page.project.id)
    ]
    return render(
        request, "alerts.html", status, page=page, tab="alerts", rules=rules,
        can_edit=page.can(Role.MEMBER), notice=_notice(request), error=error,
        form=form or NEW_RULE, comparisons=COMPARISONS,
        max_window=alerts.MAX_WINDOW_MINUTES,
    )  # fmt: skip


async def _rule(session: AsyncSession, page: ProjectPage, rule_id: uuid.UUID) -> AlertRule:
    rule = await alerts.rule_of(session, project_id=page.project.id, rule_id=rule_id)
    if rule is None:
        raise PageError(404, "No such alert rule.")
    return rule


@router.get("/projects/{project_id}/alerts")
async def alert_rules(request: Request, page: ProjectDep, session: SessionDep) -> Response:
    return await _alerts_page(request, page, session)


@router.post("/projects/{project_id}/alerts")
async def create_alert_rule(
    request: Request, page: ProjectDep, session: SessionDep, resources: ResourcesDep
) -> Response:
    """A rule and its endpoint; the signing secret is shown on the answer's page only."""
    page.require(Role.MEMBER)
    form = await _form(request, RULE_FIELDS)
    try:
        body = alerts.AlertRuleCreate.model_validate({**form, "event": form["event"] or None})
        rule = await alerts.create_rule(
            session, project_id=page.project.id, body=body,
            allow_private=resources.settings.webhook_allow_private,
        )  # fmt: skip
    except RefusedAddress as refused:
        problem = f"The webhook URL is refused: {refused}."
        return await _alerts_page(request, page, session, 422, form=form, error=problem)
    except ValidationError as error:
        return await _alerts_page(request, page, session, 422, form=form, error=_problem(error))
    return render(
        request, "alert_created.html", 201, page=page, tab="alerts",
        rule=alerts.AlertRulePublic.model_validate(rule), secret=rule.webhook_secret,
    )  # fmt: skip


@router.get("/projects/{project_id}/alerts/{rule_id}")
async def alert_rule(
    request: Request, page: ProjectDep, session: SessionDep, rule_id: uuid.UUID
) -> Response:
    rule = await _rule(session, page, rule_id)
    deliveries = await alerts.deliveries_of(session, rule_id=rule.id, limit=DELIVERIES_SHOWN)
    return render(
        request, "alert.html", page=page, tab="alerts",
        rule=alerts.AlertRulePublic.model_validate(rule),
        deliveries=[alerts.DeliveryPublic.model_validate(row) for row in deliveries],
        can_edit=page.can(Role.MEMBER), notice=_notice(request), comparisons=COMPARISONS,
        limit=DELIVERIES_SHOWN,
    )  # fmt: skip


@router.post("/projects/{project_id}/alerts/{rule_id}/enable")
async def enable_alert_rule(page: ProjectDep, session: SessionDep, rule_id: uuid.UUID) -> Response:
    """Enable a rule's endpoint again (after too many failed deliveries, say)."""
    page.require(Role.MEMBER)
    rule = await _rule(session, page, rule_id)
    await alerts.update_rule(session, rule, alerts.AlertRuleUpdate(enabled=True))
    return redirect(f"/projects/{page.project.id}/alerts/{rule_id}?done=enabled")


@router.post("/projects/{project_id}/alerts/{rule_id}/delete")
async def delete_alert_rule(page: ProjectDep, session: SessionDep, rule_id: uuid.UUID) -> Response:
    """Delete a rule, its endpoint and its delivery log."""
    page.require(Role.MEMBER)
    await alerts.delete_rule(session, await _rule(session, page, rule_id))
    return redirect(f"/projects/{page.project.id}/alerts?done=deleted")
