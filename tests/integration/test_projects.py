"""Projects and their members: roles decide who reads and who changes, tenants never meet."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from eventpipe.api.app import create_app
from eventpipe.auth.admin import create_user_sync
from eventpipe.auth.keys import generate_key_file
from eventpipe.core.config import Settings
from eventpipe.migrations.runner import upgrade

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    headers: dict[str, str]


SignIn = Callable[[str], Account]


@pytest.fixture
def app_settings(settings: Settings, database_url: str, tmp_path: Path) -> Settings:
    upgrade(database_url)
    keys = tmp_path / "keys"
    generate_key_file(keys)
    return settings.model_copy(
        update={
            "jwt_keys_dir": keys,
            "password_time_cost": 1,
            "password_memory_kib": 8192,
            "login_failures_per_address": 100_000,
        }
    )


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def signed_in(client: TestClient, app_settings: Settings, unique: str) -> SignIn:
    """A factory: a new account, signed in, named `who`."""

    def make(who: str) -> Account:
        email = f"{who}-{unique}@example.com"
        user_id = create_user_sync(app_settings, email=email, password=PASSWORD)
        answer = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        return Account(id=str(user_id), email=email, headers=headers)

    return make


@pytest.fixture
def owner(signed_in: SignIn) -> Account:
    return signed_in("owner")


@pytest.fixture
def project_id(client: TestClient, owner: Account) -> str:
    answer = client.post("/api/projects", json={"name": "Shop"}, headers=owner.headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["role"] == "owner"
    project: str = answer.json()["id"]
    return project


def add_member(
    client: TestClient, owner: Account, project_id: str, email: str, role: str
) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/api/projects/{project_id}/members",
        json={"email": email, "role": role},
        headers=owner.headers,
    )
    return response


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def members(client: TestClient, account: Account, project_id: str) -> dict[str, str]:
    answer = client.get(f"/api/projects/{project_id}/members", headers=account.headers)
    assert answer.status_code == 200, answer.text
    return {member["email"]: member["role"] for member in answer.json()}


def test_viewer_reads_but_cannot_change_a_project(
    client: TestClient, signed_in: SignIn, owner: Account, project_id: str
) -> None:
    viewer = signed_in("viewer")
    assert add_member(client, owner, project_id, viewer.email, "viewer").status_code == 201
    path = f"/api/projects/{project_id}"

    seen = client.get(path, headers=viewer.headers)
    assert seen.status_code == 200
    assert seen.json()["role"] == "viewer"
    assert_error(
        client.patch(path, json={"name": "Mine"}, headers=viewer.headers), 403, "forbidden"
    )
    assert_error(client.delete(path, headers=viewer.headers), 403, "forbidden")
    assert_error(add_member(client, viewer, project_id, viewer.email, "owner"), 403, "forbidden")
    assert client.get(path, headers=owner.headers).json()["name"] == "Shop"
    assert members(client, viewer, project_id)[viewer.email] == "viewer"


def test_member_renames_but_cannot_delete_or_manage_members(
    client: TestClient, signed_in: SignIn, owner: Account, project_id: str
) -> None:
    member = signed_in("member")
    assert add_member(client, owner, project_id, member.email, "member").status_code == 201
    path = f"/api/projects/{project_id}"

    renamed = client.patch(path, json={"name": "Shop EU"}, headers=member.headers)
    assert renamed.status_code == 200
    assert client.get(path, headers=owner.headers).json()["name"] == "Shop EU"
    assert_error(client.delete(path, headers=member.headers), 403, "forbidden")
    removal = client.delete(f"{path}/members/{owner.id}", headers=member.headers)
    assert_error(removal, 403, "forbidden")


def test_another_tenant_gets_404_as_for_a_missing_project(
    client: TestClient, signed_in: SignIn, owner: Account, project_id: str
) -> None:
    stranger = signed_in("stranger")
    path = f"/api/projects/{project_id}"
    missing = client.get(f"/api/projects/{uuid.uuid4()}", headers=stranger.headers)
    assert_error(missing, 404, "not_found")

    for answer in (
        client.get(path, headers=stranger.headers),
        client.patch(path, json={"name": "Taken"}, headers=stranger.headers),
        client.delete(path, headers=stranger.headers),
        client.get(f"{path}/members", headers=stranger.headers),
        add_member(client, stranger, project_id, stranger.email, "owner"),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.json() == missing.json()
    assert client.get("/api/projects", headers=stranger.headers).json() == []
    assert client.get(path, headers=owner.headers).json()["name"] == "Shop"
    assert members(client, owner, project_id) == {owner.email: "owner"}


def test_owner_manages_members_and_the_last_owner_stays(
    client: TestClient, signed_in: SignIn, owner: Account, project_id: str
) -> None:
    colleague = signed_in("colleague")
    path = f"/api/projects/{project_id}"
    added = add_member(client, owner, project_id, colleague.email.upper(), "viewer")
    assert added.status_code == 201
    assert added.json() == {"user_id": colleague.id, "email": colleague.email, "role": "viewer"}
    unknown = add_member(client, owner, project_id, f"nobody-{uuid.uuid4().hex}@x.org", "member")
    assert_error(unknown, 404, "user_not_found")
    assert members(client, owner, project_id) == {owner.email: "owner", colleague.email: "viewer"}

    # Alone, the owner can neither leave nor step down.
    assert_error(
        client.delete(f"{path}/members/{owner.id}", headers=owner.headers), 409, "last_owner"
    )
    demote = client.patch(
        f"{path}/members/{owner.id}", json={"role": "member"}, headers=owner.headers
    )
    assert_error(demote, 409, "last_owner")

    promote = client.patch(
        f"{path}/members/{colleague.id}", json={"role": "owner"}, headers=owner.headers
    )
    assert promote.status_code == 200
    assert client.delete(f"{path}/members/{owner.id}", headers=owner.headers).status_code == 204
    assert_error(client.get(path, headers=owner.headers), 404, "not_found")
    assert members(client, colleague, project_id) == {colleague.email: "owner"}
    leaving = client.delete(f"{path}/members/{colleague.id}", headers=colleague.headers)
    assert_error(leaving, 409, "last_owner")
