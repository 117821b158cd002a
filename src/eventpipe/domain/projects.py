"""Projects and memberships: the tenancy every project-scoped route checks."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.domain.tables import Membership, Project, Role, User

RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.OWNER: 2}


class LastOwner(Exception):
    """A project must keep at least one owner."""


async def create_project(session: AsyncSession, *, owner_id: uuid.UUID, name: str) -> Project:
    project = Project(id=uuid.uuid4(), name=name)
    session.add(project)
    await session.flush()
    session.add(Membership(project_id=project.id, user_id=owner_id, role=Role.OWNER))
    await session.flush()
    return project


async def projects_of(session: AsyncSession, *, user_id: uuid.UUID) -> list[tuple[Project, str]]:
    rows = await session.execute(
        select(Project, Membership.role)
        .join(Membership, Membership.project_id == Project.id)
        .where(Membership.user_id == user_id)
        .order_by(Project.created_at, Project.id)
    )
    return [(project, role) for project, role in rows]


async def role_in(
    session: AsyncSession, *, project_id: uuid.UUID, user_id: uuid.UUID
) -> Role | None:
    role = await session.scalar(
        select(Membership.role).where(
            Membership.project_id == project_id, Membership.user_id == user_id
        )
    )
    return Role(role) if role is not None else None


async def members_of(session: AsyncSession, *, project_id: uuid.UUID) -> list[tuple[User, str]]:
    rows = await session.execute(
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.project_id == project_id)
        .order_by(User.email)
    )
    return [(user, role) for user, role in rows]


async def _owners(session: AsyncSession, project_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count()).where(
            Membership.project_id == project_id, Membership.role == Role.OWNER
        )
    )
    return int(count or 0)


async def set_member(
    session: AsyncSession, *, project_id: uuid.UUID, user_id: uuid.UUID, role: Role
) -> None:
    """Add `user_id` with `role`, or change the role they have."""
    membership = await session.get(Membership, (project_id, user_id))
    if membership is None:
        session.add(Membership(project_id=project_id, user_id=user_id, role=role))
    else:
        if membership.role == Role.OWNER and role != Role.OWNER:
            await _keep_an_owner(session, project_id)
        membership.role = role
    await session.flush()


async def _keep_an_owner(session: AsyncSession, project_id: uuid.UUID) -> None:
    # Lock the project's memberships so two demotions cannot both see two owners.
    await session.execute(
        select(Membership.user_id).where(Membership.project_id == project_id).with_for_update()
    )
    if await _owners(session, project_id) <= 1:
        raise LastOwner("a project must keep at least one owner")


async def remove_member(
    session: AsyncSession, *, project_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    membership = await session.get(Membership, (project_id, user_id))
    if membership is None:
        return False
    if membership.role == Role.OWNER:
        await _keep_an_owner(session, project_id)
    await session.execute(
        delete(Membership).where(Membership.project_id == project_id, Membership.user_id == user_id)
    )
    return True
