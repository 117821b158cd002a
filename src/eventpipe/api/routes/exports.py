"""Exports: ask for one (202 and a job), follow the job, download the file by a signed link."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import RedirectResponse, StreamingResponse

from eventpipe.api.deps import CurrentUserId, ResourcesDep, SessionDep, Viewer
from eventpipe.api.openapi import PROJECT_ERRORS, errors
from eventpipe.api.resources import Resources
from eventpipe.core.errors import ApiError
from eventpipe.core.queue import UNAVAILABLE
from eventpipe.domain.exports import (
    ExportCreate,
    JobPublic,
    Progress,
    create_export,
    exports_of,
    file_key,
    get_export,
)
from eventpipe.domain.projects import role_in
from eventpipe.domain.tables import Export, ExportState
from eventpipe.exports.formats import ExportFormat, media_type
from eventpipe.exports.links import LinkError, check_link, signed_query

router = APIRouter(tags=["exports"])
CHUNK = 256 * 1024


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    # A sync generator: Starlette runs it in its thread pool, off the event loop.
    with file:
        while chunk := file.read(CHUNK):
            yield chunk


def job_public(export: Export, resources: Resources) -> JobPublic:
    url = expires_at = None
    if export.state == ExportState.SUCCEEDED:
        query, expires = signed_query(
            resources.keyring, export.id, ttl_s=resources.settings.export_link_ttl_s
        )
        url = f"/api/exports/{export.id}/download?{query}"
        expires_at = datetime.fromtimestamp(expires, UTC)
    return JobPublic(
        id=export.id, project_id=export.project_id, state=ExportState(export.state),
        format=ExportFormat(export.format), inputs=export.inputs, attempts=export.attempts,
        progress=Progress(rows=export.rows_written, estimated=export.rows_estimated),
        size_bytes=export.size_bytes, error=export.error, created_at=export.created_at,
        started_at=export.started_at, finished_at=export.finished_at, download_url=url,
        download_expires_at=expires_at,
    )  # fmt: skip


@router.post(
    "/api/projects/{project_id}/exports",
    status_code=status.HTTP_202_ACCEPTED,
    responses=PROJECT_ERRORS,
)
async def request_export(
    body: ExportCreate, access: Viewer, session: SessionDep, resources: ResourcesDep,
    response: Response,
) -> JobPublic:  # fmt: skip
    """Export the archived events that match; the answer is the job (the same one again for the
    same inputs), to follow at `GET /api/jobs/{id}`."""
    if body.start and body.end and body.end <= body.start:
        raise ApiError(422, "invalid_range", "`to` must be after `from`")
    if resources.queue is None:
        raise ApiError(503, "unavailable", "PostgreSQL is not configured (EVENTPIPE_DATABASE_URL)")
    try:
        export = await create_export(
            session, resources.queue, project_id=access.project_id, user_id=access.user_id,
            body=body,
        )  # fmt: skip
    except UNAVAILABLE as error:
        raise ApiError(503, "unavailable", "the job queue is unavailable; retry") from error
    response.headers["Location"] = f"/api/jobs/{export.id}"
    return job_public(export, resources)


@router.get("/api/projects/{project_id}/exports", responses=PROJECT_ERRORS)
async def list_exports(
    access: Viewer, session: SessionDep, resources: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[JobPublic]:  # fmt: skip
    """The project's exports, newest first."""
    rows = await exports_of(session, project_id=access.project_id, limit=limit)
    return [job_public(row, resources) for row in rows]


@router.get("/api/jobs/{job_id}", responses=errors(401, 403, 404, 422, 503))
async def get_job(
    job_id: uuid.UUID, user_id: CurrentUserId, session: SessionDep, resources: ResourcesDep
) -> JobPublic:
    """A job's state, progress (rows so far and the estimate), error, and its download link
    once it has succeeded (a fresh one at every call)."""
    export = await get_export(session, job_id)
    if (
        export is None
        or await role_in(session, project_id=export.project_id, user_id=user_id) is None
    ):
        raise ApiError(404, "not_found", "job not found")
    return job_public(export, resources)


@router.get(
    "/api/exports/{export_id}/download",
    response_class=StreamingResponse,
    responses={
        200: {"content": {media_type(f): {} for f in ExportFormat}, "description": "The file"},
        307: {"description": "To the file's signed URL in the S3 bucket"},
        **errors(403, 404, 422, 503),
    },
)
async def download_export(
    export_id: uuid.UUID, session: SessionDep, resources: ResourcesDep,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    kid: Annotated[str, Query(min_length=1, max_length=100)],
    signature: Annotated[str, Query(min_length=1, max_length=200)],
) -> Response:  # fmt: skip
    """The export's file, for whoever holds a link that `GET /api/jobs/{id}` gave (no sign-in:
    the link is the permission, until it expires)."""
    try:
        check_link(resources.keyring, export_id, expires=expires, kid=kid, signature=signature)
    except LinkError as error:
        raise ApiError(403, "invalid_link", str(error)) from error
    export = await get_export(session, export_id)
    if export is None or export.state != ExportState.SUCCEEDED:
        raise ApiError(404, "not_found", "this export has no file (expired, or not finished)")
    key, fmt = file_key(export), ExportFormat(export.format)
    filename = f"eventpipe-{export.id}{key[key.index('.') :]}"
    store = resources.exports
    presigned = store.presigned_url(key, 300, filename)
    if presigned is not None:
        return RedirectResponse(presigned, status_code=307)
    try:
        file = store.open_read(key)
    except FileNotFoundError as error:
        raise ApiError(404, "not_found", "the export's file is gone from the store") from error
    return StreamingResponse(
        _chunks(file),
        media_type=media_type(fmt),
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(export.size_bytes or store.size(key)),
        },
    )
