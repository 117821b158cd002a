"""Security and caching headers of every answer: the dashboard's pages, the JSON api, the rest.

- Pages: a strict Content-Security-Policy (scripts, styles and connections from this server only,
  no inline script or style, no framing), nosniff, Referrer-Policy same-origin, and no-store so
  that the back button after sign-out shows nothing a browser kept.
- Everything else (JSON, ingest, health, the schema, error answers of unknown paths): a policy
  under which nothing in the answer runs, loads or is framed, should a browser open it as a
  document; nosniff; no referrer. `/api/` and `/auth/` answers are no-store too (tokens and project
  data stay out of every cache); the API docs pages load their scripts from a CDN, so their
  policy only forbids framing.

A pure ASGI middleware: it adds the missing headers to the start of each response as raw bytes
(about a microsecond, ingest being the hot path) and leaves streaming (the live stream) alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Headers = tuple[tuple[str, str], ...]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
NOTHING_CSP = "default-src 'none'; frame-ancestors 'none'"
PAGE_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
)
OTHER_HEADERS = (
    ("content-security-policy", NOTHING_CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)
# Revalidated on each use (StaticFiles answers 304 by ETag), so an upgrade shows at once.
STATIC_HEADERS = (*OTHER_HEADERS, ("cache-control", "no-cache"))
API_HEADERS = (*OTHER_HEADERS, ("cache-control", "no-store"))
DOCS_HEADERS = (
    ("content-security-policy", "frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)

PAGE_PREFIXES = ("/signin", "/setup", "/session/", "/projects")
STATIC_PREFIX = "/static/"
API_PREFIXES = ("/api/", "/auth/")
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


def headers_for(path: str) -> Headers:
    """The headers a response to `path` gets (when it did not set them itself)."""
    if path.startswith(API_PREFIXES):
        return API_HEADERS
    if path == "/" or path.startswith(PAGE_PREFIXES):
        return PAGE_HEADERS
    if path.startswith(STATIC_PREFIX):
        return STATIC_HEADERS
    if path in DOCS_PATHS:
        return DOCS_HEADERS
    return OTHER_HEADERS


def raw_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    """Headers as an ASGI answer carries them: bytes, names in lower case."""
    return tuple((name.lower().encode(), value.encode()) for name, value in headers)


_GROUPS: tuple[Headers, ...] = (
    PAGE_HEADERS, OTHER_HEADERS, STATIC_HEADERS, API_HEADERS, DOCS_HEADERS,
)  # fmt: skip
_RAW = {group: raw_headers(group) for group in _GROUPS}
# For answers built as raw ASGI (the ingest routes, api/ingestasgi.py).
OTHER_RAW = _RAW[OTHER_HEADERS]


class SecurityHeaders:
    """Adds `headers_for(path)` to every response, where the route did not set them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _RAW[headers_for(scope["path"])]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in extra if h[0] not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)
