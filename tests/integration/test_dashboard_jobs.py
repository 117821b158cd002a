"""The dashboard's exports and alerts pages over HTTP, against a real api process: an export
asked for with the form (queued, once for the same inputs), alert rules with their secret shown
once, refused webhook addresses, re-enabling and deleting, the delivery log, and what a viewer
may do. No worker runs here: exports stay queued, and the delivery log is written directly."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from eventpipe.local.process import free_port
from eventpipe.local.stack import StackUrls
from tests.integration.pipeline_support import LivePipeline, live_pipeline
from tests.integration.support import api_env, running_api
from tests.integration.test_dashboard import (
    EVIL,
    Json,
    assert_no_inline_code,
    assert_page_headers,
    new_account,
    new_project,
    post_form,
)

pytestmark = pytest.mark.integration

EXPORT = {"format": "ndjson", "from": "2026-01-01T00:00", "to": "2026-01-02T00:00",
          "name": "Signed Up", "type": "track", "user_id": "", "anonymous_id": "",
          "property": "plan", "value": "pro"}  # fmt: skip
RULE = {"name": "Checkouts stopped", "event": "Order Completed", "comparison": "below",
        "threshold": "1", "window_minutes": "15",
        "webhook_url": "https://hooks.example.com/eventpipe"}  # fmt: skip
SECRET = re.compile(r'<code id="new-secret" class="key">(whsec_[A-Za-z0-9+/=]+)</code>')


@pytest.fixture(scope="module")
def live(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePipeline]:
    with live_pipeline(stack_urls, tmp_path_factory.mktemp("dashboard-jobs")) as running:
        yield running


@pytest.fixture
def http(live: LivePipeline) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


def job_rows(page: str) -> list[tuple[str, str]]:
    """The exports list's rows: (job id, state), in the page's order."""
    return re.findall(r'<tr id="job-[0-9a-f-]{36}" data-job="([0-9a-f-]{36})" '
                      r'data-state="([a-z]+)">', page)  # fmt: skip


def requested_job(answer: httpx.Response, project: str) -> str:
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith(f"/projects/{project}/exports?done=requested#job-"), location
    return location.rpartition("#job-")[2]


def create_rule(http: httpx.Client, project: str, **changes: str) -> tuple[str, str]:
    """A rule made with the form: (its id, its secret, from the page that showed it)."""
    answer = post_form(http, f"/projects/{project}/alerts", {**RULE, **changes})
    assert answer.status_code == 201, answer.text
    secret = SECRET.search(answer.text)
    rule = re.search(rf'href="/projects/{project}/alerts/([0-9a-f-]{{36}})"', answer.text)
    assert secret and rule, answer.text
    return rule.group(1), secret.group(1)


def add_viewer(live: LivePipeline, owner: httpx.Client, viewer: httpx.Client, project: str) -> None:
    email = new_account(live, viewer, "viewer")
    added = post_form(owner, f"/projects/{project}/members", {"email": email, "role": "viewer"})
    assert added.status_code == 303, added.text


def record_deliveries(live: LivePipeline, rule: str, rows: list[Json]) -> None:
    """Rows of the delivery log, as the worker writes them (its own tests cover that)."""
    with psycopg.connect(live.pipeline.database_url) as conn:
        for row in rows:
            conn.execute(
                "INSERT INTO webhook_deliveries (rule_id, message_id, event_type, attempt, status,"
                " latency_ms, error, outcome) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (rule, row["message_id"], row["event_type"], row["attempt"], row["status"],
                 row["latency_ms"], row["error"], row["outcome"]),
            )  # fmt: skip


def disable_endpoint(live: LivePipeline, rule: str, reason: str) -> None:
    with psycopg.connect(live.pipeline.database_url) as conn:
        conn.execute(
            "UPDATE alert_rules SET enabled = false, disabled_reason = %s, failures_in_a_row = 5"
            " WHERE id = %s",
            (reason, rule),
        )


# --- exports ------------------------------------------------------------------------------------


def test_an_export_asked_for_with_the_form_is_queued_once_for_the_same_inputs(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "exports")
    project, _, _ = new_project(http)
    base = f"/projects/{project}/exports"
    empty = http.get(base)
    assert empty.status_code == 200 and "No export yet." in empty.text
    assert f'action="{base}"' in empty.text and 'src="/static/exports.js"' in empty.text

    job = requested_job(post_form(http, base, EXPORT), project)
    listed = http.get(base)
    assert job_rows(listed.text) == [(job, "queued")]
    assert "Export requested." in http.get(f"{base}?done=requested").text
    assert "ndjson: 2026-01-01 00:00:00 to 2026-01-02 00:00:00; name = Signed Up; type = track; " \
           "plan = pro" in listed.text  # fmt: skip
    followed = http.get(f"/api/jobs/{job}")  # what exports.js reads, by the cookie
    assert followed.status_code == 200, followed.text
    assert followed.json()["state"] == "queued"
    assert followed.json()["inputs"]["filters"] == {"name": "Signed Up", "type": "track",
                                                    "property": "plan", "value": "pro"}  # fmt: skip

    # A double click: the same export, no second row.
    assert requested_job(post_form(http, base, EXPORT), project) == job
    assert job_rows(http.get(base).text) == [(job, "queued")]
    other = requested_job(post_form(http, base, {**EXPORT, "format": "csv"}), project)
    assert job_rows(http.get(base).text) == [(other, "queued"), (job, "queued")]  # newest first


def test_the_export_form_refuses_bad_input_with_the_search_pages_rules(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "export-input")
    project, _, _ = new_project(http)
    base = f"/projects/{project}/exports"
    cases = [
        ({"value": ""}, "`property` and `value` go together"),
        ({"to": "2025-12-31T00:00"}, "`to` must be after `from`"),
        ({"format": "xlsx"}, "format: Input should be"),
        ({"from": "yesterday"}, "from: Input should be a valid datetime"),
        ({"property": "a..b"}, "`property` is a dotted path"),
        ({"type": "click"}, "type: Input should be"),
    ]
    for change, message in cases:
        refused = post_form(http, base, {**EXPORT, **change})
        assert refused.status_code == 422, change
        assert message in html.unescape(refused.text), (change, refused.text)
        assert 'value="Signed Up"' in refused.text  # the form keeps what was typed
    assert job_rows(http.get(base).text) == []


# --- alerts -------------------------------------------------------------------------------------


def test_an_alert_rules_secret_is_shown_once_and_the_list_never_shows_it(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "alerts")
    project, _, _ = new_project(http)
    base = f"/projects/{project}/alerts"
    assert "No alert rule yet." in http.get(base).text
    rule, secret = create_rule(http, project)
    every, _ = create_rule(http, project, name="Any traffic", event="", comparison="above")
    for page in (http.get(base), http.get(f"{base}/{rule}")):
        assert page.status_code == 200
        assert secret not in page.text and "whsec_" not in page.text
    listed = http.get(base).text
    assert "Checkouts stopped" in listed and "Order Completed" in listed
    assert "count below 1 in 15 min" in listed and "every event" in listed
    assert "https://hooks.example.com/eventpipe" in listed
    assert f"{base}/{every}" in listed
    public = http.get(f"/api/projects/{project}/alerts/{rule}").json()
    assert public["state"] == "ok" and "webhook_secret" not in public

    # Another project's rule is not found under this one.
    other, _, _ = new_project(http, "Other")
    assert http.get(f"/projects/{other}/alerts/{rule}").status_code == 404


def test_a_private_or_odd_webhook_url_is_refused_with_the_reason(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "refused")
    project, _, _ = new_project(http)
    base = f"/projects/{project}/alerts"
    cases = [
        ("http://127.0.0.1:9000/hook", "127.0.0.1 is a loopback address"),
        ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("http://user:pw@hooks.example.com/", "credentials in the URL"),
        ("ftp://hooks.example.com/", "URL scheme should be 'http' or 'https'"),
    ]
    for url, reason in cases:
        refused = post_form(http, base, {**RULE, "webhook_url": url})
        assert refused.status_code == 422, url
        text = html.unescape(refused.text)
        assert reason in text, (url, text)
        assert 'value="Checkouts stopped"' in refused.text
        assert "whsec_" not in refused.text
    bad = post_form(http, base, {**RULE, "threshold": "many"})
    assert bad.status_code == 422 and "threshold: Input should be a valid integer" in bad.text
    assert http.get(f"/api/projects/{project}/alerts").json() == []


def test_a_private_webhook_url_is_accepted_where_the_api_allows_it(
    live: LivePipeline, tmp_path: Path
) -> None:
    env = {**api_env(live.settings, free_port(), tmp_path / "state"),
           "EVENTPIPE_WEBHOOK_ALLOW_PRIVATE": "true"}  # fmt: skip
    with running_api(env, tmp_path / "api.log") as url, httpx.Client(base_url=url) as http:
        new_account(live, http, "private")
        project, _, _ = new_project(http)
        create_rule(http, project, webhook_url="http://127.0.0.1:9000/hook")


def test_the_rule_page_shows_the_delivery_log_and_re_enables_and_deletes(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "rule-page")
    project, _, _ = new_project(http)
    rule, _ = create_rule(http, project)
    page = f"/projects/{project}/alerts/{rule}"
    assert "No delivery yet" in http.get(page).text
    record_deliveries(live, rule, [
        {"message_id": "msg_first", "event_type": "alert.firing", "attempt": 1, "status": 503,
         "latency_ms": 41.6, "error": "HTTP 503", "outcome": "retrying"},
        {"message_id": "msg_first", "event_type": "alert.firing", "attempt": 2, "status": None,
         "latency_ms": 10000.0, "error": "timed out <b>", "outcome": "disabled"},
    ])  # fmt: skip
    disable_endpoint(live, rule, "5 failed deliveries in a row")

    shown = http.get(page).text
    rows = re.findall(r"<tr>\s*<td><time[^>]*>[^<]*</time></td>\s*<td><code class=\"small\">"
                      r"msg_first</code></td>\s*<td>alert.firing</td>\s*<td class=\"num\">(\d)"
                      r"</td>\s*<td class=\"num\">([^<]*)</td>\s*<td class=\"num\">(\d+)</td>"
                      r"\s*<td>([a-z]+)</td>", shown)  # fmt: skip
    assert rows == [("2", "–", "10000", "disabled"), ("1", "503", "42", "retrying")]  # newest first
    assert "timed out &lt;b&gt;" in shown and "HTTP 503" in shown
    assert "disabled: 5 failed deliveries in a row" in shown
    assert "disabled: 5 failed deliveries in a row" in http.get(f"/projects/{project}/alerts").text

    assert post_form(http, f"{page}/enable", {}, origin=EVIL).status_code == 403
    enabled = post_form(http, f"{page}/enable", {})
    assert (enabled.status_code, enabled.headers["location"]) == (303, f"{page}?done=enabled")
    after = http.get(enabled.headers["location"]).text
    assert "The endpoint is enabled again" in after and "Enable the endpoint again" not in after
    public = http.get(f"/api/projects/{project}/alerts/{rule}").json()
    assert (public["enabled"], public["disabled_reason"], public["failures_in_a_row"]) == (
        True, None, 0)  # fmt: skip

    deleted = post_form(http, f"{page}/delete", {})
    assert deleted.headers["location"] == f"/projects/{project}/alerts?done=deleted"
    assert "The rule, its endpoint and its delivery log are deleted." in http.get(
        deleted.headers["location"]).text  # fmt: skip
    assert http.get(page).status_code == 404
    assert post_form(http, f"{page}/delete", {}).status_code == 404


# --- viewers and pages --------------------------------------------------------------------------


def test_a_viewer_may_export_and_sees_alerts_without_forms(
    live: LivePipeline, http: httpx.Client
) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as viewer:
        new_account(live, http, "jobs-owner")
        project, _, _ = new_project(http)
        job = requested_job(post_form(http, f"/projects/{project}/exports", EXPORT), project)
        rule, _ = create_rule(http, project)
        add_viewer(live, http, viewer, project)

        exports = viewer.get(f"/projects/{project}/exports")
        assert exports.status_code == 200 and job_rows(exports.text) == [(job, "queued")]
        # What a viewer may search, a viewer may export (as the JSON api allows).
        assert f'action="/projects/{project}/exports"' in exports.text
        theirs = requested_job(
            post_form(viewer, f"/projects/{project}/exports", {**EXPORT, "format": "csv"}), project
        )
        alerts = viewer.get(f"/projects/{project}/alerts")
        assert alerts.status_code == 200 and "Checkouts stopped" in alerts.text
        assert "New alert rule" not in alerts.text
        assert "Delete the rule" not in viewer.get(f"/projects/{project}/alerts/{rule}").text

        base = f"/projects/{project}"
        for path, form in ((f"{base}/alerts", RULE), (f"{base}/alerts/{rule}/enable", {}),
                           (f"{base}/alerts/{rule}/delete", {})):  # fmt: skip
            refused = post_form(viewer, path, form)
            assert refused.status_code == 403, path
            assert "This needs the member role or higher." in refused.text
        assert job_rows(http.get(f"{base}/exports").text) == [(theirs, "queued"), (job, "queued")]
        assert len(http.get(f"/api/projects/{project}/alerts").json()) == 1


def test_the_jobs_pages_send_the_csp_and_have_no_inline_code(
    live: LivePipeline, http: httpx.Client
) -> None:
    new_account(live, http, "jobs-headers")
    project, _, _ = new_project(http)
    post_form(http, f"/projects/{project}/exports", EXPORT)
    created = post_form(http, f"/projects/{project}/alerts", RULE)
    assert created.status_code == 201
    assert_page_headers(created)
    assert_no_inline_code(created.text)
    rule, _ = create_rule(http, project, name="Second")
    base = f"/projects/{project}"
    for path in (f"{base}/exports", f"{base}/alerts", f"{base}/alerts/{rule}"):
        page = http.get(path)
        assert page.status_code == 200, (path, page.text)
        assert_page_headers(page)
        assert_no_inline_code(page.text)
        assert f'href="{base}/exports"' in page.text and f'href="{base}/alerts"' in page.text
    script = http.get("/static/exports.js")
    assert script.status_code == 200 and "/api/jobs/" in script.text
    unknown = http.get(f"{base}/alerts/{uuid.uuid4()}")
    assert unknown.status_code == 404 and "No such alert rule." in unknown.text
