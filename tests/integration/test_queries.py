"""The read path against a real api and processor: exact figures from a known set of events
(a duplicate, late events, a second project that must see nothing of the first), event search
with cursors, and each event's trace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from fastapi.testclient import TestClient

from eventpipe.domain.events import EventRecord, encode_record
from eventpipe.local.stack import StackUrls
from tests.integration.pipeline_support import LivePipeline, live_pipeline
from tests.integration.support import wait_for
from tests.integration.test_ingest import Account, basic, sign_in

pytestmark = pytest.mark.integration

Json = dict[str, Any]
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def track(message_id: str, user: str, name: str, at: datetime, **properties: Any) -> Json:
    return {"type": "track", "messageId": message_id, "userId": user, "event": name,
            "timestamp": iso(at), "properties": properties}  # fmt: skip


# The known set: (messageId, user, name, minutes ago, properties).
Known = tuple[str, str, str, int, Json]
RECENT: list[Known] = [
    ("s1", "u1", "Signup", 5, {"plan": "free"}),
    ("s2", "u2", "Signup", 5, {"plan": "free"}),
    ("s3", "u3", "Signup", 4, {"plan": "team"}),
    ("p1", "u1", "Purchase", 3, {"plan": "pro", "amount": 42, "cart": {"size": 2}}),
    ("p2", "u1", "Purchase", 2, {"plan": "free", "amount": "42"}),
]
PREVIOUS: list[Known] = [
    ("s4", "u7", "Signup", 45, {"plan": "free"})
]  # in the 30 minutes before the last 30
LATE: list[Known] = [
    ("s5", "u5", "Signup", 2 * 60, {}),  # 2 hours ago: in 24 h, not in 30 min
    ("p3", "u6", "Purchase", 3 * 24 * 60, {"plan": "pro"}),  # 3 days ago: in 7 days only
]
EVERY = RECENT + PREVIOUS + LATE


@dataclass
class Setup:
    running: LivePipeline
    http: httpx.Client
    project: str
    key: str
    other_project: str
    stranger: Account

    def get(self, path: str, project: str | None = None, **params: Any) -> httpx.Response:
        url = f"/api/projects/{project or self.project}{path}"
        return self.http.get(url, params=params, headers=self.running.owner.headers)


@pytest.fixture(scope="module")
def setup(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    # The known set is placed around the moment it is sent, not when this module was imported:
    # the tests that run before it (20 minutes of them) would move it out of its windows.
    global NOW
    NOW = datetime.now(UTC).replace(microsecond=0)
    base = tmp_path_factory.mktemp("queries")
    with live_pipeline(stack_urls, base) as running, httpx.Client(base_url=running.url) as http:
        project, key = running.project_key("shop")
        other_project, other_key = running.project_key("blog")
        page = {"type": "page", "messageId": "pg1", "anonymousId": "a4", "name": "Home",
                "timestamp": iso(NOW - timedelta(minutes=1))}  # fmt: skip
        batch = [track(m, u, n, NOW - timedelta(minutes=ago), **p) for m, u, n, ago, p in EVERY]
        answer = http.post("/v1/batch", json={"batch": [*batch, page]}, headers=basic(key))
        assert answer.status_code == 200, answer.text
        # A retry of s1 (same messageId): counted once, archived once.
        again = http.post("/v1/batch", json={"batch": [batch[0]]}, headers=basic(key))
        assert again.status_code == 200, again.text
        # The other project's events share names and ids with the first's.
        theirs = [track("s1", "x1", "Signup", NOW - timedelta(minutes=5)),
                  track("x2", "x2", "Signup", NOW - timedelta(minutes=5))]  # fmt: skip
        answer = http.post("/v1/batch", json={"batch": theirs}, headers=basic(other_key))
        assert answer.status_code == 200, answer.text
        running.wait_archived(project, len(EVERY) + 1)
        running.wait_counted(project, {"Signup": 5, "Purchase": 3, "$page": 1, "$all": 9})
        running.wait_counted(other_project, {"Signup": 2, "$all": 2})
        stranger = sign_in(http, running.settings, f"stranger-{uuid.uuid4().hex[:8]}@example.com")
        yield Setup(running, http, project, key, other_project, stranger)


def totals_of(series: list[Json]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for point in series:
        for name, count in point["events"].items():
            summed[name] = summed.get(name, 0) + count
    return summed


# --- live analytics ------------------------------------------------------------------------------


def test_the_last_30_minutes_count_each_event_once_by_minute_with_the_previous_period(
    setup: Setup,
) -> None:
    answer = setup.get("/stats/overview", range="30m", compare="true")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["range"]["resolution"] == "minute" and len(body["series"]) == 30
    assert body["total"] == 6  # the duplicate of s1 counted once
    assert body["top"] == [{"name": "Signup", "count": 3}, {"name": "Purchase", "count": 2},
                           {"name": "$page", "count": 1}]  # fmt: skip
    minute = iso(NOW.replace(second=0) - timedelta(minutes=5))
    at = {point["t"].replace("+00:00", "Z"): point["total"] for point in body["series"]}
    assert at[minute] == 2 and sum(at.values()) == 6
    assert body["previous"]["total"] == 1
    assert body["all_time"] == 9
    counts = setup.get("/stats/counts", range="30m", compare="true").json()
    assert totals_of(counts["series"]) == {"Signup": 3, "Purchase": 2, "$page": 1}
    by_minute = {p["t"].replace("+00:00", "Z"): p["events"] for p in counts["series"]}
    assert by_minute[minute] == {"Signup": 2}
    assert totals_of(counts["previous"]["series"]) == {"Signup": 1}


def test_24_hours_and_7_days_take_the_late_events_in(setup: Setup) -> None:
    day = setup.get("/stats/overview", range="24h").json()
    assert day["range"]["resolution"] == "hour" and len(day["series"]) == 24
    assert day["total"] == 8 and {t["name"]: t["count"] for t in day["top"]}["Signup"] == 5
    assert day["users"] == 6  # u1, u2, u3, u5, u7 and the anonymous a4
    week = setup.get("/stats/overview", range="7d").json()
    assert week["range"]["resolution"] == "day" and len(week["series"]) == 7
    assert week["top"] == [{"name": "Signup", "count": 5}, {"name": "Purchase", "count": 3},
                           {"name": "$page", "count": 1}]  # fmt: skip
    assert week["users"] == 7
    counts = setup.get("/stats/counts", range="7d").json()
    assert totals_of(counts["series"]) == {"Signup": 5, "Purchase": 3, "$page": 1}


def test_counts_of_chosen_names_at_a_chosen_resolution(setup: Setup) -> None:
    start, end = NOW - timedelta(hours=4), NOW + timedelta(minutes=1)
    answer = setup.get("/stats/counts", **{"from": iso(start), "to": iso(end)},
                       resolution="hour", event="Purchase")  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"] == 2 and totals_of(body["series"]) == {"Purchase": 2}
    totals = setup.get("/stats/totals").json()
    assert totals == {"total": 9, "events": {"Signup": 5, "Purchase": 3, "$page": 1}}


def test_unique_users_per_hour_and_top_events(setup: Setup) -> None:
    users = setup.get("/stats/users", range="24h").json()
    assert users["users"] == 6 and sum(p["users"] for p in users["series"]) >= 6
    top = setup.get("/stats/top", range="7d", limit=1).json()
    assert top["events"] == [{"name": "Signup", "count": 5}]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, "give `range`"),
        ({"range": "1y"}, "range"),
        ({"range": "7d", "from": "2026-01-01T00:00:00Z"}, "not both"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "after"),
        ({"from": iso(NOW - timedelta(days=3)), "to": iso(NOW), "resolution": "minute"}, "kept"),
        ({"from": iso(NOW - timedelta(days=200)), "to": iso(NOW)}, "kept"),
    ],
)
def test_ranges_the_aggregates_cannot_answer_are_refused_with_the_reason(
    setup: Setup, params: Json, problem: str
) -> None:
    answer = setup.get("/stats/overview", **params)
    assert answer.status_code == 422, answer.text
    assert problem in answer.json()["error"]["message"]


def test_projects_see_nothing_of_each_other(setup: Setup) -> None:
    theirs = setup.get("/stats/totals", project=setup.other_project).json()
    assert theirs == {"total": 2, "events": {"Signup": 2}}
    found = setup.get("/events", project=setup.other_project, name="Purchase").json()
    assert found["events"] == []
    # s1 exists in both projects: each sees its own.
    mine = setup.get("/events/s1").json()
    assert mine["user_id"] == "u1"
    assert setup.get("/events/s1", project=setup.other_project).json()["user_id"] == "x1"
    for path in ("/stats/overview?range=30m", "/events", "/events/s1", "/events/s1/trace"):
        answer = setup.http.get(f"/api/projects/{setup.project}{path}",
                                headers=setup.stranger.headers)  # fmt: skip
        assert answer.status_code == 404, (path, answer.text)
        assert setup.http.get(f"/api/projects/{setup.project}{path}").status_code == 401


# --- event search ---------------------------------------------------------------------------------


def ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [event["message_id"] for event in answer.json()["events"]]


def test_search_by_name_newest_first(setup: Setup) -> None:
    assert ids(setup.get("/events", name="Purchase")) == ["p2", "p1", "p3"]
    assert ids(setup.get("/events", type="page")) == ["pg1"]
    assert ids(setup.get("/events", name="$page")) == ["pg1"]


def test_search_by_user_anonymous_id_and_time_range(setup: Setup) -> None:
    assert ids(setup.get("/events", user_id="u1")) == ["p2", "p1", "s1"]
    assert ids(setup.get("/events", anonymous_id="a4")) == ["pg1"]
    since = {"from": iso(NOW - timedelta(minutes=4, seconds=30)), "to": iso(NOW)}
    assert ids(setup.get("/events", **since)) == ["pg1", "p2", "p1", "s3"]


def test_search_by_property_value_as_text_or_as_the_json_it_spells(setup: Setup) -> None:
    assert ids(setup.get("/events", property="plan", value="pro")) == ["p1", "p3"]
    # amount 42 (a number in p1) and "42" (a string in p2) both equal the text 42.
    assert ids(setup.get("/events", property="amount", value="42")) == ["p2", "p1"]
    assert ids(setup.get("/events", property="cart.size", value="2")) == ["p1"]
    assert ids(setup.get("/events", property="plan", value="pro", name="Purchase",
                         **{"from": iso(NOW - timedelta(hours=1))})) == ["p1"]  # fmt: skip


def test_cursor_pages_cover_everything_once_in_order(setup: Setup) -> None:
    everything = ids(setup.get("/events", limit=500))
    assert len(everything) == len(EVERY) + 1
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: Json = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        answer = setup.get("/events", **params)
        seen += ids(answer)
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == everything


@pytest.mark.parametrize(
    "params",
    [{"cursor": "not-a-cursor"}, {"property": "plan"}, {"property": "a..b", "value": "1"},
     {"type": "click"}, {"name": "a\x00b"}, {"limit": 0}],
)  # fmt: skip
def test_bad_search_parameters_are_refused_with_422(setup: Setup, params: Json) -> None:
    answer = setup.get("/events", **params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["message"]


def test_one_event_by_message_id(setup: Setup) -> None:
    event = setup.get("/events/p1").json()
    assert event["event"] == "Purchase" and event["properties"]["cart"] == {"size": 2}
    missing = setup.get("/events/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# --- where is my event? -------------------------------------------------------------------------


def read_at(bootstrap: str, topic: str, partition: int, offset: int) -> bytes | None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        message = consumer.consume(1, timeout=10)[0]
        return message.value()
    finally:
        consumer.close()


def test_trace_of_an_archived_event_names_its_kafka_position(setup: Setup) -> None:
    trace = setup.get("/events/p1/trace").json()
    assert trace["status"] == "archived"
    stages = {stage["stage"]: stage for stage in trace["stages"]}
    assert stages["counted"]["reached"] and stages["archived"]["reached"]
    assert not stages["dead_lettered"]["reached"]
    accepted = stages["accepted"]
    assert accepted["reached"] and accepted["topic"] == setup.running.settings.events_topic
    value = read_at(setup.running.settings.kafka_bootstrap or "", accepted["topic"],
                    accepted["partition"], accepted["offset"])  # fmt: skip
    assert value is not None and b'"message_id":"p1"' in value


def test_trace_of_a_dead_lettered_event_gives_the_reason(setup: Setup) -> None:
    settings = setup.running.settings
    # A record of a schema version this processor cannot read: it goes to the DLQ.
    record = EventRecord(v=2, project_id=setup.project, message_id="poison-1", type="track",
                         received_at=iso(NOW), timestamp=iso(NOW), day=NOW.date().isoformat(),
                         user_id="u9", event="Signup")  # fmt: skip
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.events_topic, encode_record(record))
    assert producer.flush(10) == 0
    trace: Json = {}

    def dead() -> bool:
        trace.update(setup.get("/events/poison-1/trace").json())
        return trace.get("status") == "dead_lettered"

    wait_for(dead, 30, "the poison in the DLQ", lambda: str(trace))
    stages = {stage["stage"]: stage for stage in trace["stages"]}
    assert "record version 2" in stages["dead_lettered"]["reason"]
    assert stages["accepted"]["topic"] == settings.events_topic
    assert not stages["archived"]["reached"] and not stages["counted"]["reached"]


def test_trace_of_an_unknown_event_says_where_it_looked(setup: Setup) -> None:
    trace = setup.get("/events/never-sent/trace").json()
    assert trace["status"] == "unknown"
    assert not any(stage["reached"] for stage in trace["stages"])
    assert trace["checked"]["kafka_scan_complete"] is True


def test_trace_of_an_event_waiting_in_kafka(
    client: TestClient, owner: Account, project_id: str, write_key: str
) -> None:
    """The in-process api's topic has no processor: the event is accepted and waits in Kafka."""
    answer = client.post(
        "/v1/track", json=track("w1", "u1", "Signup", NOW), headers=basic(write_key)
    )
    assert answer.status_code == 200, answer.text
    path = f"/api/projects/{project_id}/events/w1/trace"
    trace = client.get(path, headers=owner.headers).json()
    assert trace["status"] == "in_kafka", trace
    stages = {stage["stage"]: stage for stage in trace["stages"]}
    assert stages["accepted"]["reached"] and stages["accepted"]["offset"] >= 0
    assert not stages["counted"]["reached"] and not stages["archived"]["reached"]
