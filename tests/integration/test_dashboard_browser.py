"""The dashboard in Debian's Chromium, driven by Playwright, against a real api and processor:
the first run, a project and its key, events seen live in the feed and the chart within two
seconds, search and trace, sign-out; hostile event content shown as text and never run; axe-core
(pinned in dashboard_browser/) finds no serious or critical problem on the main pages; and
screenshots of them at laptop and phone widths in test-artifacts/dashboard/. Select with
`-m browser`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from eventpipe.auth.admin import create_user_sync
from eventpipe.local.stack import StackUrls
from tests.integration.pipeline_support import LivePipeline, live_pipeline
from tests.integration.sdk_install import npm_installed
from tests.integration.test_ingest import PASSWORD, basic
from tests.integration.test_sdks_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "dashboard"
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
LIVE_WITHIN_MS = 2000
# The payloads set this flag if they ever run; the CSP would also report them if inserted.
FLAG = "window.__pwned"
HOSTILE_NAME = '<img src=x onerror="window.__pwned = 1">'
HOSTILE_PROPERTIES = {
    "script": "<script>window.__pwned = 2</script>",
    "img": '<img src=x onerror="window.__pwned = 3">',
    "svg": '<svg onload="window.__pwned = 4"></svg>',
}
# The innermost elements that reach past the window's right edge, to name them in a failure.
WIDE_ELEMENTS = """() => [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > innerWidth + 1)
    .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right > innerWidth + 1))
    .slice(0, 5).map(e => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`)"""
SERIES_SUM = """() => [...document.querySelectorAll('#series-table tbody tr td:nth-child(2)')]
    .reduce((sum, cell) => sum + Number(cell.textContent.replace(/,/g, '')), 0)"""


@dataclass
class Watched:
    """Uncaught script errors and CSP reports of every page of a browser context."""

    errors: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    # Everything the pages logged, printed after a test (pytest shows it when one fails).
    console: list[str] = field(default_factory=list)

    def log(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text} ({message.page and message.page.url})")
        if "Content Security Policy" in message.text:
            self.csp.append(message.text)

    def check(self) -> None:
        assert self.errors == [], self.errors
        assert self.csp == [], self.csp


@pytest.fixture(scope="module")
def live(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePipeline]:
    with live_pipeline(stack_urls, tmp_path_factory.mktemp("dashboard-browser")) as running:
        yield running


@pytest.fixture(scope="module")
def axe_source() -> str:
    installed = npm_installed(Path(__file__).parent / "dashboard_browser")
    return (installed / "node_modules" / "axe-core" / "axe.min.js").read_text()


@pytest.fixture(scope="module")
def browser(live: LivePipeline) -> Iterator[Browser]:  # noqa: ARG001 - set up first
    # After `live`: its setup runs asyncio.run, which Playwright's running loop would forbid.
    with sync_playwright() as running:
        yield launch(running)


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture
def watched() -> Iterator[Watched]:
    seen = Watched()
    yield seen
    print("\n".join(["console of the pages:", *seen.console, *seen.errors]))  # noqa: T201


def new_context(browser: Browser, watched: Watched, viewport: ViewportSize) -> BrowserContext:
    context = browser.new_context(viewport=viewport)
    context.on("weberror", lambda error: watched.errors.append(str(error.error)))
    context.on("console", watched.log)
    return context


# --- helpers -------------------------------------------------------------------------------------


def axe_check(page: Page, source: str, name: str) -> None:
    """No serious or critical axe-core violation (WCAG 2.1 A and AA, and best practices)."""
    # Evaluated through the DevTools protocol, which the page's CSP does not govern.
    page.evaluate(source)
    found: list[dict[str, Any]] = page.evaluate(
        """() => axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
            .then(result => result.violations)"""
    )
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found
        if v["impact"] in {"serious", "critical"}
    ]
    assert bad == [], f"axe on the {name} page: {bad}"


def shot(page: Page, name: str, width: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}-{width}.png", full_page=True)


def fits(page: Page) -> None:
    """Nothing wider than the window: no sideways scrolling of the page itself."""
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    wide = page.evaluate(WIDE_ELEMENTS) if overflow > 0 else []
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the window: {wide}"


def send(live: LivePipeline, key: str, *events: dict[str, Any]) -> None:
    batch = [{"type": "track", "userId": "u1", **event} for event in events]
    answer = httpx.post(f"{live.url}/v1/batch", json={"batch": batch}, headers=basic(key))
    assert answer.status_code == 200, answer.text


def sign_in(page: Page, live: LivePipeline) -> None:
    email = f"user-{uuid.uuid4().hex[:8]}@example.com"
    # In a thread of its own: it runs asyncio, and Playwright's sync API holds a loop in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(create_user_sync, live.settings, email=email, password=PASSWORD).result()
    page.goto(f"{live.url}/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/projects/new")


def create_project(page: Page, name: str) -> tuple[str, str]:
    """On the new-project page: make the project and its key; (project id, key)."""
    page.get_by_label("Project name").fill(name)
    page.get_by_label("Name of its first write key").fill("website")
    page.get_by_role("button", name="Create the project and its key").click()
    key = page.locator("#new-key").text_content()
    href = page.get_by_role("link", name="Go to the overview").get_attribute("href")
    assert key and href, page.content()
    return href.rsplit("/", 1)[1], key


def overview_ready(page: Page) -> None:
    expect(page.locator(".uplot canvas")).to_have_count(1)
    expect(page.locator("#total")).not_to_have_text("–")


def live_ready(page: Page) -> None:
    expect(page.locator("#status")).to_have_text("Live")


def forget_accounts(live: LivePipeline) -> None:
    """A server as on its first start: the pipeline's own set-up signed an owner in."""
    with psycopg.connect(live.pipeline.database_url, autocommit=True) as connection:
        connection.execute("DELETE FROM users")


# --- the journey ----------------------------------------------------------------------------------


def test_first_run_live_events_chart_search_trace_and_sign_out(
    live: LivePipeline, browser: Browser, watched: Watched, axe_source: str
) -> None:
    forget_accounts(live)
    context = new_context(browser, watched, LAPTOP)
    page = context.new_page()
    page.goto(live.url)
    page.wait_for_url("**/setup")
    axe_check(page, axe_source, "first-run")
    shot(page, "first-run", "laptop")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password, again").fill(PASSWORD)
    page.get_by_role("button", name="Create the owner account").click()
    page.wait_for_url("**/projects/new?first")
    project, key = create_project(page, "Shop")
    expect(page.locator("#snippet-1")).to_contain_text(f'WRITE_KEY = "{key}"')
    expect(page.locator("#snippet-2")).to_contain_text(f'host="{live.url}"')
    shot(page, "key-created", "laptop")

    page.get_by_role("link", name="Go to the overview").click()
    overview_ready(page)
    page.keyboard.press("r")  # the last 30 minutes, live
    page.wait_for_url("**range=30m")
    overview_ready(page)
    expect(page.locator("#live-state")).to_be_visible()
    feed = context.new_page()
    feed.goto(f"{live.url}/projects/{project}/live")
    live_ready(feed)

    order = {"event": "Order Completed", "messageId": "order-1", "properties": {"total": 42}}
    send(live, key, {"event": "Signed Up"}, {"event": "Signed Up", "userId": "u2"}, order)
    expect(feed.locator("#feed > li")).to_have_count(3, timeout=LIVE_WITHIN_MS)
    expect(page.locator("#total")).to_have_text("3", timeout=LIVE_WITHIN_MS)
    page.wait_for_function(f"() => ({SERIES_SUM})() === 3", timeout=LIVE_WITHIN_MS)

    check_the_feed(feed, live, key)
    axe_check(feed, axe_source, "live")
    shot(feed, "live", "laptop")
    live.wait_counted(project, {"Signed Up": 2, "Order Completed": 1, "Pinged": 1, "$all": 4})
    page.reload()
    overview_ready(page)
    expect(page.locator("#total")).to_have_text("4")
    expect(page.locator("#top tbody tr").first).to_contain_text("Signed Up")
    axe_check(page, axe_source, "overview")
    shot(page, "overview", "laptop")

    for name in ("exports", "alerts", "keys", "members"):
        page.goto(f"{live.url}/projects/{project}/{name}")
        axe_check(page, axe_source, name)
        shot(page, name, "laptop")

    live.wait_archived(project, 4)
    page.goto(f"{live.url}/projects/{project}/events")
    expect(page.locator("#results tbody tr")).to_have_count(4)
    axe_check(page, axe_source, "search")
    shot(page, "search", "laptop")
    page.get_by_label("Event name").fill("Order Completed")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#results tbody tr")).to_have_count(1)
    page.get_by_role("link", name="Order Completed").click()
    expect(page.locator("#trace-status")).to_have_attribute("data-status", "archived")
    expect(page.locator("#trace li.reached")).to_have_count(3)
    expect(page.locator("#event-json")).to_contain_text('"total": 42')
    shot(page, "event", "laptop")

    access = next(c["value"] for c in context.cookies() if c["name"] == "ep_access")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin?signed_out")
    me = httpx.get(f"{live.url}/auth/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 401
    page.go_back()
    page.wait_for_url("**/signin?next=*")
    # The sign-in page (whose `next` names the event's address), and none of its data.
    assert "Order Completed" not in page.content() and '"total": 42' not in page.content()
    expect(page.locator("#event-json")).to_have_count(0)
    feed.wait_for_url("**/signin?next=*")  # its live stream ended, revoked, and sent it here
    axe_check(page, axe_source, "sign-in")
    shot(page, "signin", "laptop")
    watched.check()
    context.close()


def check_the_feed(feed: Page, live: LivePipeline, key: str) -> None:
    """Newest first, a name filter, pause and resume, and each event's JSON."""
    names = feed.locator("#feed > li .name").all_text_contents()
    assert sorted(names) == ["Order Completed", "Signed Up", "Signed Up"]
    name_filter = feed.get_by_label("Show only events whose name contains")
    name_filter.fill("order")
    expect(feed.locator("#feed > li:visible")).to_have_count(1)
    name_filter.fill("")
    expect(feed.locator("#feed > li:visible")).to_have_count(3)
    name_filter.blur()
    feed.keyboard.press("p")
    expect(feed.get_by_role("button", name="Resume")).to_have_attribute("aria-pressed", "true")
    send(live, key, {"event": "Pinged"})
    expect(feed.locator("#paused-note")).to_have_text("1 new event while paused.")
    expect(feed.locator("#feed > li")).to_have_count(3)
    feed.get_by_role("button", name="Resume").click()
    expect(feed.locator("#feed > li")).to_have_count(4)
    order = feed.locator("#feed > li", has_text="Order Completed")
    order.locator("summary").click()
    expect(order.locator("pre")).to_contain_text('"message_id": "order-1"')


# --- hostile content ------------------------------------------------------------------------------


def test_hostile_event_content_is_shown_as_text_and_runs_nothing(
    live: LivePipeline, browser: Browser, watched: Watched
) -> None:
    context = new_context(browser, watched, LAPTOP)
    page = context.new_page()
    sign_in(page, live)
    project, key = create_project(page, "Hostile")
    page.goto(f"{live.url}/projects/{project}/live")
    live_ready(page)
    send(live, key, {"event": HOSTILE_NAME, "userId": "<script>window.__pwned = 5</script>",
                     "messageId": "hostile-1", "properties": HOSTILE_PROPERTIES})  # fmt: skip
    expect(page.locator("#feed > li .name")).to_have_text([HOSTILE_NAME])
    page.locator("#feed > li summary").click()
    for payload in HOSTILE_PROPERTIES.values():
        expect(page.locator("#feed > li pre")).to_contain_text(payload.replace('"', '\\"'))
    assert page.evaluate(f"() => {FLAG}") is None

    live.wait_archived(project, 1)
    page.goto(f"{live.url}/projects/{project}/events")
    expect(page.get_by_role("link", name=HOSTILE_NAME)).to_have_count(1)
    expect(page.locator("#results tbody td").nth(3)).to_have_text(
        "<script>window.__pwned = 5</script>"
    )
    assert page.evaluate(f"() => {FLAG}") is None
    page.get_by_role("link", name=HOSTILE_NAME).click()
    expect(page.locator("#trace-status")).to_have_attribute("data-status", "archived")
    expect(page.locator("#event-json")).to_contain_text("<script>window.__pwned = 2</script>")
    assert page.evaluate(f"() => {FLAG}") is None

    page.goto(f"{live.url}/projects/{project}?range=30m")
    expect(page.locator("#top tbody td").first).to_have_text(HOSTILE_NAME)
    assert page.evaluate(f"() => {FLAG}") is None
    # Not one element of the payloads made it into any page as markup.
    assert page.locator("svg[onload], img[onerror], script:not([src])").count() == 0
    watched.check()
    context.close()


# --- phone width ----------------------------------------------------------------------------------


def test_the_main_pages_fit_a_phone(live: LivePipeline, browser: Browser, watched: Watched) -> None:
    context = new_context(browser, watched, PHONE)
    page = context.new_page()
    page.goto(f"{live.url}/signin")
    fits(page)
    shot(page, "signin", "phone")
    sign_in(page, live)
    project, key = create_project(page, "A project with a rather long name, on a phone")
    fits(page)
    shot(page, "key-created", "phone")
    send(live, key, *({"event": name} for name in ("Signed Up", "Order Completed", "Signed Up")))
    live.wait_archived(project, 3)
    base = f"{live.url}/projects/{project}"
    pages = {
        "overview": (f"{base}?range=30m", overview_ready),
        "live": (f"{base}/live", live_ready),
    }
    for name, (url, ready) in pages.items():
        page.goto(url)
        ready(page)
        fits(page)
        shot(page, name, "phone")
    for name in ("events", "keys", "members"):
        page.goto(f"{base}/{name}")
        fits(page)
        shot(page, "search" if name == "events" else name, "phone")
    watched.check()
    context.close()
