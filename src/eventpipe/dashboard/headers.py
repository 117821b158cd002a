"""Security and caching headers of the dashboard's pages and of the JSON api they read.

- Pages: a strict Content-Security-Policy (scripts, styles and connections from this server only,
  no inline script or style, no framing), nosniff, Referrer-Policy same-origin, and no-store so
  that the back button after sign-out shows nothing a browser kept.
- `/api/` and `/auth/` answers: no-store (tokens and project data stay out of every cache).
- Everything else (ingest above all, the hot path) passes through untouched.

A pure ASGI middleware: it wraps only the start of matching responses and leaves streaming (the
live stream) alone.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
)
# Revalidated on each use (StaticFiles answers 304 by ETag), so an upgrade shows at once.
STATIC_HEADERS = (("x-content-type-options", "nosniff"), ("cache-control", "no-cache"))
API_HEADERS = (("x-content-type-options", "nosniff"), ("cache-control", "no-store"))

PAGE_PREFIXES = ("/signin", "/setup", "/session/", "/projects")
STATIC_PREFIX = "/static/"
API_PREFIXES = ("/api/", "/auth/")


def headers_for(path: str) -> tuple[tuple[str, str], ...]:
    """The headers a response to `path` gets (when it did not set them itself)."""
    if path.startswith(API_PREFIXES):
        return API_HEADERS
    if path == "/" or path.startswith(PAGE_PREFIXES):
        return PAGE_HEADERS
    if path.startswith(STATIC_PREFIX):
        return STATIC_HEADERS
    return ()


class SecurityHeaders:
    """Adds `headers_for(path)` to every response of the dashboard and the JSON api."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = headers_for(scope["path"]) if scope["type"] == "http" else ()
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
