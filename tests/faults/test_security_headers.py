"""Injection strings in every text a user controls, the security headers of every answer, and
which routes answer a foreign origin's CORS preflight.

- Stored and shown verbatim: a project's, a write key's and an alert rule's name, and an event's
  name and properties (sent through ingest, archived by a real processor), each holding markup,
  an attribute breakout, SQL, template syntax, an RTL override or a long string, come back the
  same from the JSON api, and escaped in the dashboard's HTML (never a raw `<script>`).
- Every answer, HTML or JSON, success or error (303, 400, 401, 404, 405, 422), of every route
  (the app's schema, the dashboard's routers, static files, the API docs, unknown paths) carries a
  Content-Security-Policy with `frame-ancestors 'none'`, `X-Content-Type-Options: nosniff` and a
  Referrer-Policy; pages the dashboard's own strict policy.
- CORS: the ingest routes (and the SDKs' settings) answer any origin's preflight; no other route
  (auth, the JSON api, the dashboard, health) answers a foreign origin at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import httpx
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from eventpipe.api.app import create_app
from eventpipe.core.config import Settings
from eventpipe.dashboard import jobs, manage, routes, session
from eventpipe.dashboard.headers import CSP
from eventpipe.local.stack import StackUrls
from tests.faults.test_hostile_bodies import running_processor
from tests.integration.ingest_fixtures import module_api_settings
from tests.integration.support import wait_for
from tests.integration.test_ingest import (
    Account,
    basic,
    create_project,
    create_write_key,
    post_event,
    sign_in,
)

pytestmark = pytest.mark.integration


# One api, database and topic for the module; each test works in projects of its own.
@pytest.fixture(scope="module")
def headers_settings(
    stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """A database and a topic of this module's own."""
    with module_api_settings(stack_urls, tmp_path_factory, "headers") as settings:
        yield settings


