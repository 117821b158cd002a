"""Every operation of the OpenAPI schema, fuzzed by schemathesis against a running `eventpipe api`.

The api is a real process (uvicorn, as deployed) on the shared Kafka, Redis and PostgreSQL, so a
status the schema does not list, a body that does not match its schema or a 500 from a value
PostgreSQL refuses (a NUL character) is found as a client would find it. Requests carry real
credentials and real ids, so the operations answer their successes too, not only 401 and 404.

The schema is the app's own, built at collection time (one test per operation, each reported by
name); `test_the_served_schema_is_the_one_tested` proves the process serves that very schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case
from starlette.routing import Route

from eventpipe.api.app import create_app
from eventpipe.auth.admin import create_user_sync
from eventpipe.core.config import Settings
from eventpipe.local.stack import StackUrls
from tests.integration.ingest_fixtures import module_api_settings
from tests.integration.support import (
    api_env,
    free_port,
    running_api,
)
from tests.integration.test_ingest import (
    PASSWORD,
    Account,
    basic,
    create_project,
    create_write_key,
    sign_in,
)

pytestmark = pytest.mark.integration

# Bounded for 2 shared cores: the coverage phase's boundary cases plus at most this many fuzzed
# cases per operation; the seed makes every run send the same requests.
MAX_EXAMPLES = 10
SEED = 20261201
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
# /api/projects/{id}/live is a server-sent event stream that never ends: its own tests cover it.
# Nothing else is excluded.
EXCLUDED_PATHS = r"^/api/projects/\{project_id\}/live$"
# Every event route runs one endpoint with one body schema (SegmentEvent or SegmentBatch): all are
# fuzzed, but the coverage phase's ~150 systematic cases per body run on /v1/track and /v1/batch.
SAME_ENDPOINTS = r"^/(v1/(?!track$|batch$)[a-z]+|beacon/v1/batch)$"
# Signing out revokes the token it is sent with (logout-all: every token of its account), so
# these get a fresh token of another account each time instead of the owner's.
SIGN_OUT = ("/auth/logout", "/auth/logout-all")
INGEST = ("/v1/", "/beacon/", "/sourceConfig")
PROJECT = "/api/projects/{project_id}"
AnyCase = Case[Any]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        # Methods an operation does not have get the router's 405, for every path alike.
        "phases": {"coverage": {"unexpected-methods": []}},
        "operations": [
            {"include-path-regex": SAME_ENDPOINTS, "phases": {"coverage": {"enabled": False}}}
        ],
        "request-timeout": 10,
    }
)
APP = create_app()
SCHEMA = APP.openapi()
api = schemathesis.openapi.from_dict(SCHEMA, config=CONFIG).exclude(path_regex=EXCLUDED_PATHS)


@dataclass(frozen=True)
class Tenant:
    """An owner's account and the real ids the generated requests are pointed at."""

    url: str
    owner: Account
    leaver_email: str  # signs out: a fresh token of this account per sign-out request
    project_id: str  # the project every /api/projects/{project_id} operation works in
    spare_project_id: str  # the one DELETE /api/projects/{project_id} deletes
    member_id: str  # the leaver, a member: the member routes change and remove it, not the owner
    key_id: str  # a spare write key: the key routes rename and revoke it
    write_key: str  # what ingest sends with; never revoked

    def fill_in(self, case: AnyCase) -> None:
        """Real ids for well-formed ones (a malformed one stays, for its 422), and credentials."""
        ids = self._ids(case.operation.method.upper(), case.operation.path)
        parameters = case.path_parameters or {}
        for name, value in parameters.items():
            if name == "write_key" or (name in ids and _is_uuid(value)):
                parameters[name] = ids[name]
        case.headers["Authorization"] = self._authorization(case.operation.path)

    def _ids(self, method: str, path: str) -> dict[str, str]:
        deleted = (method, path) == ("DELETE", PROJECT)
        return {
            "project_id": self.spare_project_id if deleted else self.project_id,
            "user_id": self.member_id,
            "key_id": self.key_id,
            "write_key": self.write_key,
        }

    def _authorization(self, path: str) -> str:
        if path in SIGN_OUT:
            login = {"email": self.leaver_email, "password": PASSWORD}
            answer = httpx.post(f"{self.url}/auth/login", json=login, timeout=10)
            return f"Bearer {answer.raise_for_status().json()['access_token']}"
        if path.startswith(INGEST):
            return basic(self.write_key)["Authorization"]
        return self.owner.headers["Authorization"]


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def schema_settings(
    stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """A database and a topic of this module's own: one api serves every operation's test."""
    with module_api_settings(stack_urls, tmp_path_factory, "schema") as settings:
        yield settings


@pytest.fixture(scope="module")
def live_api(schema_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base: Path = tmp_path_factory.mktemp("schema-api")
    env = api_env(schema_settings, free_port(), base / "state")
    # Fuzzed logins fail by the hundred from one address: no throttle in the way of the real ones.
    env["EVENTPIPE_LOGIN_FAILURES_PER_ADDRESS"] = "100000"
    with running_api(env, base / "api.log") as url:
        yield url


@pytest.fixture(scope="module")
def tenant(live_api: str, schema_settings: Settings) -> Tenant:
    with httpx.Client(base_url=live_api, timeout=10) as http:
        owner = sign_in(http, schema_settings, "owner@example.com")
        leaver = "leaver@example.com"
        member_id = str(create_user_sync(schema_settings, email=leaver, password=PASSWORD))
        project_id = create_project(http, owner)
        added = http.post(
            f"/api/projects/{project_id}/members",
            json={"email": leaver, "role": "member"},
            headers=owner.headers,
        )
        assert added.status_code == 201, added.text
        return Tenant(
            url=live_api,
            owner=owner,
            leaver_email=leaver,
            project_id=project_id,
            spare_project_id=create_project(http, owner, "Spare"),
            member_id=member_id,
            key_id=create_write_key(http, owner, project_id, "spare")["id"],
            write_key=create_write_key(http, owner, project_id)["key"],
        )


def test_every_plain_route_is_in_the_schema() -> None:
    # A Starlette route (not FastAPI's) is in the schema only as a DocumentedRoute (api/openapi.py).
    plain = [route for route in APP.routes if type(route) is Route and route.include_in_schema]
    assert not plain, [route.path for route in plain]


def test_the_served_schema_is_the_one_tested(live_api: str) -> None:
    assert httpx.get(f"{live_api}/openapi.json", timeout=10).json() == SCHEMA


NUL = "a\x00b"
STORED_STRINGS = [
    ("POST", "/api/projects", {"name": NUL}),
    ("PATCH", "/api/projects/{project}", {"name": NUL}),
    ("POST", "/api/projects/{project}/write-keys", {"name": NUL}),
    ("POST", "/api/projects/{project}/write-keys", {"allowed_origins": [f"https://{NUL}.com"]}),
    ("PATCH", "/api/projects/{project}/write-keys/{key}", {"name": NUL}),
    ("POST", "/auth/login", {"email": "owner@example.com", "password": NUL}),
    ("POST", "/auth/refresh", {"refresh_token": NUL}),
]


@pytest.mark.parametrize(("method", "path", "body"), STORED_STRINGS)
def test_a_nul_character_is_invalid_input_not_a_server_error(
    tenant: Tenant, method: str, path: str, body: dict[str, Any]
) -> None:
    # PostgreSQL refuses NUL in text: a project named "a\x00b" was a 500.
    url = tenant.url + path.format(project=tenant.project_id, key=tenant.key_id)
    answer = httpx.request(method, url, json=body, headers=tenant.owner.headers, timeout=10)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request"


@api.parametrize()
def test_operation_answers_as_its_schema_says(case: AnyCase, tenant: Tenant) -> None:
    tenant.fill_in(case)
    case.call_and_validate(base_url=tenant.url)
