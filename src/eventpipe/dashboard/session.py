"""Sign-in, sign-out, token refresh and the first run, for the dashboard's cookies.

The same steps as POST /auth/login, /auth/refresh and /auth/logout (the same throttle, refresh
families and denylist), answered with cookies and pages instead of JSON tokens.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import EmailStr, TypeAdapter, ValidationError

from eventpipe.api.deps import RedisDep, ResourcesDep, SessionDep, get_claims
from eventpipe.api.resources import Resources
from eventpipe.auth import refresh
from eventpipe.auth.accounts import authenticate, normalize_email
from eventpipe.auth.denylist import revoke_token
from eventpipe.auth.passwords import MAX_LENGTH, password_problem
from eventpipe.auth.throttle import LoginThrottle
from eventpipe.auth.tokens import AccessClaims, issue_access_token
from eventpipe.core.errors import ApiError, error_response, json_response
from eventpipe.dashboard.cookies import (
    REFRESH_COOKIE,
    SESSION_PATH,
    clear_session_cookies,
    same_origin,
    set_session_cookies,
)
from eventpipe.dashboard.firstrun import code_matches, create_owner, from_this_machine, has_accounts
from eventpipe.dashboard.pages import PageError, redirect, render, safe_next

router = APIRouter(include_in_schema=False)

FormText = Annotated[str, Form()]
_EMAIL = TypeAdapter(EmailStr)


def check_origin(request: Request, resources: Resources) -> None:
    """Forms are accepted from this server's own pages only (also sign-in: no login CSRF)."""
    if not same_origin(request, resources.settings):
        raise PageError(403, "This form was sent from another site. Open the dashboard and retry.")


async def start_session(
    request: Request, resources: Resources, session: SessionDep, user_id: uuid.UUID, to: str
) -> Response:
    """A new sign-in (refresh family) for `user_id`: its cookies, and a redirect to `to`."""
    settings = resources.settings
    family = await refresh.start_family(
        session, user_id=user_id, ttl_s=settings.refresh_token_ttl_s
    )
    await session.commit()
    issued = issue_access_token(
        resources.keyring, settings, user_id=str(user_id), session_id=str(family.family_id)
    )
    response = redirect(to)
    set_session_cookies(response, request, settings, access=issued.token, refresh=family.token)
    return response


async def _claims_or_none(
    request: Request, resources: Resources, redis: RedisDep
) -> AccessClaims | None:
    try:
        return await get_claims(request, resources, redis, None)
    except ApiError:
        return None


@router.get("/signin")
async def signin_page(
    request: Request,
    resources: ResourcesDep,
    redis: RedisDep,
    session: SessionDep,
    next_path: Annotated[str, Query(alias="next")] = "/",
) -> Response:
    if not await has_accounts(session):
        return redirect("/setup")
    if await _claims_or_none(request, resources, redis) is not None:
        return redirect(safe_next(next_path))
    signed_out = "signed_out" in request.query_params
    return _signin_page(request, 200, safe_next(next_path), signed_out=signed_out)


def _signin_page(
    request: Request,
    status: int,
    to: str,
    *,
    error: str | None = None,
    email: str = "",
    signed_out: bool = False,
) -> Response:
    return render(
        request, "signin.html", status, next=to, error=error, email=email, signed_out=signed_out
    )