@pytest.fixture(scope="module")
def client(headers_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(headers_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def owner(client: TestClient, headers_settings: Settings) -> Account:
    return sign_in(client, headers_settings, f"owner-{uuid.uuid4().hex[:8]}@example.com")


@pytest.fixture(scope="module")
def project_id(client: TestClient, owner: Account) -> str:
    return create_project(client, owner)


@pytest.fixture(scope="module")
def write_key(client: TestClient, owner: Account, project_id: str) -> str:
    return str(create_write_key(client, owner, project_id)["key"])


@pytest.fixture
def processor(headers_settings: Settings) -> Iterator[Settings]:
    with running_processor(headers_settings) as processing:
        yield processing


FOREIGN = "https://evil.example"
INJECTIONS = {
    "script": "<script>alert('x')</script>",
    "attribute": '"><img src=x onerror=alert(1)>',
    "sql": "'; DROP TABLE projects; --",
    "template": "{{7*7}} ${7*7} <%= 7*7 %>",
    "rtl": "invoice\u202efdp.exe",
    "long": "<b>" + "A" * 190 + "</b>",  # names hold 200 characters
}


def page(client_: TestClient, account: Account, path: str) -> httpx.Response:
    """A dashboard page, signed in by the access cookie as a browser is."""
    client_.cookies.set("ep_access", account.headers["Authorization"].removeprefix("Bearer "))
    try:
        answer: httpx.Response = client_.get(path)
    finally:
        client_.cookies.clear()
    assert answer.status_code == 200, (path, answer.text[:300])
    return answer


def assert_shown_as_text(html: str, value: str, where: str) -> None:
    """`value` is in the page escaped as Jinja2 escapes it, and nowhere as markup."""
    assert str(escape(value)) in html, (where, value)
    if "<" in value or '"' in value:
        assert value not in html, (where, value)


def test_names_are_stored_verbatim_and_shown_escaped(
    client: TestClient, owner: Account, project_id: str
) -> None:
    headers = owner.headers
    base = f"/api/projects/{project_id}"
    problems = []
    for label, text in INJECTIONS.items():
        made = client.post("/api/projects", json={"name": text}, headers=headers)
        assert made.status_code == 201, (label, made.text)
        project = made.json()["id"]
        key = client.post(f"/api/projects/{project}/write-keys", json={"name": text},
                          headers=headers)  # fmt: skip
        rule = {"name": text, "comparison": "above", "threshold": 1, "window_minutes": 5,
                "webhook_url": "https://hooks.example.com/x"}  # fmt: skip
        alert = client.post(f"/api/projects/{project}/alerts", json=rule, headers=headers)
        assert key.status_code == 201 and alert.status_code == 201, (label, key.text, alert.text)
        rule_path = f"/api/projects/{project}/alerts/{alert.json()['id']}"
        stored = {
            "project": client.get(f"/api/projects/{project}", headers=headers).json()["name"],
            "key": client.get(f"/api/projects/{project}/write-keys", headers=headers).json()[0][
                "name"
            ],
            "alert": client.get(f"{rule_path}", headers=headers).json()["name"],
        }
        problems += [f"{label} {what}: {got!r}" for what, got in stored.items() if got != text]
        pages = ("", "/keys", "/alerts", rule_path.removeprefix(f"/api/projects/{project}"))
        for path in (f"/projects/{project}{tail}" for tail in pages):
            assert_shown_as_text(page(client, owner, path).text, text, f"{label} {path}")
    assert not problems, problems
    # Longer than a name may be: refused, not cut.
    too_long = client.patch(base, json={"name": "x" * 201}, headers=headers)
    assert too_long.status_code == 422, too_long.text


@pytest.mark.usefixtures("processor")
def test_event_content_is_archived_verbatim_and_shown_escaped(
    client: TestClient, owner: Account
) -> None:
    project_id = create_project(client, owner, "events")
    write_key = str(create_write_key(client, owner, project_id)["key"])
    sent = {}
    for number, (label, text) in enumerate(INJECTIONS.items()):
        message_id = f"{label}-{number}"
        properties = {text: text, "nested": {"html": text}, "long": text * 40}
        event = {"userId": text, "event": text, "messageId": message_id, "properties": properties}
        answer = post_event(client, "/v1/track", event, write_key)
        assert answer.status_code == 200, (label, answer.text)
        sent[message_id] = (text, properties)

    def archived() -> int:
        found = client.get(f"/api/projects/{project_id}/events?limit=100", headers=owner.headers)
        return len(found.json()["events"]) if found.status_code == 200 else -1

    wait_for(lambda: archived() == len(sent), 60, "the events archived", lambda: str(archived()))
    for message_id, (text, properties) in sent.items():
        query = urlencode({"name": text, "user_id": text})
        found = client.get(f"/api/projects/{project_id}/events?{query}", headers=owner.headers)
        assert found.status_code == 200, found.text
        (event,) = found.json()["events"]
        assert (event["message_id"], event["event"], event["user_id"]) == (message_id, text, text)
        assert event["properties"] == properties
        shown = page(client, owner, f"/projects/{project_id}/events/{quote(message_id)}").text
        assert_shown_as_text(shown, text, message_id)
        listed = page(client, owner, f"/projects/{project_id}/events?{query}").text
        assert_shown_as_text(listed, text, f"search {message_id}")


# --- headers of every answer --------------------------------------------------------------------


def schema_paths(app_settings_: Settings) -> list[tuple[str, str]]:
    schema = create_app(app_settings_).openapi()
    return [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if path != "/api/projects/{project_id}/live"  # streams once allowed; its 401 is below
    ]


def dashboard_paths() -> list[tuple[str, str]]:
    return [
        (method, str(getattr(route, "path", "")).replace(":path}", "}"))
        for router in (session.router, manage.router, routes.router, jobs.router)
        for route in router.routes
        for method in sorted(getattr(route, "methods", set()))
    ]


def header_problems(answer: httpx.Response) -> list[str]:
    headers = answer.headers
    found = []
    policy = headers.get("content-security-policy", "")
    if "frame-ancestors 'none'" not in policy:
        found.append(f"CSP {policy!r}")
    if headers.get("x-content-type-options") != "nosniff":
        found.append("no nosniff")
    if headers.get("referrer-policy") not in {"no-referrer", "same-origin", "strict-origin"}:
        found.append(f"Referrer-Policy {headers.get('referrer-policy')!r}")
    if headers.get("x-frame-options", "DENY") != "DENY":
        found.append(f"X-Frame-Options {headers['x-frame-options']!r}")
    is_html = headers.get("content-type", "").startswith("text/html")
    is_docs = answer.url.path in {"/docs", "/redoc", "/docs/oauth2-redirect"}
    if is_html and not is_docs and policy != CSP:
        found.append("an HTML page without the dashboard's policy")
    return found


def test_every_answer_carries_the_security_headers(
    client: TestClient, headers_settings: Settings, write_key: str
) -> None:
    # An account and project of its own: this test signs out and deletes.
    owner = sign_in(client, headers_settings, f"headers-{uuid.uuid4().hex[:8]}@example.com")
    project_id = create_project(client, owner)
    ids = {"project_id": project_id, "user_id": "00000000-0000-0000-0000-000000000000",
           "key_id": "00000000-0000-0000-0000-000000000000", "rule_id": project_id,
           "message_id": "m", "job_id": project_id, "export_id": "e", "write_key": write_key,
           "type": "track"}  # fmt: skip
    token = owner.headers["Authorization"].removeprefix("Bearer ")
    requests: list[tuple[str, str, dict[str, str]]] = []
    for method, path in schema_paths(headers_settings) + dashboard_paths():
        url = path.format(**ids)
        requests += [(method, url, {}), (method, url, owner.headers)]  # 401s and answers
        requests.append(
            (method, url, {"Cookie": f"ep_access={token}", "Origin": "http://testserver"})
        )
    requests += [
        ("GET", "/nope", {}), ("GET", "/api/nope", owner.headers), ("GET", "/v1/nope", {}),
        ("GET", "/static/nope.js", {}), ("GET", "/static/app.css", {}), ("GET", "/docs", {}),
        ("GET", "/redoc", {}), ("PUT", "/api/projects", owner.headers), ("GET", "/v1/track", {}),
        ("GET", "/api/projects/not-a-uuid", owner.headers),
        ("GET", f"/api/projects/{project_id}/live", {}),
        ("GET", f"/api/projects/{project_id}/events?limit=0", owner.headers),
        ("POST", "/v1/batch", basic(write_key)), ("GET", "/", {}), ("GET", "/signin", {}),
    ]  # fmt: skip
    # What signs out or deletes goes last, so that the rest is answered signed in.
    requests.sort(key=lambda r: r[0] == "DELETE" or "signout" in r[1] or "logout" in r[1])
    problems: list[str] = []
    statuses: set[int] = set()
    for method, url, headers in requests:
        body = b"{}" if method in {"POST", "PATCH", "PUT"} else None
        answer = client.request(method, url, headers=headers, content=body, follow_redirects=False)
        statuses.add(answer.status_code)
        problems += [f"{method} {url} ({answer.status_code}): {p}" for p in header_problems(answer)]
    assert not problems, "\n".join(problems)
    # The error answers were among them.
    assert {200, 303, 400, 401, 404, 405, 422} <= statuses, statuses


# --- CORS -----------------------------------------------------------------------------------------


def preflight(client_: TestClient, path: str) -> httpx.Response:
    answer: httpx.Response = client_.options(path, headers={
        "Origin": FOREIGN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })  # fmt: skip
    return answer


def test_only_the_ingest_routes_answer_a_foreign_origin(
    client: TestClient, write_key: str, owner: Account, project_id: str
) -> None:
    ingest = ["/v1/batch", "/v1/track", "/v1/t", "/v1/identify", "/v1/page", "/v1/screen",
              "/v1/group", "/v1/alias", "/v1/b", "/beacon/v1/batch", "/sourceConfig",
              f"/v1/projects/{write_key}/settings"]  # fmt: skip
    for path in ingest:
        answer = preflight(client, path)
        assert answer.status_code == 204, (path, answer.text)
        assert answer.headers["access-control-allow-origin"] == FOREIGN, path
        assert "authorization" in answer.headers["access-control-allow-headers"].lower(), path
    sent = post_event(client, "/v1/track", {"userId": "u", "event": "E"}, write_key,
                      {"Origin": FOREIGN})  # fmt: skip
    assert sent.headers["access-control-allow-origin"] == FOREIGN

    others = ["/auth/login", "/auth/refresh", "/auth/me", "/auth/logout", "/api/projects",
              f"/api/projects/{project_id}", f"/api/projects/{project_id}/events",
              f"/api/projects/{project_id}/write-keys", "/", "/signin", "/session/refresh",
              f"/projects/{project_id}", "/healthz", "/readyz", "/.well-known/jwks.json",
              "/openapi.json"]  # fmt: skip
    for path in others:
        answer = preflight(client, path)
        assert answer.status_code != 204 and answer.status_code < 500, (path, answer.status_code)
        assert "access-control-allow-origin" not in answer.headers, path
        assert "access-control-allow-credentials" not in answer.headers, path
        # Nor does a request itself tell a foreign page it may read the answer.
        read = client.get(path, headers={**owner.headers, "Origin": FOREIGN})
        assert "access-control-allow-origin" not in read.headers, path
