"""The dashboard's rules that need no server: which requests are local, same-origin, which paths
get which headers, where a sign-in may send the browser, the setup code."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.requests import Request

from eventpipe.core.config import Settings
from eventpipe.dashboard.cookies import same_origin
from eventpipe.dashboard.firstrun import code_matches, from_this_machine
from eventpipe.dashboard.headers import (
    API_HEADERS,
    DOCS_HEADERS,
    OTHER_HEADERS,
    PAGE_HEADERS,
    STATIC_HEADERS,
    headers_for,
)
from eventpipe.dashboard.pages import safe_next


def request(
    peer: str = "127.0.0.1",
    host: str = "127.0.0.1:8000",
    method: str = "GET",
    scheme: str = "http",
    **headers: str,
) -> Request:
    raw = [(b"host", host.encode())] + [
        (name.replace("_", "-").lower().encode(), value.encode()) for name, value in headers.items()
    ]
    scope = {"type": "http", "method": method, "path": "/setup", "headers": raw,
             "query_string": b"", "client": (peer, 50000), "scheme": scheme,
             "server": ("127.0.0.1", 8000)}  # fmt: skip
    return Request(scope)


@pytest.mark.parametrize(
    ("peer", "host", "headers", "local"),
    [
        ("127.0.0.1", "127.0.0.1:8000", {}, True),
        ("::1", "[::1]:8000", {}, True),
        ("127.0.0.1", "localhost:8000", {}, True),
        ("203.0.113.9", "127.0.0.1:8000", {}, False),
        ("10.0.0.5", "eventpipe.internal", {}, False),
        ("127.0.0.1", "127.0.0.1:8000", {"x_forwarded_for": "203.0.113.9"}, False),
        ("127.0.0.1", "127.0.0.1:8000", {"forwarded": "for=203.0.113.9"}, False),
        ("127.0.0.1", "127.0.0.1:8000", {"x_real_ip": "203.0.113.9"}, False),
        ("127.0.0.1", "rebound.example:8000", {}, False),
        ("testclient", "127.0.0.1:8000", {}, False),
    ],
)
def test_only_a_browser_on_this_machine_is_local(
    peer: str, host: str, headers: dict[str, str], local: bool
) -> None:
    assert from_this_machine(request(peer, host, **headers)) is local


def test_the_setup_code_must_be_set_and_match_exactly() -> None:
    assert not code_matches("anything", Settings())
    assert not code_matches("", Settings(setup_code=SecretStr("")))
    settings = Settings(setup_code=SecretStr("s3cret-code"))
    assert code_matches("s3cret-code", settings)
    for wrong in ("", "s3cret-cod", "s3cret-code ", "S3CRET-CODE"):
        assert not code_matches(wrong, settings)


def test_same_origin_by_origin_or_fetch_metadata() -> None:
    settings = Settings()
    assert same_origin(request(origin="http://127.0.0.1:8000"), settings)
    assert same_origin(request(sec_fetch_site="same-origin"), settings)
    assert not same_origin(request(), settings)
    for origin in ("http://evil.example", "null", "https://127.0.0.1:8000", "http://127.0.0.1:80"):
        assert not same_origin(request(origin=origin, sec_fetch_site="same-origin"), settings)
    assert not same_origin(request(sec_fetch_site="same-site"), settings)
    # Behind a proxy the request may name another address than the one browsers use.
    public = Settings(public_url="https://events.example.com")
    assert same_origin(request(host="10.0.0.5:8000", origin="https://events.example.com"), public)


def test_headers_by_path() -> None:
    for path in ("/", "/signin", "/setup", "/session/signout", "/projects/new", "/projects/x/live"):
        assert headers_for(path) == PAGE_HEADERS, path
    for path in ("/api/projects", "/auth/me"):
        assert headers_for(path) == API_HEADERS, path
    assert headers_for("/static/app.js") == STATIC_HEADERS
    for path in ("/v1/batch", "/v1/projects/wk/settings", "/healthz", "/openapi.json", "/nope"):
        assert headers_for(path) == OTHER_HEADERS, path
    assert headers_for("/docs") == DOCS_HEADERS


@pytest.mark.parametrize(
    ("given", "sent_to"),
    [
        (None, "/"),
        ("", "/"),
        ("/projects/1?range=7d", "/projects/1?range=7d"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_sign_in_sends_only_to_this_servers_pages(given: str | None, sent_to: str) -> None:
    assert safe_next(given) == sent_to