@router.post("/signin")
async def signin(
    request: Request,
    resources: ResourcesDep,
    redis: RedisDep,
    session: SessionDep,
    email: FormText = "",
    password: FormText = "",
    next_path: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    check_origin(request, resources)
    to = safe_next(next_path)
    account = normalize_email(email)
    throttle = LoginThrottle(redis, resources.settings)
    # The peer as uvicorn reports it (X-Forwarded-For only from trusted proxies), as /auth/login.
    address = request.client.host if request.client else "unknown"
    wait = await throttle.retry_after(account, address)
    if wait:
        error = f"Too many failed sign-ins. Try again in {(wait + 59) // 60} minutes."
        page = _signin_page(request, 429, to, error=error, email=email)
        page.headers["Retry-After"] = str(wait)
        return page
    user = None
    if len(password) <= MAX_LENGTH:
        user = await authenticate(session, resources.passwords, email=email, password=password)
    if user is None:
        await throttle.record_failure(account, address)
        error = "Invalid email or password."
        return _signin_page(request, 400, to, error=error, email=email)
    await throttle.clear_account(account)
    return await start_session(request, resources, session, user.id, to)


@router.post(f"{SESSION_PATH}/refresh")
async def refresh_session(
    request: Request, resources: ResourcesDep, session: SessionDep
) -> Response:
    """New cookies for the refresh cookie (rotated; reuse revokes the sign-in), as /auth/refresh."""
    if not same_origin(request, resources.settings):
        return error_response(
            403, "cross_origin", "signed in by cookie, but sent from another site"
        )
    settings = resources.settings
    try:
        rotated = await refresh.rotate(
            session,
            token=request.cookies.get(REFRESH_COOKIE, ""),
            ttl_s=settings.refresh_token_ttl_s,
        )
    except refresh.RefreshRejected as error:
        await session.commit()  # keeps a family revocation made on reuse
        refused = error_response(401, "unauthorized", str(error))
        clear_session_cookies(refused)
        return refused
    await session.commit()
    issued = issue_access_token(
        resources.keyring, settings, user_id=str(rotated.user_id), session_id=str(rotated.family_id)
    )
    response = json_response({"expires_in": settings.access_token_ttl_s})
    set_session_cookies(response, request, settings, access=issued.token, refresh=rotated.token)
    return response


@router.post(f"{SESSION_PATH}/signout")
async def signout(
    request: Request, resources: ResourcesDep, redis: RedisDep, session: SessionDep
) -> Response:
    """Revoke the access token at once on every replica and its refresh family, as /auth/logout."""
    check_origin(request, resources)
    claims = await _claims_or_none(request, resources, redis)
    if claims is not None:
        await revoke_token(redis, claims)
        await refresh.revoke_family(session, family_id=uuid.UUID(claims.sid))
    elif REFRESH_COOKIE in request.cookies:
        # The access token has expired: its refresh token still names the sign-in to end.
        try:
            rotated = await refresh.rotate(
                session,
                token=request.cookies[REFRESH_COOKIE],
                ttl_s=resources.settings.refresh_token_ttl_s,
            )
            await refresh.revoke_family(session, family_id=rotated.family_id)
        except refresh.RefreshRejected:
            pass  # unknown, expired or revoked already: nothing left to end
    await session.commit()
    response = redirect("/signin?signed_out")
    clear_session_cookies(response)
    # Also drops pages the browser may hold in its back-forward cache.
    response.headers["Clear-Site-Data"] = '"cache"'
    return response


@router.get("/setup")
async def setup_page(request: Request, resources: ResourcesDep, session: SessionDep) -> Response:
    if await has_accounts(session):
        return redirect("/signin")
    return render(request, "setup.html", **_setup_context(request, resources))


def _setup_context(request: Request, resources: Resources) -> dict[str, object]:
    return {
        "local": from_this_machine(request),
        "has_code": resources.settings.setup_code is not None,
        "error": None,
        "email": "",
    }


def _account_problem(email: str, password: str, again: str) -> str | None:
    try:
        _EMAIL.validate_python(email.strip())
    except ValidationError:
        return "Enter a valid email address."
    if password != again:
        return "The two passwords differ."
    return password_problem(password)


@router.post("/setup")
async def setup(
    request: Request,
    resources: ResourcesDep,
    session: SessionDep,
    email: FormText = "",
    password: FormText = "",
    password_again: FormText = "",
    code: FormText = "",
) -> Response:
    """Create the first account, signed in at once; then the first project."""
    check_origin(request, resources)
    context = {**_setup_context(request, resources), "email": email}
    if not (context["local"] or code_matches(code.strip(), resources.settings)):
        context["error"] = "Open this page on the server itself, or enter the setup code."
        return render(request, "setup.html", 403, **context)
    problem = _account_problem(email, password, password_again)
    if problem is not None:
        return render(request, "setup.html", 400, **{**context, "error": problem})
    user = await create_owner(session, resources.passwords, email=email, password=password)
    if user is None:
        await session.rollback()
        return redirect("/signin")
    return await start_session(request, resources, session, user.id, "/projects/new?first")
