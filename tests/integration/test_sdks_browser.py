"""The two browser SDKs, unchanged from npm, in Debian's Chromium driven by Playwright, against a
real api and processor: Segment's analytics.js (@segment/analytics-next, its standalone bundle)
and RudderStack's JS SDK v3 (@rudderstack/analytics-js, its bundled build).

Each test page is served by a server of the test's own on http://localhost:<port>, and eventpipe
on http://127.0.0.1:<port>: another origin, so CORS is real. Whatever the SDK fetches before
sending comes from eventpipe, and no request may leave for a vendor: every request the browser
makes is recorded and checked. Select them with `-m browser`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from eventpipe.local.stack import StackUrls
from tests.integration.pipeline_support import LivePipeline, Row, live_pipeline
from tests.integration.sdk_install import npm_installed

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PAGES = Path(__file__).parent / "browser_sdks"
CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic (updates, safe browsing) has no business in a test, and a
# name that is not ours resolves nowhere: a vendor URL fails at once instead of timing out.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]


@dataclass
class Site:
    """The test's page server: the pages of browser_sdks/ and the SDKs' files from npm."""

    url: str
    files: dict[str, Path] = field(default_factory=dict)


def _handler(files: dict[str, Path]) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            found = files.get(urlsplit(path).path)
            return str(found) if found else "/nonexistent"

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    sdks = npm_installed(PAGES) / "node_modules"
    files = {f"/{page.name}": page for page in PAGES.glob("*.html")}
    files["/sdk/analytics-next/standalone.js"] = (
        sdks / "@segment" / "analytics-next" / "dist" / "umd" / "standalone.js"
    )
    files["/sdk/rsa-bundled.js"] = (
        sdks / "@rudderstack" / "analytics-js" / "dist" / "npm" / "modern" / "bundled" / "umd"
        / "index.js"
    )  # fmt: skip
    assert all(path.is_file() for path in files.values()), files
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_handler(files)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # "localhost", not 127.0.0.1: the page is another origin than the api.
    yield Site(f"http://localhost:{server.server_address[1]}", files)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def live(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePipeline]:
    with live_pipeline(stack_urls, tmp_path_factory.mktemp("browser")) as running:
        yield running


@pytest.fixture(scope="module")
def playwright(live: LivePipeline) -> Iterator[Playwright]:  # noqa: ARG001 - set up first
    # After `live`: its setup runs asyncio.run, which Playwright's running loop would forbid.
    with sync_playwright() as running:
        yield running


@dataclass
class Visit:
    """One browser, whose every request Chromium's own NetLog records: unlike Playwright's
    request events, it also sees what a page sends while it unloads (beacons, keepalive)."""

    browser: Browser
    context: BrowserContext
    netlog: Path
    requests: list[Sent] = field(default_factory=list)

    def finish(self) -> list[Sent]:
        """Close the browser (which completes its NetLog); every request it made."""
        if self.browser.is_connected():
            self.browser.close()
            self.requests = read_netlog(self.netlog)
        return self.requests


@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    # The origin of the page that made the request; "not an origin" for the browser's own.
    initiator: str

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


def read_netlog(path: Path) -> list[Sent]:
    log = json.loads(path.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        Sent(event["params"]["method"], event["params"]["url"], event["params"]["initiator"])
        for event in log["events"]
        if event["type"] == start and "url" in event.get("params", {})
    ]


@pytest.fixture
def visit(playwright: Playwright, tmp_path: Path) -> Iterator[Visit]:
    netlog = tmp_path / "netlog.json"
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--log-net-log={netlog}"]
    )
    seen = Visit(browser, browser.new_context(), netlog)
    yield seen
    seen.finish()


def open_page(
    visit: Visit, site: Site, live: LivePipeline, page: str, key: str, **extra: str
) -> Page:
    tab = visit.context.new_page()
    tab.goto(f"{site.url}/{page}?" + urlencode({"api": live.url, "key": key, **extra}))
    return tab


def leave(tab: Page, site: Site, script: str) -> None:
    """Run `script` and leave the page in the same task, as a click on a link would."""
    tab.evaluate(f"() => {{ {script}; location.href = '/away.html'; }}")
    tab.wait_for_url(f"{site.url}/away.html")


def assert_from_this_browser(
    rows: list[Row], tab_url: str, user_agent: str, anonymous: str
) -> None:
    for row in rows:
        assert row["anonymous_id"] == anonymous, row
        context = row["context"]
        assert context["userAgent"] == user_agent
        assert context["page"]["url"].startswith(tab_url.split("?", 1)[0])
        assert context["ip"] == "127.0.0.1"


def sent_by_pages(visit: Visit, site: Site, live: LivePipeline) -> list[str]:
    """Close the browser; each request its pages made, as "METHOD URL", after checking that no
    page sent anything anywhere but eventpipe and the test site."""
    local = {urlsplit(site.url).netloc, urlsplit(live.url).netloc}
    sent = visit.finish()
    assert any(r.url.startswith(live.url) for r in sent), "the NetLog saw nothing: a wrong file?"
    # Chromium's own requests (its updater, Google sign-in) have no page as initiator.
    by_pages = [r for r in sent if r.initiator != "not an origin"]
    assert [str(r) for r in by_pages if urlsplit(r.url).netloc not in local] == []
    return [str(r) for r in sent if urlsplit(r.url).netloc in local]


# --- Segment's analytics.js ----------------------------------------------------------------------


def test_analytics_js_sends_every_call_once_and_nothing_leaves_for_segment(
    live: LivePipeline, site: Site, visit: Visit
) -> None:
    project, key = live.project_key("segment-web")
    user = f"user-{uuid.uuid4().hex[:8]}"
    tab = open_page(visit, site, live, "segment.html", key)
    anonymous = tab.evaluate(
        "() => new Promise(done => analytics.ready(() => done(analytics.user().anonymousId())))"
    )
    user_agent = tab.evaluate("() => navigator.userAgent")
    page_url = tab.url
    tab.evaluate(
        """user => Promise.all([
            analytics.page("Pricing", {plan: "pro"}),
            analytics.track("Order Completed", {revenue: 19.99, currency: "USD"}),
            analytics.identify(user, {email: "ada@example.com"}),
        ])""",
        user,
    )
    # Leaving at once: analytics.js sends this one with fetch keepalive (eventpipe's settings).
    leave(tab, site, 'analytics.track("Checkout Left", {step: 2})')

    rows = live.wait_archived(project, 4)
    by_kind = {(row["type"], row["event"]): row for row in rows}
    assert set(by_kind) == {
        ("page", "$page"), ("track", "Order Completed"), ("identify", "$identify"),
        ("track", "Checkout Left"),
    }  # fmt: skip
    assert by_kind[("page", "$page")]["name"] == "Pricing"
    assert by_kind[("track", "Order Completed")]["properties"] == {
        "revenue": 19.99,
        "currency": "USD",
    }
    assert by_kind[("identify", "$identify")]["traits"] == {"email": "ada@example.com"}
    assert by_kind[("track", "Checkout Left")]["user_id"] == user
    assert_from_this_browser(rows, page_url, user_agent, anonymous)
    assert {row["context"]["library"]["name"] for row in rows} == {"analytics.js"}
    live.wait_counted(
        project,
        {"$page": 1, "Order Completed": 1, "$identify": 1, "Checkout Left": 1, "$all": 4},
    )

    sent = sent_by_pages(visit, site, live)
    assert f"GET {live.url}/v1/projects/{key}/settings" in sent
    # One request per event (the last sent with keepalive as the page unloaded), in any order.
    assert sorted(r for r in sent if r.startswith(f"POST {live.url}/v1/")) == sorted(
        f"POST {live.url}/v1/{path}" for path in "tpit"
    )


# --- RudderStack's JS SDK ------------------------------------------------------------------------


def test_rudderstack_js_sends_every_call_once_and_its_leaving_beacon(
    live: LivePipeline, site: Site, visit: Visit
) -> None:
    project, key = live.project_key("rudder-web")
    user = f"user-{uuid.uuid4().hex[:8]}"
    tab = open_page(visit, site, live, "rudder.html", key)
    anonymous = tab.evaluate(
        "() => new Promise(done =>"
        " rudderanalytics.ready(() => done(rudderanalytics.getAnonymousId())))"
    )
    user_agent = tab.evaluate("() => navigator.userAgent")
    page_url = tab.url
    tab.evaluate(
        """user => {
            rudderanalytics.page("Docs", "Pricing", {plan: "pro"});
            rudderanalytics.track("Order Completed", {revenue: 19.99, currency: "USD"});
            rudderanalytics.identify(user, {email: "ada@example.com"});
            rudderanalytics.group("acme", {name: "Acme"});
        }""",
        user,
    )
    live.wait_archived(project, 4)

    # The same browser on a page whose SDK sends with sendBeacon as it is left.
    beacon_tab = open_page(visit, site, live, "rudder.html", key, beacon="1")
    beacon_tab.evaluate("() => new Promise(done => rudderanalytics.ready(done))")
    leave(beacon_tab, site, 'rudderanalytics.track("Checkout Left", {step: 2})')

    rows = live.wait_archived(project, 5)
    by_kind = {(row["type"], row["event"]): row for row in rows}
    assert set(by_kind) == {
        ("page", "$page"), ("track", "Order Completed"), ("identify", "$identify"),
        ("group", "$group"), ("track", "Checkout Left"),
    }  # fmt: skip
    assert by_kind[("page", "$page")]["name"] == "Pricing"
    # RudderStack sends identify traits in context.traits; eventpipe stores them as traits too.
    assert by_kind[("identify", "$identify")]["traits"] == {"email": "ada@example.com"}
    assert by_kind[("group", "$group")]["group_id"] == "acme"
    assert by_kind[("track", "Checkout Left")]["user_id"] == user
    assert_from_this_browser(rows, page_url, user_agent, anonymous)
    live.wait_counted(
        project,
        {
            "$page": 1,
            "Order Completed": 1,
            "$identify": 1,
            "$group": 1,
            "Checkout Left": 1,
            "$all": 5,
        },
    )

    sent = sent_by_pages(visit, site, live)
    assert any(r.startswith(f"GET {live.url}/sourceConfig/?") for r in sent)
    assert sorted(r for r in sent if r.startswith(f"POST {live.url}/")) == sorted(
        [
            *(f"POST {live.url}/v1/{kind}" for kind in ("page", "track", "identify", "group")),
            f"POST {live.url}/beacon/v1/batch?writeKey={key}",
        ]
    )
