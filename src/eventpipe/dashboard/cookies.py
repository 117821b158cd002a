"""The dashboard's session cookies and the same-origin rule that protects what they authenticate.

The access token rides in an HttpOnly cookie sent with every request to this server (pages, the
JSON api, the live stream: an EventSource cannot send headers); the refresh token in another,
sent only to the session routes under SESSION_PATH. Both are SameSite=Strict, and every unsafe
request a cookie authenticates must also come from this server's own pages (its Origin header, or
Sec-Fetch-Site: same-origin): cross-site request forgery has neither a cookie nor an origin.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventpipe.core.config import Settings

ACCESS_COOKIE = "ep_access"
REFRESH_COOKIE = "ep_refresh"
SESSION_PATH = "/session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def own_origins(request: Request, settings: Settings) -> set[str]:
    """The origins this server's pages have: the one the request came in on, and the public URL."""
    origins = {f"{request.url.scheme}://{request.url.netloc}"}
    if settings.public_url is not None:
        public = settings.public_url
        default_port = {"http": 80, "https": 443}.get(public.scheme)
        port = f":{public.port}" if public.port not in {None, default_port} else ""
        origins.add(f"{public.scheme}://{public.host}{port}")
    return origins


def same_origin(request: Request, settings: Settings) -> bool:
    """Whether the browser says the request comes from one of this server's own pages."""
    origin = request.headers.get("origin")
    if origin is not None:
        # "null" (sandboxed frames, some redirects) is nobody's origin: refused.
        return origin in own_origins(request, settings)
    return request.headers.get("sec-fetch-site") == "same-origin"


def needs_origin_check(request: Request) -> bool:
    return request.method not in SAFE_METHODS


def set_session_cookies(
    response: Response, request: Request, settings: Settings, *, access: str, refresh: str
) -> None:
    # Secure whenever the page is https (as uvicorn reports it, behind trusted proxies too);
    # plain http stays usable on a developer's loopback.
    secure = request.url.scheme == "https"
    response.set_cookie(
        ACCESS_COOKIE,
        access,
        max_age=settings.access_token_ttl_s,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    response.set_cookie(
        REFRESH_COOKIE,
        refresh,
        max_age=settings.refresh_token_ttl_s,
        path=SESSION_PATH,
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookies(response: Response) -> None:
    response.delete_cookie(ACCESS_COOKIE, path="/", httponly=True, samesite="strict")
    response.delete_cookie(REFRESH_COOKIE, path=SESSION_PATH, httponly=True, samesite="strict")
