"""The live stream (`/api/projects/{id}/live`, server-sent events) against a real api and
processor: new events after dedupe, exact per-second counts, resuming after Last-Event-ID,
sign-out ending the stream, and a stalled client dropped while another one goes on."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from eventpipe.local.stack import StackUrls
from tests.integration.pipeline_support import LivePipeline, live_pipeline
from tests.integration.sse_client import EventStreamReader
from tests.integration.support import wait_for
from tests.integration.test_ingest import Account, basic, sign_in

pytestmark = pytest.mark.integration

Json = dict[str, Any]
SEND_TIMEOUT_S = 4


@pytest.fixture(scope="module")
def running(
    stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePipeline]:
    base = tmp_path_factory.mktemp("live")
    overrides = {"EVENTPIPE_LIVE_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
                 "EVENTPIPE_LIVE_AUTH_CHECK_S": "0.5"}  # fmt: skip
    with live_pipeline(stack_urls, base, overrides) as pipeline:
        yield pipeline


def send(running: LivePipeline, key: str, ids: list[str], **properties: Any) -> None:
    batch = [{"type": "track", "messageId": m, "userId": "u", "event": "Clicked",
              "properties": properties} for m in ids]  # fmt: skip
    answer = httpx.post(f"{running.url}/v1/batch", json={"batch": batch}, headers=basic(key))
    assert answer.status_code == 200, answer.text


def stream(
    running: LivePipeline,
    project: str,
    account: Account | None = None,
    headers: dict[str, str] | None = None,
) -> EventStreamReader:
    account = account or running.owner
    reader = EventStreamReader(f"{running.url}/api/projects/{project}/live",
                               {**account.headers, **(headers or {})})  # fmt: skip
    # The stream starts at the newest entry when it is opened: wait until it is.
    wait_for(lambda: reader.status is not None and bool(reader.of("second")), 10, "the stream")
    assert reader.status == 200
    return reader


def ids_of(reader: EventStreamReader) -> list[str]:
    return [event["message_id"] for event in reader.events()]


def test_new_events_arrive_once_with_exact_per_second_counts(running: LivePipeline) -> None:
    project, key = running.project_key("live")
    reader = stream(running, project)
    try:
        send(running, key, ["a1", "a2", "a3"])
        send(running, key, ["a2", "a4"])  # a2 again: a duplicate, not new
        reader.wait_events(4)
        assert sorted(ids_of(reader)) == ["a1", "a2", "a3", "a4"]
        assert sum(m.json()["n"] for m in reader.of("events")) == 4

        def per_second() -> int:
            return sum(m.json()["n"] for m in reader.of("second"))

        wait_for(lambda: per_second() == 4, 10, "per-second counts of 4", lambda: str(per_second()))
        first = reader.events()[0]
        assert first["event"] == "Clicked" and first["project_id"] == project
    finally:
        reader.close()


def test_a_reconnecting_client_resumes_after_its_last_event_id(running: LivePipeline) -> None:
    project, key = running.project_key("resume")
    first = stream(running, project)
    send(running, key, ["r1", "r2"])
    first.wait_events(2)
    first.close()
    last_id = first.of("events")[-1].id
    assert last_id is not None
    send(running, key, ["r3"])
    send(running, key, ["r4"])
    running.wait_counted(project, {"Clicked": 4, "$all": 4})
    second = stream(running, project, headers={"Last-Event-ID": last_id})
    try:
        second.wait_events(2)
        assert ids_of(second) == ["r3", "r4"]  # no gap, no repeat
        assert not second.of("reset")
    finally:
        second.close()


def test_an_id_older_than_the_window_is_answered_with_a_reset(running: LivePipeline) -> None:
    project, key = running.project_key("reset")
    send(running, key, ["o1"])
    running.wait_counted(project, {"Clicked": 1, "$all": 1})
    reader = stream(running, project, headers={"Last-Event-ID": "1-0"})
    try:
        assert reader.of("reset")[0].json()["last_event_id"] == "1-0"
        reader.wait_events(1)  # then everything the stream still holds
    finally:
        reader.close()


def test_sign_out_ends_the_stream(running: LivePipeline) -> None:
    project, _ = running.project_key("bye")
    with httpx.Client(base_url=running.url) as http:
        account = sign_in(http, running.settings, f"viewer-{uuid.uuid4().hex[:8]}@example.com")
        answer = http.post(f"/api/projects/{project}/members",
                           json={"email": account.email, "role": "viewer"},
                           headers=running.owner.headers)  # fmt: skip
        assert answer.status_code == 201, answer.text
        reader = stream(running, project, account)
        try:
            assert http.post("/auth/logout", headers=account.headers).status_code == 204
            wait_for(lambda: reader.ended, 10, "the stream to end")
            assert [m.json() for m in reader.of("bye")] == [{"reason": "revoked"}]
        finally:
            reader.close()


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Last-Event-ID": "yesterday"}, 422), ({"Authorization": "Bearer nope"}, 401)],
)
def test_bad_requests_are_refused_before_streaming(
    running: LivePipeline, headers: dict[str, str], status: int
) -> None:
    project, _ = running.project_key("bad")
    answer = httpx.get(f"{running.url}/api/projects/{project}/live",
                       headers={**running.owner.headers, **headers})  # fmt: skip
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"]


def test_a_stalled_client_is_dropped_while_another_goes_on(running: LivePipeline) -> None:
    project, key = running.project_key("stall")
    api_port = int(running.url.rsplit(":", 1)[1])
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", api_port))
    token = running.owner.headers["Authorization"]
    request = (f"GET /api/projects/{project}/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: {token}\r\n\r\n")  # fmt: skip
    stalled.sendall(request.encode())
    healthy = stream(running, project)
    try:
        # ~6 MB of events: more than the stalled socket's buffers on both ends can hold.
        padding = "x" * 30_000
        for round_ in range(20):
            send(running, key, [f"f{round_}-{i}" for i in range(10)], padding=padding)
        # A batch of the processor shows at most 20 of its events (a sample): count them by `n`.
        wait_for(lambda: healthy.counted >= 200, 60, "200 events counted on the stream",
                 lambda: f"{healthy.counted} counted, status {healthy.status}")  # fmt: skip
        assert healthy.counted == 200
        log = running.api_log
        assert log is not None
        wait_for(lambda: "dropped a client" in log.read_text(), 30, "the stalled client dropped")
        send(running, key, ["after"])
        wait_for(lambda: "after" in ids_of(healthy), 10, "the healthy client goes on")
    finally:
        healthy.close()
        stalled.close()
