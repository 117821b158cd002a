"""What browsers and emails need from ingest: CORS on the ingest routes only, each key's allowed
origins, analytics.js's short paths, the Pixel API, and the sender's address in `context.ip`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from eventpipe.api.app import create_app
from eventpipe.core.config import Settings
from eventpipe.local.process import free_port
from tests.integration.support import api_env, running_api
from tests.integration.test_ingest import (
    Account,
    Delivered,
    assert_error,
    basic,
    by_message_id,
    create_project,
    create_write_key,
    json_value,
    keys_path,
    post_event,
    sign_in,
)

pytestmark = pytest.mark.integration

Json = dict[str, Any]
PAGE = "https://shop.example.com"


def track(message_id: str, **fields: Any) -> Json:
    return {"userId": "u", "event": "Clicked", "messageId": message_id, **fields}


def set_origins(client: TestClient, owner: Account, project_id: str, origins: list[str]) -> Json:
    """Create a key allowing `origins`; its 201 answer."""
    answer = client.post(
        keys_path(project_id),
        json={"name": "site", "allowed_origins": origins},
        headers=owner.headers,
    )
    assert answer.status_code == 201, answer.text
    body: Json = answer.json()
    return body


# --- CORS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/track", "/v1/t", "/v1/b", "/v1/page"])
def test_a_preflight_of_an_ingest_route_is_answered_for_any_origin(
    client: TestClient, path: str
) -> None:
    asked = "content-type, authorization, anonymousid"
    response = client.options(
        path,
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked,
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == PAGE
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == asked
    assert response.headers["vary"] == "Origin"


def test_a_preflight_asking_for_odd_headers_gets_the_known_list(client: TestClient) -> None:
    response = client.options(
        "/v1/batch",
        headers={"Origin": PAGE, "Access-Control-Request-Headers": "x\r\nset-cookie: a=b"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-headers"].startswith("Authorization")
    assert_error(client.options("/v1/batch"), 400, "not_a_preflight")


def test_a_page_reads_ingest_answers_and_its_events_arrive(
    client: TestClient,
    write_key: str,
    unique: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    # A text/plain body with the key inside is what analytics.js sends: no preflight needed.
    body = json.dumps({**track(f"page-{unique}"), "writeKey": write_key}).encode()
    response = client.post(
        "/v1/t", content=body, headers={"Origin": PAGE, "Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == PAGE
    assert response.headers["access-control-allow-credentials"] == "true"
    refused = client.post("/v1/t", content=b"{", headers={"Origin": PAGE})
    assert_error(refused, 400, "malformed_json")
    assert refused.headers["access-control-allow-origin"] == PAGE

    assert [d.record.message_id for d in topic_records()] == [f"page-{unique}"]


def test_nothing_but_ingest_answers_cross_origin(client: TestClient, owner: Account) -> None:
    origin = {"Origin": "https://evil.example"}
    answers = [
        client.get("/api/projects", headers={**owner.headers, **origin}),
        client.post(
            "/auth/login", json={"email": "a@example.com", "password": "x"}, headers=origin
        ),
        client.get("/healthz", headers=origin),
        client.options(
            "/api/projects",
            headers={**origin, "Access-Control-Request-Method": "GET"},
        ),
        client.options("/auth/login", headers={**origin, "Access-Control-Request-Method": "POST"}),
    ]
    for answer in answers:
        assert not any(name.startswith("access-control-") for name in answer.headers), answer
    assert answers[3].status_code == 405


# --- each key's allowed origins ------------------------------------------------------------------


def test_a_key_with_origins_refuses_other_pages_and_nothing_reaches_the_topic(
    client: TestClient,
    owner: Account,
    project_id: str,
    unique: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    created = set_origins(
        client, owner, project_id, ["https://Shop.Example.com/", "https://*.example.org"]
    )
    assert created["allowed_origins"] == ["https://shop.example.com", "https://*.example.org"]
    key = created["key"]

    sends = {
        "listed": ("https://shop.example.com", 200),
        "subdomain": ("https://www.example.org", 200),
        "deeper subdomain": ("https://a.b.example.org", 200),
        "other scheme": ("http://shop.example.com", 403),
        "other port": ("https://shop.example.com:8443", 403),
        "parent of a wildcard": ("https://example.org", 403),
        "suffix trick": ("https://evilexample.org", 403),
        "other site": ("https://evil.example", 403),
    }
    for name, (origin, status) in sends.items():
        answer = post_event(client, "/v1/track", track(f"{name}-{unique}"), key, {"Origin": origin})
        assert answer.status_code == status, (name, answer.text)
        if status == 403:
            assert_error(answer, 403, "origin_not_allowed")
    # Servers send no Origin: a key limited to browser origins still serves them.
    assert post_event(client, "/v1/track", track(f"server-{unique}"), key).status_code == 200

    arrived = by_message_id(topic_records()).keys()
    expected = {f"{name}-{unique}" for name, (_, status) in sends.items() if status == 200}
    assert arrived == expected | {f"server-{unique}"}


def test_a_keys_origins_can_be_changed_and_bad_ones_are_refused(
    client: TestClient, owner: Account, project_id: str, account_factory: Callable[[str], Account]
) -> None:
    created = set_origins(client, owner, project_id, [])
    assert created["allowed_origins"] == []
    path = f"{keys_path(project_id)}/{created['id']}"
    changed = client.patch(path, json={"allowed_origins": [PAGE]}, headers=owner.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["allowed_origins"] == [PAGE] and changed.json()["name"] == "site"
    blocked = post_event(client, "/v1/track", track("x"), created["key"], {"Origin": "https://a.b"})
    assert_error(blocked, 403, "origin_not_allowed")

    bad_origins = ["shop.example.com", "https://shop.example.com/path", "ftp://x.y", "https://*"]
    bad_origins += ["https://a.*.example.com", "https://user@x.example", "https://x.example:99999"]
    for bad in bad_origins:
        answer = client.patch(path, json={"allowed_origins": [bad]}, headers=owner.headers)
        assert_error(answer, 422, "invalid_request")
    stranger = account_factory("stranger")
    answer = client.patch(path, json={"allowed_origins": []}, headers=stranger.headers)
    assert_error(answer, 404, "not_found")  # not a member: as if the project did not exist
    missing = client.patch(
        f"{keys_path(project_id)}/00000000-0000-0000-0000-000000000000",
        json={"name": "x"},
        headers=owner.headers,
    )
    assert_error(missing, 404, "not_found")


# --- analytics.js's short paths ----------------------------------------------------------------


def test_the_short_paths_take_their_type_from_the_path_and_beacons_their_key_from_the_query(
    client: TestClient,
    write_key: str,
    unique: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    sent = {
        "/v1/t": ("track", track(f"t-{unique}")),
        "/v1/p": ("page", {"anonymousId": "a", "name": "Home", "messageId": f"p-{unique}"}),
        "/v1/i": ("identify", {"userId": "u", "messageId": f"i-{unique}"}),
        "/v1/g": ("group", {"userId": "u", "groupId": "g", "messageId": f"g-{unique}"}),
        "/v1/a": ("alias", {"userId": "u", "previousId": "a", "messageId": f"a-{unique}"}),
        "/v1/s": ("screen", {"userId": "u", "name": "Home", "messageId": f"s-{unique}"}),
        "/v1/b": ("track", {"batch": [{**track(f"b-{unique}"), "type": "track"}]}),
    }
    for path, (_, body) in sent.items():
        assert post_event(client, path, body, write_key).status_code == 200, path
    # RudderStack's beacon: no header at all, the key in the query, a text/plain body.
    beacon = json.dumps({"batch": [{**track(f"h-{unique}"), "type": "track"}]}).encode()
    answer = client.post(
        "/beacon/v1/batch", params={"writeKey": write_key}, content=beacon,
        headers={"Content-Type": "text/plain"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    sent["/beacon/v1/batch"] = ("track", {})

    records = by_message_id(topic_records())
    for path, (kind, _) in sent.items():
        assert records[f"{path[-1]}-{unique}"].record.type == kind


# --- the Pixel API -------------------------------------------------------------------------------


def pixel_data(event: Json, *, urlsafe: bool = False) -> str:
    raw = json.dumps(event).encode()
    encoded = base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)
    return encoded.decode().rstrip("=")


def test_a_pixel_answers_a_gif_once_its_event_is_in_kafka(
    client: TestClient,
    write_key: str,
    unique: str,
    topic_records: Callable[[], list[Delivered]],
) -> None:
    opened = {**track(f"pixel-{unique}", event="Email Opened"), "writeKey": write_key}
    opened["properties"] = {"subject": "Grüße 🎉", "campaign": "nov?&="}
    answer = client.get("/v1/pixel/track", params={"data": pixel_data(opened, urlsafe=True)})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/gif"
    assert answer.headers["cache-control"] == "no-store"
    # A GIF whose logical screen is 1x1 (two little-endian 16-bit sizes after the signature).
    assert answer.content.startswith(b"GIF89a") and answer.content[6:10] == b"\x01\x00\x01\x00"
    page = {
        "anonymousId": "a",
        "name": "Mail",
        "messageId": f"pixelpage-{unique}",
        "writeKey": write_key,
    }
    assert client.get("/v1/pixel/page", params={"data": pixel_data(page)}).status_code == 200

    records = by_message_id(topic_records())
    assert records.keys() == {f"pixel-{unique}", f"pixelpage-{unique}"}
    record = records[f"pixel-{unique}"].record
    assert record.event == "Email Opened" and record.type == "track"
    assert json_value(record.properties) == opened["properties"]


def test_a_bad_pixel_gets_a_json_error_and_nothing_reaches_the_topic(
    client: TestClient,
    write_key: str,
    sentinel: Callable[[], str],
    topic_records: Callable[[], list[Delivered]],
) -> None:
    good = {**track("never"), "writeKey": write_key}
    cases = [
        ("/v1/pixel/track", None, 400, "missing_data"),
        ("/v1/pixel/track", "%%%not base64", 400, "invalid_data"),
        (
            "/v1/pixel/track",
            pixel_data({"userId": "u"} | {"writeKey": write_key}),
            400,
            "invalid_event",
        ),
        ("/v1/pixel/track", base64.b64encode(b"{not json").decode(), 400, "malformed_json"),
        ("/v1/pixel/track", pixel_data({**good, "writeKey": "wk_nope"}), 401, "invalid_write_key"),
        ("/v1/pixel/track", pixel_data(track("nokey")), 401, "missing_write_key"),
        ("/v1/pixel/track", "A" * 50_000, 400, "event_too_large"),
        ("/v1/pixel/purchase", pixel_data(good), 404, "not_found"),
    ]
    for path, data, status, code in cases:
        params = {} if data is None else {"data": data}
        assert_error(client.get(path, params=params), status, code)
    last = sentinel()
    assert [d.record.message_id for d in topic_records()] == [last]


# --- context.ip, and X-Forwarded-For from trusted proxies only ---------------------------------


def send_from(url: str, key: str, message_id: str, **extra: Any) -> None:
    body = track(message_id, **extra)
    headers = {"X-Forwarded-For": "198.51.100.7, 203.0.113.50"}
    answer = httpx.post(f"{url}/v1/track", json=body, auth=(key, ""), headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("trusted", ["", "127.0.0.1,203.0.113.0/24"], ids=["none", "loopback"])
def test_context_ip_is_the_sender_and_forwarded_for_only_through_trusted_proxies(
    app_settings: Settings,
    tmp_path: Path,
    unique: str,
    topic_records: Callable[[], list[Delivered]],
    trusted: str,
) -> None:
    env = api_env(app_settings, free_port(), tmp_path / "state")
    env["EVENTPIPE_TRUSTED_PROXIES"] = trusted
    with running_api(env, tmp_path / "api.log") as url:
        with httpx.Client(base_url=url, timeout=10) as http:
            key = create_write_key(
                http,
                (owner := sign_in(http, app_settings, f"o-{unique}@example.com")),
                create_project(http, owner),
            )["key"]
        send_from(url, key, f"derived-{unique}")
        send_from(url, key, f"kept-{unique}", context={"ip": "192.0.2.1", "locale": "de"})

    records = by_message_id(topic_records())
    # Through loopback and 203.0.113.0/24, the first address neither of them holds is the client.
    expected = "198.51.100.7" if trusted else "127.0.0.1"
    assert json_value(records[f"derived-{unique}"].record.context) == {"ip": expected}
    assert json_value(records[f"kept-{unique}"].record.context) == {
        "ip": "192.0.2.1",
        "locale": "de",
    }


# --- what the browser SDKs fetch before sending --------------------------------------------------


def test_analytics_js_settings_point_back_at_eventpipe(
    client: TestClient, owner: Account, project_id: str, write_key: str
) -> None:
    answer = client.get(f"/v1/projects/{write_key}/settings", headers={"Origin": PAGE})
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == PAGE
    segment = answer.json()["integrations"]["Segment.io"]
    # TestClient's base URL is http://testserver: the URL the request came in on.
    assert (segment["apiKey"], segment["apiHost"], segment["protocol"]) == (
        write_key, "testserver/v1", "http",
    )  # fmt: skip
    assert segment["deliveryStrategy"]["config"] == {"keepalive": True}
    assert answer.json()["metrics"] == {"sampleRate": 0}
    # Nothing that would make analytics.js load code from elsewhere.
    assert set(answer.json()) == {"integrations", "metrics"}

    assert_error(client.get("/v1/projects/wk_unknown/settings"), 401, "invalid_write_key")
    limited = set_origins(client, owner, project_id, ["https://other.example"])["key"]
    refused = client.get(f"/v1/projects/{limited}/settings", headers={"Origin": PAGE})
    assert_error(refused, 403, "origin_not_allowed")
    assert client.get(f"/v1/projects/{limited}/settings").status_code == 200


def test_rudderstack_source_config_names_the_key_and_its_project(
    client: TestClient, project_id: str, write_key: str
) -> None:
    query = {"p": "npm", "v": "3.34.1", "build": "modern", "writeKey": write_key}
    by_query = client.get("/sourceConfig/", params=query, headers={"Origin": PAGE})
    assert by_query.status_code == 200, by_query.text
    assert by_query.headers["access-control-allow-origin"] == PAGE
    source = by_query.json()["source"]
    assert source["enabled"] is True and source["destinations"] == []
    assert (source["writeKey"], source["workspaceId"]) == (write_key, project_id)
    assert source["config"]["statsCollection"]["errors"]["enabled"] is False
    by_header = client.get("/sourceConfig/", headers=basic(write_key))
    assert by_header.json()["source"]["id"] == source["id"]

    assert_error(client.get("/sourceConfig/"), 401, "missing_write_key")
    assert_error(
        client.get("/sourceConfig/", params={"writeKey": "wk_x"}), 401, "invalid_write_key"
    )
    preflight = client.options(
        "/sourceConfig/",
        headers={"Origin": PAGE, "Access-Control-Request-Headers": "authorization"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-headers"] == "authorization"


def test_the_public_url_setting_is_what_analytics_js_is_told(
    app_settings: Settings, write_key: str
) -> None:
    public = app_settings.model_copy(update={"public_url": "https://events.example.com/"})
    with TestClient(create_app(public)) as other:
        answer = other.get(f"/v1/projects/{write_key}/settings")
    segment = answer.json()["integrations"]["Segment.io"]
    assert (segment["apiHost"], segment["protocol"]) == ("events.example.com/v1", "https")
