"""The dashboard over HTTP, against real api processes: the first run (from this machine, or
elsewhere with the setup code), cookie sign-in and its same-origin rule, sign-out revoking the
tokens, the pages' headers, projects, keys and members, and event content shown as text."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventpipe.auth.admin import create_user_sync
from eventpipe.core.config import Settings
from eventpipe.dashboard.headers import CSP, NOTHING_CSP
from eventpipe.local.process import free_port
from eventpipe.local.stack import StackUrls
from tests.integration.pipeline_support import LivePipeline, live_pipeline
from tests.integration.sse_client import EventStreamReader
from tests.integration.support import api_env, running_api, wait_for
from tests.integration.test_ingest import PASSWORD, basic

pytestmark = pytest.mark.integration

Json = dict[str, Any]
EVIL = "http://evil.example"
SETUP_CODE = "first-run-code-0123456789"
XSS = {
    "script": "<script>window.pwned = 1</script>",
    "img": '<img src=x onerror="window.pwned = 2">',
    "close": "</pre></code><b>bold</b>",
}


# --- helpers -----------------------------------------------------------------------------------


def origin_of(http: httpx.Client) -> str:
    return str(http.base_url).rstrip("/")


def post_form(http: httpx.Client, path: str, data: Json, origin: str | None = "") -> httpx.Response:
    """POST a form as a page of `origin` would (this server's own by default; None: no Origin)."""
    headers = {} if origin is None else {"Origin": origin or origin_of(http)}
    return http.post(path, data=data, headers=headers)


def sign_in(http: httpx.Client, email: str) -> None:
    answer = post_form(http, "/signin", {"email": email, "password": PASSWORD, "next": "/"})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"


def new_account(live: LivePipeline, http: httpx.Client, who: str) -> str:
    email = f"{who}-{uuid.uuid4().hex[:8]}@example.com"
    create_user_sync(live.settings, email=email, password=PASSWORD)
    sign_in(http, email)
    return email


def new_project(http: httpx.Client, name: str = "Shop") -> tuple[str, str, str]:
    """A project made in the dashboard: (its id, its first write key, the page that showed it)."""
    answer = post_form(http, "/projects/new", {"name": name, "key_name": "web"})
    assert answer.status_code == 201, answer.text
    key = re.search(r'<code id="new-key" class="key">(wk_[A-Za-z0-9_-]+)</code>', answer.text)
    project = re.search(r'href="/projects/([0-9a-f-]{36})/live"', answer.text)
    assert key and project, answer.text
    return project.group(1), key.group(1), answer.text


def cookie_attributes(answer: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie of the answer by cookie name, lower-cased."""
    return {
        value.split("=", 1)[0]: value.lower() for value in answer.headers.get_list("set-cookie")
    }


def assert_page_headers(answer: httpx.Response) -> None:
    assert answer.headers["content-security-policy"] == CSP
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert answer.headers["cache-control"] == "no-store"


def assert_no_inline_code(page: str) -> None:
    """What the CSP would block anyway is not in the page: inline scripts, styles, handlers."""
    assert all(" src=" in tag for tag in re.findall(r"<script\b[^>]*>", page)), page
    assert re.search(r"<style\b|\sstyle=|\son[a-z]+=", page) is None


@pytest.fixture(scope="module")
def live(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePipeline]:
    with live_pipeline(stack_urls, tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture
def http(live: LivePipeline) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


# --- first run ---------------------------------------------------------------------------------


def first_run_api(settings: Settings, tmp_path: Path, **env: str) -> Any:
    """An api process on a database without accounts."""
    return running_api({**api_env(settings, free_port(), tmp_path / "state"), **env},
                       tmp_path / "api.log")  # fmt: skip


def owner_form(email: str, **extra: str) -> Json:
    return {"email": email, "password": PASSWORD, "password_again": PASSWORD, **extra}


def test_first_run_only_on_this_machine_or_with_the_setup_code_then_a_project_and_its_key(
    app_settings: Settings, tmp_path: Path
) -> None:
    # One api for both kinds of browser (starting one takes a while on a busy machine): X-Forwarded-
    # For from loopback is believed, so a request naming 203.0.113.9 comes from elsewhere.
    env = {"EVENTPIPE_TRUSTED_PROXIES": "127.0.0.1", "EVENTPIPE_SETUP_CODE": SETUP_CODE}
    with (
        first_run_api(app_settings, tmp_path, **env) as url,
        httpx.Client(base_url=url) as local,
        httpx.Client(
            base_url=url, headers={"X-Forwarded-For": "203.0.113.9", "Origin": url}
        ) as remote,
    ):
        assert local.get("/").headers["location"] == "/setup"
        assert local.get("/signin").headers["location"] == "/setup"
        page = local.get("/setup")
        assert page.status_code == 200 and 'name="code"' not in page.text
        assert_page_headers(page)
        refused = [
            # DNS rebinding: another site's name resolved to 127.0.0.1.
            local.post("/setup", data=owner_form("a@example.com"),
                       headers={"Origin": EVIL, "Host": "evil.example"}),
            # A form on another site, or from nowhere.
            post_form(local, "/setup", owner_form("a@example.com"), origin=EVIL),
            post_form(local, "/setup", owner_form("a@example.com"), origin=None),
        ]  # fmt: skip
        assert [answer.status_code for answer in refused] == [403, 403, 403]
        mismatch = post_form(local, "/setup", owner_form("a@example.com", password_again="x" * 9))
        assert mismatch.status_code == 400 and "The two passwords differ." in mismatch.text

        assert 'name="code"' in remote.get("/setup").text
        for code in ("", "wrong", SETUP_CODE[:-1], SETUP_CODE + "x"):
            wrong = remote.post("/setup", data=owner_form("a@example.com", code=code))
            assert wrong.status_code == 403 and "setup code" in wrong.text, code
        assert local.get("/setup").status_code == 200  # still no account

        done = remote.post("/setup", data=owner_form("owner@example.com", code=SETUP_CODE))
        assert (done.status_code, done.headers["location"]) == (303, "/projects/new?first")
        cookies = cookie_attributes(done)
        for name, path in (("ep_access", "path=/;"), ("ep_refresh", "path=/session")):
            assert "httponly" in cookies[name] and "samesite=strict" in cookies[name]
            assert path in cookies[name] + ";"
        assert "Your first project" in remote.get("/projects/new?first").text
        project, key, shown = new_project(remote, "Web shop")
        text = html.unescape(shown)
        assert f'var EVENTPIPE = "{url}", WRITE_KEY = "{key}";' in text
        assert f'Client("{key}", host="{url}")' in text
        assert "<script>" not in shown  # the snippet is shown, not run
        sent = remote.post("/v1/track", json={"userId": "u", "event": "First"}, headers=basic(key))
        assert sent.status_code == 200, sent.text
        assert remote.get("/").headers["location"] == f"/projects/{project}"

        # Once an account exists there is no first run, for anyone, code or not.
        assert local.get("/setup").headers["location"] == "/signin"
        late_forms = [
            owner_form("late@example.com"),
            owner_form("late@example.com", code=SETUP_CODE),
        ]
        for client, form in zip((local, remote), late_forms, strict=True):
            client.cookies.clear()
            late = post_form(client, "/setup", form)
            assert late.headers["location"] == "/signin"
        attempt = {"email": "late@example.com", "password": PASSWORD}
        assert post_form(local, "/signin", attempt).status_code == 400  # no such account


# --- sign-in, cookies and the same-origin rule --------------------------------------------------


def test_the_cookie_authenticates_the_json_api_and_writes_need_this_sites_pages(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "cookie")
    assert http.get("/auth/me").status_code == 200
    made = http.post("/api/projects", json={"name": "a"}, headers={"Origin": live.url})
    assert made.status_code == 201, made.text
    same_site = http.post(
        "/api/projects", json={"name": "b"}, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert same_site.status_code == 201
    for headers in ({}, {"Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = http.post("/api/projects", json={"name": "c"}, headers=headers)
        assert refused.status_code == 403, headers
        assert refused.json()["error"]["code"] == "cross_origin"
    # A bearer token is no cookie: no Origin needed (scripts and SDKs send none).
    bearer = httpx.post(f"{live.url}/api/projects", json={"name": "d"}, headers=live.owner.headers)
    assert bearer.status_code == 201
    names = [p["name"] for p in http.get("/api/projects").json()]
    assert names == ["a", "b"]

    project = made.json()["id"]
    overview = http.get(f"/api/projects/{project}/stats/overview", params={"range": "30m"})
    assert overview.status_code == 200, overview.text
    assert overview.headers["cache-control"] == "no-store"
    # The dashboard's own forms follow the same rule.
    forged = post_form(http, f"/projects/{project}/keys", {"name": "forged"}, origin=EVIL)
    assert forged.status_code == 403
    assert "forged" not in http.get(f"/projects/{project}/keys").text


def test_sign_in_refuses_bad_passwords_other_sites_and_foreign_next_pages(
    live: LivePipeline, http: httpx.Client
) -> None:
    email = f"signin-{uuid.uuid4().hex[:8]}@example.com"
    create_user_sync(live.settings, email=email, password=PASSWORD)
    wrong = post_form(http, "/signin", {"email": email, "password": "not the password"})
    assert wrong.status_code == 400 and "Invalid email or password." in wrong.text
    assert "ep_access" not in http.cookies
    forged = post_form(http, "/signin", {"email": email, "password": PASSWORD}, origin=EVIL)
    assert forged.status_code == 403 and "ep_access" not in http.cookies
    away = post_form(
        http, "/signin", {"email": email, "password": PASSWORD, "next": "//evil.example/x"}
    )
    assert (away.status_code, away.headers["location"]) == (303, "/")
    # Signed in, the sign-in page sends on; a page needing a session sends back to sign-in.
    assert (
        http.get("/signin", params={"next": "/projects/new"}).headers["location"] == "/projects/new"
    )
    http.cookies.clear()
    assert http.get("/projects/new").headers["location"] == "/signin?next=%2Fprojects%2Fnew"


def test_refresh_rotates_the_cookies_and_a_reused_refresh_token_ends_the_sign_in(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "refresh")
    old_access, old_refresh = http.cookies["ep_access"], http.cookies["ep_refresh"]
    assert post_form(http, "/session/refresh", {}, origin=None).status_code == 403
    renewed = post_form(http, "/session/refresh", {})
    assert renewed.status_code == 200, renewed.text
    assert http.cookies["ep_access"] != old_access and http.cookies["ep_refresh"] != old_refresh
    reused = httpx.post(
        f"{live.url}/session/refresh",
        headers={"Origin": live.url, "Cookie": f"ep_refresh={old_refresh}"},
    )
    assert reused.status_code == 401
    # Reuse means theft: the sign-in's newest refresh token is refused too.
    assert post_form(http, "/session/refresh", {}).status_code == 401


def test_sign_out_revokes_the_tokens_ends_the_live_stream_and_pages_send_to_sign_in(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "signout")
    project, _, _ = new_project(http)
    access, refresh_token = http.cookies["ep_access"], http.cookies["ep_refresh"]
    stream = EventStreamReader(
        f"{live.url}/api/projects/{project}/live", {"Cookie": f"ep_access={access}"}
    )
    try:
        wait_for(lambda: stream.status is not None, 10, "the live stream's answer")
        assert stream.status == 200
        done = post_form(http, "/session/signout", {})
        assert (done.status_code, done.headers["location"]) == (303, "/signin?signed_out")
        cleared = cookie_attributes(done)
        assert 'ep_access=""' in cleared["ep_access"] and "max-age=0" in cleared["ep_access"]
        assert "max-age=0" in cleared["ep_refresh"]

        bearer = httpx.get(f"{live.url}/auth/me", headers={"Authorization": f"Bearer {access}"})
        by_cookie = httpx.get(f"{live.url}/auth/me", headers={"Cookie": f"ep_access={access}"})
        assert (bearer.status_code, by_cookie.status_code) == (401, 401)
        page = httpx.get(
            f"{live.url}/projects/{project}", headers={"Cookie": f"ep_access={access}"}
        )
        assert page.status_code == 303 and page.headers["location"].startswith("/signin?next=")
        spent = {"Origin": live.url, "Cookie": f"ep_refresh={refresh_token}"}
        renew = httpx.post(f"{live.url}/session/refresh", headers=spent)
        assert renew.status_code == 401
        wait_for(lambda: bool(stream.of("bye")), 10, "the live stream's bye",
                 lambda: f"{stream.ended} {[m.event for m in stream.messages][-5:]}")  # fmt: skip
        assert stream.of("bye")[0].json() == {"reason": "revoked"}
    finally:
        stream.close()


# --- pages ---------------------------------------------------------------------------------------


def test_every_page_sends_the_csp_no_store_and_has_no_inline_code(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "headers")
    project, _, created = new_project(http)
    assert_no_inline_code(created)
    base = f"/projects/{project}"
    for path in ("/projects/new", base, f"{base}?range=30m", f"{base}?from=2026-01-01T00:00&to="
                 "2026-01-02T00:00", f"{base}/live", f"{base}/events", f"{base}/events/nothing",
                 f"{base}/keys", f"{base}/members"):  # fmt: skip
        page = http.get(path)
        assert page.status_code == 200, (path, page.text)
        assert_page_headers(page)
        assert_no_inline_code(page.text)
    for path in ("/", "/signin", "/setup"):
        assert_page_headers(http.get(path))  # redirects too
    assert http.get("/api/projects").headers["cache-control"] == "no-store"
    assert http.get("/auth/me").headers["cache-control"] == "no-store"
    script = http.get("/static/app.js")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-type"].split(";")[0] in {
        "text/javascript",
        "application/javascript",
    }
    assert http.get("/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
    # Not a page: the policy under which nothing would run, should a browser open it.
    assert http.get("/healthz").headers["content-security-policy"] == NOTHING_CSP
    other = http.get("/projects/00000000-0000-0000-0000-000000000000")
    assert other.status_code == 404 and "No such project." in other.text


def test_write_keys_are_shown_once_and_revoked(live: LivePipeline, http: httpx.Client) -> None:
    new_account(live, http, "keys")
    project, first, _ = new_project(http)
    base = f"/projects/{project}/keys"
    bad = post_form(http, base, {"name": "site", "allowed_origins": "not an origin"})
    assert bad.status_code == 400 and "is not an origin" in html.unescape(bad.text)
    made = post_form(http, base, {"name": "site", "allowed_origins": "https://shop.example.com\n"})
    assert made.status_code == 201
    key = re.search(r"wk_[A-Za-z0-9_-]+", made.text)
    assert key is not None
    listed = http.get(base).text
    assert key.group(0) not in listed and first not in listed  # prefixes only
    assert key.group(0)[:10] in listed and "https://shop.example.com" in listed

    keys = http.get(f"/api/projects/{project}/write-keys").json()
    site = next(k for k in keys if k["name"] == "site")
    done = post_form(http, f"{base}/{site['id']}/revoke", {})
    assert (done.status_code, done.headers["location"]) == (303, f"{base}?done=revoked")
    assert "The key is revoked" in http.get(done.headers["location"]).text
    sent = http.post("/v1/track", json={"userId": "u", "event": "E"}, headers=basic(key.group(0)))
    assert sent.status_code == 401
    assert post_form(http, f"{base}/{site['id']}/revoke", {}).status_code == 404


def test_members_are_added_by_email_changed_and_removed_by_owners_only(
    live: LivePipeline, http: httpx.Client
) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as other:
        colleague = new_account(live, other, "colleague")
        new_account(live, http, "members")
        project, _, _ = new_project(http)
        base = f"/projects/{project}/members"
        unknown = post_form(http, base, {"email": "nobody@example.com", "role": "viewer"})
        assert unknown.status_code == 404 and "No account has this email" in unknown.text
        added = post_form(http, base, {"email": colleague.upper(), "role": "viewer"})
        assert added.headers["location"] == f"{base}?done=added"
        members = {m["email"]: m for m in http.get(f"/api/projects/{project}/members").json()}
        assert members[colleague]["role"] == "viewer"

        # A viewer reads, and cannot write.
        assert other.get(f"/projects/{project}/keys").status_code == 200
        assert "New write key" not in other.get(f"/projects/{project}/keys").text
        assert post_form(other, f"/projects/{project}/keys", {"name": "x"}).status_code == 403
        assert post_form(other, base, {"email": colleague, "role": "owner"}).status_code == 403

        user_id = members[colleague]["user_id"]
        changed = post_form(http, f"{base}/{user_id}/role", {"role": "member"})
        assert changed.headers["location"] == f"{base}?done=changed"
        assert post_form(other, f"/projects/{project}/keys", {"name": "x"}).status_code == 201
        me = next(m for m in members.values() if m["email"] != colleague)
        last = post_form(http, f"{base}/{me['user_id']}/remove", {})
        assert last.status_code == 409 and "at least one owner" in last.text
        removed = post_form(http, f"{base}/{user_id}/remove", {})
        assert removed.headers["location"] == f"{base}?done=removed"
        assert other.get(f"/projects/{project}").status_code == 404


def test_event_content_is_text_in_the_search_and_event_pages(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "escape")
    project, key, _ = new_project(http)
    hostile = {"type": "track", "userId": '"><svg onload=alert(1)>', "event": "<b>Hostile</b>",
               "messageId": "hostile-1", "properties": XSS}  # fmt: skip
    batch = [hostile] + [
        {"type": "track", "userId": f"u{i}", "event": "Filler", "messageId": f"filler-{i:02}"}
        for i in range(50)
    ]
    sent = http.post("/v1/batch", json={"batch": batch}, headers=basic(key))
    assert sent.status_code == 200, sent.text
    live.wait_archived(project, 51)

    found = http.get(f"/projects/{project}/events", params={"name": "<b>Hostile</b>"})
    assert found.status_code == 200
    assert "&lt;b&gt;Hostile&lt;/b&gt;" in found.text and "<b>Hostile" not in found.text
    assert "&#34;&gt;&lt;svg onload=alert(1)&gt;" in found.text and "<svg" not in found.text
    assert found.text.count("/events/hostile-1") == 1

    event = http.get(f"/projects/{project}/events/hostile-1")
    assert event.status_code == 200
    for raw in (*XSS.values(), "<svg"):
        assert raw not in event.text
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in event.text
    assert "&lt;/pre&gt;&lt;/code&gt;&lt;b&gt;bold&lt;/b&gt;" in event.text

    # Fifty a page; the next by the cursor, as a link and as the JSON api the script reads.
    first = http.get(f"/projects/{project}/events")
    assert first.text.count(f"/projects/{project}/events/") == 50
    more = re.search(r'id="more" class="button secondary" href="\?([^"]+)" data-api="([^"]*)" '
                     r'data-cursor="([^"]+)"', first.text)  # fmt: skip
    assert more is not None, first.text
    rest = http.get(f"/projects/{project}/events?{html.unescape(more.group(1))}")
    assert rest.text.count("/events/filler-") + rest.text.count("/events/hostile-") == 1
    api_page = http.get(f"/api/projects/{project}/events",
                        params={"cursor": html.unescape(more.group(3))})  # fmt: skip
    assert len(api_page.json()["events"]) == 1 and api_page.json()["next_cursor"] is None
