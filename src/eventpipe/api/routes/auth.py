"""Sign-in with JWT access tokens and rotating refresh tokens; logout revokes in Redis."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, status

from eventpipe.api.deps import (
    CurrentClaims,
    CurrentUserId,
    RedisDep,
    ResourcesDep,
    SessionDep,
    unauthorized,
)
from eventpipe.api.openapi import SIGNED_IN_ERRORS, errors
from eventpipe.api.resources import Resources
from eventpipe.auth import refresh
from eventpipe.auth.accounts import EmailTaken, authenticate, create_user
from eventpipe.auth.denylist import cut_off_user, revoke_token
from eventpipe.auth.passwords import password_problem
from eventpipe.auth.throttle import LoginThrottle
from eventpipe.auth.tokens import issue_access_token
from eventpipe.core.errors import ApiError
from eventpipe.domain.schemas import Credentials, RefreshRequest, TokenPair, UserPublic
from eventpipe.domain.tables import User

router = APIRouter(tags=["auth"])

INVALID_LOGIN = "invalid email or password"


def _token_pair(resources: Resources, rotated: refresh.Rotated) -> TokenPair:
    issued = issue_access_token(
        resources.keyring,
        resources.settings,
        user_id=str(rotated.user_id),
        session_id=str(rotated.family_id),
    )
    return TokenPair(
        access_token=issued.token,
        refresh_token=rotated.token,
        expires_in=resources.settings.access_token_ttl_s,
    )


def _client_address(request: Request) -> str:
    # The peer address as uvicorn reports it (it honours X-Forwarded-For only from
    # --forwarded-allow-ips), so a client cannot pick its own throttle bucket.
    return request.client.host if request.client else "unknown"


@router.post(
    "/auth/signup",
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 403, 409, 422, 503),
)
async def signup(body: Credentials, resources: ResourcesDep, session: SessionDep) -> UserPublic:
    """Create an account (only when EVENTPIPE_ALLOW_SIGNUP is on)."""
    if not resources.settings.allow_signup:
        raise ApiError(403, "signup_disabled", "sign-up is switched off on this server")
    problem = password_problem(body.password)
    if problem is not None:
        raise ApiError(400, "weak_password", problem)
    try:
        user = await create_user(
            session, resources.passwords, email=body.email, password=body.password
        )
    except EmailTaken as error:
        raise ApiError(409, "email_taken", "an account with this email exists") from error
    await session.commit()
    return UserPublic.model_validate(user)


@router.post("/auth/login", responses=errors(401, 422, 429, 503))
async def login(
    body: Credentials,
    request: Request,
    resources: ResourcesDep,
    session: SessionDep,
    redis: RedisDep,
) -> TokenPair:
    """Exchange email and password for an access token and a refresh token."""
    throttle = LoginThrottle(redis, resources.settings)
    address = _client_address(request)
    wait = await throttle.retry_after(body.email.lower(), address)
    if wait:
        raise ApiError(
            429,
            "too_many_attempts",
            "too many failed logins; try later",
            headers={"Retry-After": str(wait)},
        )
    user = await authenticate(
        session, resources.passwords, email=body.email, password=body.password
    )
    if user is None:
        await throttle.record_failure(body.email.lower(), address)
        raise unauthorized(INVALID_LOGIN)
    await throttle.clear_account(body.email.lower())
    rotated = await refresh.start_family(
        session, user_id=user.id, ttl_s=resources.settings.refresh_token_ttl_s
    )
    await session.commit()
    return _token_pair(resources, rotated)


@router.post("/auth/refresh", responses=errors(401, 422, 503))
async def refresh_tokens(
    body: RefreshRequest, resources: ResourcesDep, session: SessionDep
) -> TokenPair:
    """Spend a refresh token for a new pair; reusing a spent one revokes its whole sign-in."""
    try:
        rotated = await refresh.rotate(
            session, token=body.refresh_token, ttl_s=resources.settings.refresh_token_ttl_s
        )
    except refresh.RefreshRejected as error:
        await session.commit()  # keeps a family revocation made on reuse
        raise unauthorized(str(error)) from error
    await session.commit()
    return _token_pair(resources, rotated)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses=SIGNED_IN_ERRORS)
async def logout(claims: CurrentClaims, redis: RedisDep, session: SessionDep) -> None:
    """Revoke this access token at once on every replica, and its refresh tokens."""
    await revoke_token(redis, claims)
    await refresh.revoke_family(session, family_id=_uuid(claims.sid))
    await session.commit()


@router.post("/auth/logout-all", status_code=status.HTTP_204_NO_CONTENT, responses=SIGNED_IN_ERRORS)
async def logout_all(
    user_id: CurrentUserId, resources: ResourcesDep, redis: RedisDep, session: SessionDep
) -> None:
    """Revoke every token of this user issued until now, on every device."""
    await cut_off_user(redis, str(user_id), token_ttl_s=resources.settings.access_token_ttl_s)
    await refresh.revoke_user_families(session, user_id=user_id)
    await session.commit()


@router.get("/auth/me", responses=SIGNED_IN_ERRORS)
async def me(user_id: CurrentUserId, session: SessionDep) -> UserPublic:
    """The signed-in user."""
    user = await session.get(User, user_id)
    if user is None:
        raise unauthorized("account no longer exists")
    return UserPublic.model_validate(user)


@router.get("/.well-known/jwks.json")
async def jwks(resources: ResourcesDep) -> dict[str, Any]:
    """Public keys that verify access tokens (current and not yet retired)."""
    return resources.keyring.jwks()


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as error:
        raise unauthorized("invalid session id") from error
