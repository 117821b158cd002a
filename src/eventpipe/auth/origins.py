"""Browser origins: which may send with a write key, and the CORS headers of the ingest routes.

Only ingest (and the SDK settings it needs) answers cross-origin: a write key can do nothing but
write events, so a browser page anywhere may use one unless its key names allowed origins.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MAX_ORIGINS = 100
# Request headers a preflight may ask for: the SDKs send these; anything else is not needed.
ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, AnonymousId, X-Requested-With"
_TOKEN_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def normalize_origin(value: str) -> str:
    """`scheme://host[:port]` in lower case, or `scheme://*.domain` for every subdomain."""
    text = value.strip().lower().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin like https://shop.example.com")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{value!r} has more than scheme, host and port")
    host = parts.hostname
    if "*" in host and not (host.startswith("*.") and "*" not in host[2:] and "." in host[2:]):
        raise ValueError(f"{value!r}: a wildcard may only stand for subdomains, as *.example.com")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError as error:
        raise ValueError(f"{value!r} has an invalid port") from error
    return f"{parts.scheme}://{parts.netloc}"


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request's Origin header may send with a key that allows `allowed` (empty: any)."""
    if not allowed:
        return True
    candidate = origin.strip().lower()
    for entry in allowed:
        scheme, _, host = entry.partition("://*.")
        if not host:
            if candidate == entry:
                return True
        elif candidate.startswith(scheme + "://") and _host_port(candidate).endswith("." + host):
            return True
    return False


def _host_port(origin: str) -> str:
    return origin.partition("://")[2]


def cors_headers(origin: str) -> dict[str, str]:
    """Headers that let the page at `origin` read an ingest answer."""
    # The origin is echoed, not "*", so SDKs sending with credentials (cookies) are answered too;
    # the ingest routes never read cookies, so that exposes nothing.
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        # analytics.js waits as long as a 429 says only if it may read the header.
        "Access-Control-Expose-Headers": "Retry-After",
        "Vary": "Origin",
    }


def preflight_headers(origin: str, requested: str | None) -> dict[str, str]:
    """The answer to a CORS preflight of an ingest route."""
    headers = cors_headers(origin)
    wanted = (requested or "").strip()
    headers.update(
        {
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Allow-Headers": wanted
            if wanted and len(wanted) <= 500 and _TOKEN_LIST.match(wanted)
            else ALLOWED_HEADERS,
            "Access-Control-Max-Age": "86400",
        }
    )
    return headers
