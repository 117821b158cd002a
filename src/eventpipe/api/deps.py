"""Request dependencies, declared once as Annotated aliases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.api.resources import Resources
from eventpipe.auth.denylist import is_revoked
from eventpipe.auth.tokens import AccessClaims, InvalidToken
from eventpipe.core.errors import ApiError
from eventpipe.dashboard.cookies import ACCESS_COOKIE, needs_origin_check, same_origin
from eventpipe.domain.projects import RANK, role_in
from eventpipe.domain.tables import Role


async def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_redis(resources: ResourcesDep) -> Redis:
    if resources.redis is None:
        raise ApiError(503, "unavailable", "Redis is not configured (EVENTPIPE_REDIS_URL)")
    return resources.redis


RedisDep = Annotated[Redis, Depends(get_redis)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    if resources.sessions is None:
        raise ApiError(503, "unavailable", "PostgreSQL is not configured (EVENTPIPE_DATABASE_URL)")
    async with resources.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False)


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        message,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _presented_token(
    request: Request, resources: Resources, credentials: HTTPAuthorizationCredentials | None
) -> str:
    """The bearer token, else the dashboard's access cookie; an unsafe request that the cookie
    authenticates must come from this server's own pages (no cross-site request forgery)."""
    if credentials is not None:
        return credentials.credentials
    token = request.cookies.get(ACCESS_COOKIE)
    if not token:
        raise unauthorized("missing bearer token")
    if needs_origin_check(request) and not same_origin(request, resources.settings):
        raise ApiError(403, "cross_origin", "signed in by cookie, but sent from another site")
    return token


async def get_claims(
    request: Request,
    resources: ResourcesDep,
    redis: RedisDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AccessClaims:
    """A valid, unrevoked access token from `Authorization: Bearer` or the dashboard's cookie,
    or 401."""
    token = _presented_token(request, resources, credentials)
    try:
        claims = resources.tokens.verify(token)
    except InvalidToken as error:
        raise unauthorized(str(error)) from error
    try:
        revoked = await is_revoked(redis, claims)
    except RedisError as error:
        # Without the denylist a logged-out token cannot be told apart: refuse, retryably.
        raise ApiError(503, "unavailable", "cannot check token revocation right now") from error
    if revoked:
        raise unauthorized("token revoked")
    return claims


CurrentClaims = Annotated[AccessClaims, Depends(get_claims)]


async def current_user_id(claims: CurrentClaims) -> uuid.UUID:
    try:
        return uuid.UUID(claims.sub)
    except ValueError as error:
        raise unauthorized("invalid token subject") from error


CurrentUserId = Annotated[uuid.UUID, Depends(current_user_id)]


@dataclass(frozen=True)
class ProjectAccess:
    project_id: uuid.UUID
    user_id: uuid.UUID
    role: Role


def require_role(minimum: Role) -> object:
    """A dependency: the caller's role in the path's project, at least `minimum`.

    Not a member answers 404, as if the project did not exist, so ids of other tenants cannot be
    probed; a member without enough rights gets 403.
    """

    async def dependency(
        project_id: uuid.UUID, user_id: CurrentUserId, session: SessionDep
    ) -> ProjectAccess:
        role = await role_in(session, project_id=project_id, user_id=user_id)
        if role is None:
            raise ApiError(404, "not_found", "project not found")
        if RANK[role] < RANK[minimum]:
            raise ApiError(403, "forbidden", f"this needs the {minimum.value} role or higher")
        return ProjectAccess(project_id=project_id, user_id=user_id, role=role)

    return Depends(dependency)


Viewer = Annotated[ProjectAccess, require_role(Role.VIEWER)]
Member = Annotated[ProjectAccess, require_role(Role.MEMBER)]
Owner = Annotated[ProjectAccess, require_role(Role.OWNER)]
