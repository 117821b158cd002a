"""Projects and their members; every route checks the caller's role in the project."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status
from sqlalchemy import select

from eventpipe.api.deps import CurrentUserId, Member, Owner, SessionDep, Viewer
from eventpipe.api.openapi import PROJECT_ERRORS, SIGNED_IN_ERRORS, USER_ERRORS, errors
from eventpipe.core.errors import ApiError
from eventpipe.domain import projects
from eventpipe.domain.schemas import (
    MemberCreate,
    MemberPublic,
    MemberUpdate,
    ProjectCreate,
    ProjectPublic,
    ProjectUpdate,
)
from eventpipe.domain.tables import Project, Role, User

router = APIRouter(prefix="/api/projects", tags=["projects"])
# Changing members may leave a project without an owner: 409.
MEMBER_ERRORS = {**PROJECT_ERRORS, **errors(409)}


def _public(project: Project, role: str) -> ProjectPublic:
    return ProjectPublic(
        id=project.id, name=project.name, created_at=project.created_at, role=Role(role)
    )


async def _project(session: SessionDep, project_id: uuid.UUID) -> Project:
    project = await session.get(Project, project_id)
    if project is None:
        raise ApiError(404, "not_found", "project not found")
    return project


@router.post("", status_code=status.HTTP_201_CREATED, responses=USER_ERRORS)
async def create_project(
    body: ProjectCreate, user_id: CurrentUserId, session: SessionDep
) -> ProjectPublic:
    """Create a project; its creator is its owner."""
    project = await projects.create_project(session, owner_id=user_id, name=body.name)
    await session.commit()
    await session.refresh(project)
    return _public(project, Role.OWNER)


@router.get("", responses=SIGNED_IN_ERRORS)
async def list_projects(user_id: CurrentUserId, session: SessionDep) -> list[ProjectPublic]:
    """Projects the caller belongs to, with the caller's role in each."""
    return [_public(p, role) for p, role in await projects.projects_of(session, user_id=user_id)]


@router.get("/{project_id}", responses=PROJECT_ERRORS)
async def get_project(access: Viewer, session: SessionDep) -> ProjectPublic:
    """One project."""
    return _public(await _project(session, access.project_id), access.role)


@router.patch("/{project_id}", responses=PROJECT_ERRORS)
async def update_project(body: ProjectUpdate, access: Member, session: SessionDep) -> ProjectPublic:
    """Rename a project (members and owners)."""
    project = await _project(session, access.project_id)
    project.name = body.name
    await session.commit()
    return _public(project, access.role)


@router.delete("/{project_id}", status_code=status.HTTP_204_NO_CONTENT, responses=PROJECT_ERRORS)
async def delete_project(access: Owner, session: SessionDep) -> None:
    """Delete a project and everything in it (owners only)."""
    await session.delete(await _project(session, access.project_id))
    await session.commit()


@router.get("/{project_id}/members", responses=PROJECT_ERRORS)
async def list_members(access: Viewer, session: SessionDep) -> list[MemberPublic]:
    """Members of a project and their roles."""
    members = await projects.members_of(session, project_id=access.project_id)
    return [MemberPublic(user_id=u.id, email=u.email, role=Role(role)) for u, role in members]


@router.post("/{project_id}/members", status_code=status.HTTP_201_CREATED, responses=MEMBER_ERRORS)
async def add_member(body: MemberCreate, access: Owner, session: SessionDep) -> MemberPublic:
    """Add an existing account to the project, or change its role (owners only)."""
    user = await session.scalar(select(User).where(User.email == body.email.lower()))
    if user is None:
        raise ApiError(404, "user_not_found", "no account has this email")
    await _set_role(session, access.project_id, user.id, body.role)
    return MemberPublic(user_id=user.id, email=user.email, role=body.role)


@router.patch("/{project_id}/members/{user_id}", responses=MEMBER_ERRORS)
async def change_member(
    user_id: uuid.UUID, body: MemberUpdate, access: Owner, session: SessionDep
) -> MemberPublic:
    """Change a member's role (owners only)."""
    user = await session.get(User, user_id)
    role = await projects.role_in(session, project_id=access.project_id, user_id=user_id)
    if user is None or role is None:
        raise ApiError(404, "not_found", "member not found")
    await _set_role(session, access.project_id, user_id, body.role)
    return MemberPublic(user_id=user.id, email=user.email, role=body.role)


@router.delete(
    "/{project_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=MEMBER_ERRORS,
)
async def remove_member(user_id: uuid.UUID, access: Owner, session: SessionDep) -> None:
    """Remove a member (owners only); the last owner cannot be removed."""
    try:
        removed = await projects.remove_member(
            session, project_id=access.project_id, user_id=user_id
        )
    except projects.LastOwner as error:
        raise ApiError(409, "last_owner", str(error)) from error
    if not removed:
        raise ApiError(404, "not_found", "member not found")
    await session.commit()


async def _set_role(
    session: SessionDep, project_id: uuid.UUID, user_id: uuid.UUID, role: Role
) -> None:
    try:
        await projects.set_member(session, project_id=project_id, user_id=user_id, role=role)
    except projects.LastOwner as error:
        raise ApiError(409, "last_owner", str(error)) from error
    await session.commit()
