"""The dashboard's settings pages: a new project with its first key, write keys, members.

Plain HTML forms, posted with the access cookie (whose same-origin rule applies: see cookies.py);
the same domain functions and body schemas as the JSON routes decide what is allowed.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.api.deps import SessionDep
from eventpipe.api.routes.sdksettings import public_url
from eventpipe.auth.accounts import normalize_email
from eventpipe.auth.writekeys import create_write_key, revoke_write_key, write_keys_of
from eventpipe.dashboard.pages import (
    PageError,
    PageUser,
    ProjectDep,
    ProjectPage,
    redirect,
    render,
)
from eventpipe.dashboard.snippets import snippets
from eventpipe.domain import projects
from eventpipe.domain.schemas import MemberCreate, MemberUpdate, ProjectCreate, WriteKeyCreate
from eventpipe.domain.tables import Role, User, WriteKey

router = APIRouter(include_in_schema=False)

FormText = Annotated[str, Form()]
ROLES = [role.value for role in Role]
NOTICES = {
    "revoked": "The key is revoked: events sent with it are refused.",
    "added": "Member added.",
    "changed": "Role changed.",
    "removed": "Member removed.",
}


def _problem(error: ValidationError) -> str:
    first = error.errors()[0]
    return str(first["msg"]).removeprefix("Value error, ")


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


def _key_created(request: Request, page: ProjectPage, row: WriteKey, key: str) -> Response:
    base = public_url(request)
    return render(
        request,
        "key_created.html",
        201,
        page=page,
        tab="keys",
        key=key,
        key_name=row.name,
        snippets=snippets(base, key),
    )


@router.get("/projects/new")
async def new_project_page(request: Request, user: PageUser) -> Response:
    first = "first" in request.query_params
    return render(
        request, "new_project.html", user=user, first=first, error=None, name="", key_name=""
    )


@router.post("/projects/new")
async def new_project(
    request: Request,
    user: PageUser,
    session: SessionDep,
    name: FormText = "",
    key_name: FormText = "",
) -> Response:
    """A project owned by its creator, and its first write key, shown once with snippets."""
    try:
        body = ProjectCreate(name=name)
        key_body = WriteKeyCreate(name=key_name or "default")
    except ValidationError as error:
        context = {"first": False, "name": name, "key_name": key_name}
        return render(request, "new_project.html", 400, user=user, error=_problem(error), **context)
    project = await projects.create_project(session, owner_id=user.id, name=body.name)
    row, key = await create_write_key(session, project_id=project.id, name=key_body.name)
    await session.commit()
    mine = await projects.projects_of(session, user_id=user.id)
    return _key_created(request, ProjectPage(user, project, Role.OWNER, mine), row, key)


# --- write keys ---------------------------------------------------------------------------------


async def _keys_page(
    request: Request, page: ProjectPage, session: AsyncSession, status: int = 200, **form: str
) -> Response:
    keys = await write_keys_of(session, project_id=page.project.id)
    return render(
        request,
        "keys.html",
        status,
        page=page,
        tab="keys",
        keys=keys,
        can_edit=page.can(Role.MEMBER),
        notice=_notice(request),
        error=form.get("error"),
        form_name=form.get("name", ""),
        form_origins=form.get("origins", ""),
    )


@router.get("/projects/{project_id}/keys")
async def keys(request: Request, page: ProjectDep, session: SessionDep) -> Response:
    return await _keys_page(request, page, session)


@router.post("/projects/{project_id}/keys")
async def create_key(
    request: Request,
    page: ProjectDep,
    session: SessionDep,
    name: FormText = "",
    allowed_origins: FormText = "",
) -> Response:
    page.require(Role.MEMBER)
    origins = [line.strip() for line in allowed_origins.splitlines() if line.strip()]
    try:
        body = WriteKeyCreate(name=name, allowed_origins=origins)
    except ValidationError as error:
        form = {"error": _problem(error), "name": name, "origins": allowed_origins}
        return await _keys_page(request, page, session, 400, **form)
    row, key = await create_write_key(
        session, project_id=page.project.id, name=body.name, allowed_origins=body.allowed_origins
    )
    await session.commit()
    return _key_created(request, page, row, key)


@router.post("/projects/{project_id}/keys/{key_id}/revoke")
async def revoke_key(page: ProjectDep, session: SessionDep, key_id: uuid.UUID) -> Response:
    page.require(Role.MEMBER)
    if not await revoke_write_key(session, project_id=page.project.id, key_id=key_id):
        raise PageError(404, "No such write key, or it is revoked already.")
    await session.commit()
    return redirect(f"/projects/{page.project.id}/keys?done=revoked")


# --- members ------------------------------------------------------------------------------------


async def _members_page(
    request: Request, page: ProjectPage, session: AsyncSession, status: int = 200, **form: str
) -> Response:
    members = await projects.members_of(session, project_id=page.project.id)
    return render(
        request,
        "members.html",
        status,
        page=page,
        tab="members",
        members=members,
        roles=ROLES,
        can_edit=page.can(Role.OWNER),
        notice=_notice(request),
        error=form.get("error"),
        form_email=form.get("email", ""),
    )


@router.get("/projects/{project_id}/members")
async def members(request: Request, page: ProjectDep, session: SessionDep) -> Response:
    return await _members_page(request, page, session)


async def _set_role(
    request: Request, page: ProjectPage, session: AsyncSession, user_id: uuid.UUID, role: Role
) -> Response | None:
    """Set the role (the last owner stays owner); an error page, or None when done."""
    try:
        await projects.set_member(session, project_id=page.project.id, user_id=user_id, role=role)
    except projects.LastOwner as error:
        # Raised before any change: nothing to roll back (which would expire the page's rows).
        return await _members_page(request, page, session, 409, error=f"{error}.")
    await session.commit()
    return None


@router.post("/projects/{project_id}/members")
async def add_member(
    request: Request,
    page: ProjectDep,
    session: SessionDep,
    email: FormText = "",
    role: FormText = "member",
) -> Response:
    page.require(Role.OWNER)
    try:
        body = MemberCreate.model_validate({"email": email, "role": role})
    except ValidationError as error:
        return await _members_page(request, page, session, 400, error=_problem(error), email=email)
    user = await session.scalar(select(User).where(User.email == normalize_email(body.email)))
    if user is None:
        problem = "No account has this email: create it with `eventpipe user create` first."
        return await _members_page(request, page, session, 404, error=problem, email=email)
    refused = await _set_role(request, page, session, user.id, body.role)
    return refused or redirect(f"/projects/{page.project.id}/members?done=added")


@router.post("/projects/{project_id}/members/{user_id}/role")
async def change_role(
    request: Request, page: ProjectDep, session: SessionDep, user_id: uuid.UUID, role: FormText = ""
) -> Response:
    page.require(Role.OWNER)
    try:
        body = MemberUpdate.model_validate({"role": role})
    except ValidationError as error:
        return await _members_page(request, page, session, 400, error=_problem(error))
    if await projects.role_in(session, project_id=page.project.id, user_id=user_id) is None:
        raise PageError(404, "No such member.")
    refused = await _set_role(request, page, session, user_id, body.role)
    return refused or redirect(f"/projects/{page.project.id}/members?done=changed")


@router.post("/projects/{project_id}/members/{user_id}/remove")
async def remove_member(
    request: Request, page: ProjectDep, session: SessionDep, user_id: uuid.UUID
) -> Response:
    page.require(Role.OWNER)
    try:
        removed = await projects.remove_member(session, project_id=page.project.id, user_id=user_id)
    except projects.LastOwner as error:
        return await _members_page(request, page, session, 409, error=f"{error}.")
    if not removed:
        raise PageError(404, "No such member.")
    await session.commit()
    if user_id == page.user.id:
        return redirect("/")
    return redirect(f"/projects/{page.project.id}/members?done=removed")
