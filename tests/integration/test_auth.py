"""Sign-in, access and refresh tokens, revocation, throttling and signing keys, end to end.

Every test runs the real api (in-process, or as a second process) against the real Redis and
PostgreSQL, with its own database, its own signing keys and its own e-mail addresses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from pydantic import RedisDsn

from eventpipe.api.app import create_app
from eventpipe.auth.admin import create_user_sync
from eventpipe.auth.denylist import revoked_key
from eventpipe.auth.keys import generate_key_file
from eventpipe.core.config import Settings
from eventpipe.local.process import free_port
from eventpipe.local.redis import start_redis
from eventpipe.local.stack import StackUrls
from eventpipe.migrations.runner import upgrade
from tests.integration.support import running_api

PASSWORD = "correct horse battery staple"

Json = dict[str, Any]


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    generate_key_file(directory)
    return directory


@pytest.fixture
def auth_settings(settings: Settings, database_url: str, keys_dir: Path) -> Settings:
    """Cheap Argon2, this test's key, a migrated database; the shared per-address throttle off."""
    upgrade(database_url)
    return settings.model_copy(
        update={
            "jwt_keys_dir": keys_dir,
            "password_time_cost": 1,
            "password_memory_kib": 8192,
            # TestClient's address is the same for every test and the counters live in Redis.
            "login_failures_per_address": 100_000,
        }
    )


@pytest.fixture
def email(unique: str) -> str:
    return f"user-{unique}@example.com"


@pytest.fixture
def user_id(auth_settings: Settings, email: str) -> uuid.UUID:
    return create_user_sync(auth_settings, email=email, password=PASSWORD)


@pytest.fixture
def client(auth_settings: Settings) -> Iterator[TestClient]:
    # Server errors come back as responses, so "never 500" is an assertion, not a crash.
    with TestClient(create_app(auth_settings), raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: TestClient, email: str, password: str = PASSWORD) -> Json:
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def refresh(client: TestClient, refresh_token: str) -> httpx.Response:
    response: httpx.Response = client.post("/auth/refresh", json={"refresh_token": refresh_token})
    return response


def refreshed(client: TestClient, refresh_token: str) -> Json:
    response = refresh(client, refresh_token)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def me(client: TestClient, token: str) -> httpx.Response:
    response: httpx.Response = client.get("/auth/me", headers=bearer(token))
    return response


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert isinstance(error["message"], str) and error["message"]


def unverified(token: str) -> Json:
    claims: Json = jwt.decode(token, options={"verify_signature": False})
    return claims


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Json) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_file_named(directory: Path, kid: str, scratch: Path) -> Path:
    """A key made by the project's own generator, renamed to `kid` (names order the keys)."""
    made = generate_key_file(scratch / kid)
    return made.rename(directory / f"{kid}.pem")


# --- log in, log out, and a second api process ------------------------------------------------


def test_logout_revokes_this_access_token_and_its_refresh_token_only(
    client: TestClient, email: str, user_id: uuid.UUID
) -> None:
    leaving, staying = login(client, email), login(client, email)
    answer = me(client, leaving["access_token"])
    assert answer.status_code == 200
    assert answer.json()["id"] == str(user_id)

    assert client.post("/auth/logout", headers=bearer(leaving["access_token"])).status_code == 204

    assert_unauthorized(me(client, leaving["access_token"]))
    assert_unauthorized(refresh(client, leaving["refresh_token"]))
    # The user's other sign-in is not touched by this one's logout.
    assert me(client, staying["access_token"]).status_code == 200
    refreshed(client, staying["refresh_token"])


def eventpipe_env(settings: Settings, state_dir: Path) -> dict[str, str]:
    """The environment of an `eventpipe` subprocess using this test's servers, keys and costs."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTPIPE_")}
    env.update(
        {
            "EVENTPIPE_REDIS_URL": str(settings.redis_url),
            "EVENTPIPE_DATABASE_URL": str(settings.database_url),
            "EVENTPIPE_JWT_KEYS_DIR": str(settings.jwt_keys_dir),
            "EVENTPIPE_STATE_DIR": str(state_dir),
            "EVENTPIPE_PASSWORD_TIME_COST": "1",
            "EVENTPIPE_PASSWORD_MEMORY_KIB": "8192",
        }
    )
    return env


@pytest.fixture
def second_api(auth_settings: Settings, tmp_path: Path) -> Iterator[str]:
    """`eventpipe api` as a real process on the same Redis, database and keys; its base URL."""
    port = free_port()
    log_path = tmp_path / "second-api.log"
    env = eventpipe_env(auth_settings, tmp_path / "second-api-state")
    env["EVENTPIPE_HTTP_PORT"] = str(port)
    with running_api(env, log_path) as url:
        yield url


def test_logout_is_seen_at_once_by_another_api_process(
    client: TestClient, second_api: str, email: str, user_id: uuid.UUID
) -> None:
    here, there = login(client, email), login(client, email)
    with httpx.Client(base_url=second_api, timeout=10.0) as other:
        for pair in (here, there):
            answer = other.get("/auth/me", headers=bearer(pair["access_token"]))
            assert answer.status_code == 200
            assert answer.json()["id"] == str(user_id)

        assert client.post("/auth/logout", headers=bearer(here["access_token"])).status_code == 204
        assert_unauthorized(other.get("/auth/me", headers=bearer(here["access_token"])))

        assert other.post("/auth/logout", headers=bearer(there["access_token"])).status_code == 204
        assert_unauthorized(me(client, there["access_token"]))


# --- the denylist in Redis: TTL bound, restart, last second ------------------------------------


def assert_expires_by(redis_url: str, key: str, token_exp: float) -> None:
    """The key exists, has a TTL, and is gone no later than the token's own `exp`."""
    with redis.Redis.from_url(redis_url) as client:
        # Taken before the request: Redis reads its clock later, so `asked_at + pttl` can only
        # fall short of the key's real expiry, never pass it, however slow the reply.
        asked_at = time.time()
        pttl = client.pttl(key)
    assert isinstance(pttl, int) and pttl > 0, f"{key}: PTTL {pttl}"
    # 2 ms: the key expires at exp rounded up to the millisecond, and Redis reads its clock
    # rounded down to one.
    assert asked_at + pttl / 1000 <= token_exp + 0.002


def test_denylist_entry_lives_no_longer_than_the_token(
    client: TestClient, auth_settings: Settings, email: str, user_id: uuid.UUID
) -> None:
    token = login(client, email)["access_token"]
    assert client.post("/auth/logout", headers=bearer(token)).status_code == 204
    claims = unverified(token)
    assert claims["exp"] - time.time() > 0.9 * auth_settings.access_token_ttl_s
    assert_expires_by(
        str(auth_settings.redis_url), revoked_key(str(user_id), claims["jti"]), claims["exp"]
    )


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def test_revocation_survives_a_redis_restart(
    auth_settings: Settings, tmp_path: Path, email: str, user_id: uuid.UUID
) -> None:
    state_dir = tmp_path / "own-redis"
    url, server = start_redis(state_dir)
    try:
        own = auth_settings.model_copy(update={"redis_url": RedisDsn(url)})
        with TestClient(create_app(own), raise_server_exceptions=False) as client:
            revoked, kept = login(client, email), login(client, email)
            assert (
                client.post("/auth/logout", headers=bearer(revoked["access_token"])).status_code
                == 204
            )
            claims = unverified(revoked["access_token"])
            key = revoked_key(str(user_id), claims["jti"])

            # SIGKILL: what the AOF holds is all that comes back.
            server.kill()
            restarted_url, server = start_redis(state_dir, port=_port_of(url))
            assert restarted_url == url

            assert_unauthorized(me(client, revoked["access_token"]))
            # Redis answers after the restart: the 401 above is the denylist, not an outage.
            assert me(client, kept["access_token"]).status_code == 200
            assert_expires_by(url, key, claims["exp"])
    finally:
        server.stop()


@dataclass
class Forger:
    """Signs tokens by hand with the test's own key file, to change one thing at a time."""

    kid: str
    key: Ed25519PrivateKey
    claims: Json

    def sign(
        self, *, drop: tuple[str, ...] = (), headers: Json | None = None, **changes: Any
    ) -> str:
        merged = {**self.claims, **changes}
        claims = {name: value for name, value in merged.items() if name not in drop}
        header = {"kid": self.kid, **(headers or {})}
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers=header)

    def sign_with(self, key: Ed25519PrivateKey, kid: str) -> str:
        return jwt.encode(self.claims, key, algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture
def forger(keys_dir: Path, auth_settings: Settings, user_id: uuid.UUID) -> Forger:
    (path,) = keys_dir.glob("*.pem")
    now = time.time()
    claims = {
        "iss": auth_settings.jwt_issuer,
        "aud": auth_settings.jwt_audience,
        "sub": str(user_id),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "sid": str(uuid.uuid4()),
    }
    return Forger(kid=path.stem, key=load_private_key(path), claims=claims)


def _early_in_a_second() -> float:
    """The time, once it is in the first half of a second (waits at most half a second)."""
    deadline = time.monotonic() + 1.0
    while (now := time.time()) % 1 > 0.5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return now


def test_logout_revokes_a_token_in_its_last_second(client: TestClient, forger: Forger) -> None:
    # An integral `exp` (PyJWT compares whole seconds) 0.5 to 1 s away: the token is still
    # accepted for half a second at least, and must be refused once logged out.
    now = _early_in_a_second()
    token = forger.sign(iat=now - 60, nbf=now - 60, exp=math.floor(now) + 1)
    assert client.post("/auth/logout", headers=bearer(token)).status_code == 204
    assert_unauthorized(me(client, token))


# --- forged and broken access tokens: 401 with the JSON error, never 500 ------------------------


def test_a_correctly_forged_token_is_accepted(client: TestClient, forger: Forger) -> None:
    """The control for the refusals below: the forger's tokens are right unless changed."""
    answer = me(client, forger.sign())
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == forger.claims["sub"]


def _tampered_payload(forger: Forger) -> str:
    header, _, signature = forger.sign().split(".")
    return f"{header}.{segment({**forger.claims, 'sub': str(uuid.uuid4())})}.{signature}"


def _tampered_signature(forger: Forger) -> str:
    header, payload, signature = forger.sign().split(".")
    flipped = "A" if signature[10] != "A" else "B"
    return f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"


def _alg_none(forger: Forger) -> str:
    header = segment({"alg": "none", "typ": "JWT", "kid": forger.kid})
    return f"{header}.{segment(forger.claims)}."


def _hmac_token(forger: Forger, secret: bytes) -> str:
    signing_input = (
        f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': forger.kid})}.{segment(forger.claims)}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def _embedded_jwk(forger: Forger) -> str:
    attacker = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(attacker.public_key()))
    return jwt.encode(
        forger.claims, attacker, algorithm="EdDSA", headers={"kid": forger.kid, "jwk": jwk}
    )


def _no_kid(forger: Forger) -> str:
    header, payload, signature = forger.sign().split(".")
    return f"{segment({'alg': 'EdDSA', 'typ': 'JWT'})}.{payload}.{signature}"


FORGERIES: dict[str, Callable[[Forger], str]] = {
    "expired": lambda f: f.sign(iat=time.time() - 400, nbf=time.time() - 400, exp=time.time() - 60),
    "not valid yet": lambda f: f.sign(nbf=time.time() + 300),
    "wrong audience": lambda f: f.sign(aud="another-api"),
    "wrong issuer": lambda f: f.sign(iss="someone-else"),
    "no exp": lambda f: f.sign(drop=("exp",)),
    "no jti": lambda f: f.sign(drop=("jti",)),
    "no sid": lambda f: f.sign(drop=("sid",)),
    "tampered payload": _tampered_payload,
    "tampered signature": _tampered_signature,
    "alg none": _alg_none,
    "HS256 keyed with the public PEM": lambda f: _hmac_token(f, public_pem(f.key)),
    "unknown kid": lambda f: f.sign_with(Ed25519PrivateKey.generate(), "20990101T000000Z"),
    "known kid, other key": lambda f: f.sign_with(Ed25519PrivateKey.generate(), f.kid),
    "other key in a jwk header": _embedded_jwk,
    "no kid": _no_kid,
    "not a JWT": lambda _: "not.a.jwt",
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_untrustworthy_token_is_refused(client: TestClient, forger: Forger, forgery: str) -> None:
    assert_unauthorized(me(client, FORGERIES[forgery](forger)))


def test_missing_bearer_token_is_refused(client: TestClient) -> None:
    assert_unauthorized(client.get("/auth/me"))
    assert_unauthorized(client.get("/auth/me", headers={"Authorization": "Basic dXNlcjpwYXNz"}))


# --- refresh tokens ---------------------------------------------------------------------------


def test_refresh_rotates_and_reuse_revokes_the_whole_family(
    client: TestClient, email: str, user_id: uuid.UUID
) -> None:
    first = login(client, email)
    second = refreshed(client, first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert me(client, second["access_token"]).json()["id"] == str(user_id)
    assert unverified(second["access_token"])["sid"] == unverified(first["access_token"])["sid"]
    third = refreshed(client, second["refresh_token"])

    # The first token, already spent, comes back: it leaked.
    assert_unauthorized(refresh(client, first["refresh_token"]))
    # The newest token of that sign-in is refused too ...
    assert_unauthorized(refresh(client, third["refresh_token"]))
    # ... while another sign-in of the same user keeps working.
    other = login(client, email)
    refreshed(client, other["refresh_token"])
    assert_unauthorized(refresh(client, "an-unknown-refresh-token"))


def test_logout_all_rejects_every_older_token_and_a_new_login_works(
    client: TestClient, email: str, user_id: uuid.UUID
) -> None:
    phone, laptop = login(client, email), login(client, email)
    rotated = refreshed(client, phone["refresh_token"])

    assert (
        client.post("/auth/logout-all", headers=bearer(laptop["access_token"])).status_code == 204
    )

    for pair in (phone, laptop, rotated):
        assert_unauthorized(me(client, pair["access_token"]))
    for pair in (laptop, rotated):
        assert_unauthorized(refresh(client, pair["refresh_token"]))
    fresh = login(client, email)
    assert me(client, fresh["access_token"]).json()["id"] == str(user_id)
    renewed = refreshed(client, fresh["refresh_token"])
    assert me(client, renewed["access_token"]).status_code == 200


# --- login failures and throttling ------------------------------------------------------------


@pytest.mark.usefixtures("user_id")
def test_unknown_email_and_wrong_password_get_the_same_answer(
    client: TestClient, email: str, unique: str
) -> None:
    unknown = client.post(
        "/auth/login", json={"email": f"nobody-{unique}@example.com", "password": PASSWORD}
    )
    wrong = client.post("/auth/login", json={"email": email, "password": PASSWORD + "!"})
    assert_unauthorized(unknown)
    assert_unauthorized(wrong)
    assert unknown.json() == wrong.json()
    assert unknown.headers.get("www-authenticate") == wrong.headers.get("www-authenticate")


def assert_throttled(response: httpx.Response, window_s: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_attempts"
    assert 1 <= int(response.headers["retry-after"]) <= window_s


@pytest.mark.usefixtures("user_id")
def test_failed_logins_are_throttled_per_account(auth_settings: Settings, email: str) -> None:
    settings = auth_settings.model_copy(
        update={"login_failures_per_account": 3, "login_failure_window_s": 600}
    )
    wrong = {"email": email, "password": "not the password"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for _ in range(3):
            assert_unauthorized(client.post("/auth/login", json=wrong))
        assert_throttled(client.post("/auth/login", json=wrong), 600)
        # While the window lasts even the right password is not tried.
        right = {"email": email, "password": PASSWORD}
        assert_throttled(client.post("/auth/login", json=right), 600)


@pytest.fixture
def client_addresses(stack_urls: StackUrls, unique: str) -> Iterator[tuple[str, str]]:
    """Two client addresses of this test's own, so their per-address counters start at zero."""
    addresses = (f"198.51.100.7-{unique}", f"203.0.113.9-{unique}")
    yield addresses
    with redis.Redis.from_url(stack_urls.redis_url) as client:
        client.delete(*(f"auth:fail:address:{address}" for address in addresses))


@pytest.mark.usefixtures("user_id")
def test_failed_logins_are_throttled_per_client_address(
    auth_settings: Settings, email: str, unique: str, client_addresses: tuple[str, str]
) -> None:
    settings = auth_settings.model_copy(
        update={"login_failures_per_address": 3, "login_failure_window_s": 600}
    )
    guesser, owner = client_addresses

    def api(address: str) -> TestClient:
        return TestClient(create_app(settings), raise_server_exceptions=False, client=(address, 1))

    with api(guesser) as client:
        for attempt in range(3):
            guess = {"email": f"guess-{attempt}-{unique}@example.com", "password": PASSWORD}
            assert_unauthorized(client.post("/auth/login", json=guess))
        right = {"email": email, "password": PASSWORD}
        assert_throttled(client.post("/auth/login", json=right), 600)
    # The account itself is not locked: from another address it signs in.
    with api(owner) as elsewhere:
        assert login(elsewhere, email)["access_token"]


# --- passwords, sign-up, the command line -----------------------------------------------------


def stored_hash(database_url: str, email: str) -> str:
    with psycopg.connect(database_url) as connection:
        row = connection.execute(
            "SELECT password_hash FROM users WHERE email = %s", (email,)
        ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.usefixtures("user_id")
def test_login_rehashes_the_password_when_the_argon2_cost_changes(
    auth_settings: Settings, database_url: str, email: str
) -> None:
    original = stored_hash(database_url, email)
    assert "$m=8192,t=1,p=1$" in original
    with TestClient(create_app(auth_settings)) as client:
        login(client, email)
    assert stored_hash(database_url, email) == original  # same cost: left alone

    costlier = auth_settings.model_copy(update={"password_time_cost": 2})
    with TestClient(create_app(costlier)) as client:
        login(client, email)
        rehashed = stored_hash(database_url, email)
        assert rehashed != original
        assert rehashed.startswith("$argon2id$")
        assert "$m=8192,t=2,p=1$" in rehashed
        login(client, email)  # the new hash verifies the same password
    assert stored_hash(database_url, email) == rehashed


def test_signup_is_off_by_default(client: TestClient, auth_settings: Settings, email: str) -> None:
    assert auth_settings.allow_signup is False
    answer = client.post("/auth/signup", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "signup_disabled"
    assert_unauthorized(client.post("/auth/login", json={"email": email, "password": PASSWORD}))


def test_signup_when_allowed(auth_settings: Settings, email: str) -> None:
    settings = auth_settings.model_copy(update={"allow_signup": True})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        answer = client.post("/auth/signup", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 201, answer.text
        created = answer.json()
        assert created["email"] == email
        assert me(client, login(client, email)["access_token"]).json()["id"] == created["id"]

        again = client.post("/auth/signup", json={"email": email.upper(), "password": PASSWORD})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "email_taken"
        weak = client.post("/auth/signup", json={"email": f"x{email}", "password": "short"})
        assert weak.status_code == 400
        assert weak.json()["error"]["code"] == "weak_password"


def _user_create(
    settings: Settings, email: str, state_dir: Path
) -> subprocess.CompletedProcess[str]:
    env = eventpipe_env(settings, state_dir)
    return subprocess.run(
        [sys.executable, "-m", "eventpipe", "user", "create", "--email", email],
        input=f"{PASSWORD}\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_user_create_command(
    auth_settings: Settings, client: TestClient, email: str, tmp_path: Path
) -> None:
    created = _user_create(auth_settings, email, tmp_path / "cli-state")
    assert created.returncode == 0, created.stderr
    assert PASSWORD not in created.stdout + created.stderr
    answer = me(client, login(client, email)["access_token"])
    assert answer.json()["email"] == email
    assert answer.json()["id"] in created.stdout

    duplicate = _user_create(auth_settings, email, tmp_path / "cli-state")
    assert duplicate.returncode == 1
    lines = duplicate.stderr.splitlines()
    assert len(lines) == 1, duplicate.stderr
    assert lines[0].startswith("eventpipe: ") and email in lines[0]


# --- signing keys: JWKS and rotation ----------------------------------------------------------


def test_jwks_publishes_the_signing_key(
    client: TestClient, auth_settings: Settings, forger: Forger, email: str
) -> None:
    token = login(client, email)["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == forger.kid
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    (published,) = [key for key in keys if key["kid"] == forger.kid]
    assert all("d" not in key for key in keys), "a private key part is published"
    assert published["kty"] == "OKP" and published["crv"] == "Ed25519"
    assert published["alg"] == "EdDSA" and published["use"] == "sig"
    raw = forger.key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert published["x"] == b64url(raw)
    # A third party verifies the api's token with the published key alone.
    claims = jwt.decode(
        token,
        jwt.PyJWK(published).key,
        algorithms=["EdDSA"],
        audience=auth_settings.jwt_audience,
        issuer=auth_settings.jwt_issuer,
    )
    assert claims["jti"] == unverified(token)["jti"]


def _kids(client: TestClient) -> set[str]:
    return {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]}


@pytest.mark.usefixtures("user_id")
def test_key_rotation(auth_settings: Settings, tmp_path: Path, email: str) -> None:
    keys = tmp_path / "rotating-keys"
    keys.mkdir()
    old_kid, new_kid = "20250101T000000Z", "20260101T000000Z"
    old_path = key_file_named(keys, old_kid, tmp_path / "made")
    settings = auth_settings.model_copy(update={"jwt_keys_dir": keys})

    def api() -> TestClient:
        return TestClient(create_app(settings), raise_server_exceptions=False)

    with api() as client:
        old_token = login(client, email)["access_token"]
    assert jwt.get_unverified_header(old_token)["kid"] == old_kid

    key_file_named(keys, new_kid, tmp_path / "made")  # a greater name: it signs from now on
    with api() as client:
        new_token = login(client, email)["access_token"]
        assert jwt.get_unverified_header(new_token)["kid"] == new_kid
        assert me(client, old_token).status_code == 200
        assert _kids(client) == {old_kid, new_kid}

    # Retire the old key: only its public half stays, to verify what it signed.
    (keys / f"{old_kid}.pub.pem").write_bytes(public_pem(load_private_key(old_path)))
    old_path.unlink()
    with api() as client:
        assert me(client, old_token).status_code == 200
        assert me(client, new_token).status_code == 200
        assert jwt.get_unverified_header(login(client, email)["access_token"])["kid"] == new_kid
        assert _kids(client) == {old_kid, new_kid}

    (keys / f"{old_kid}.pub.pem").unlink()
    with api() as client:
        assert_unauthorized(me(client, old_token))
        assert me(client, new_token).status_code == 200
        assert _kids(client) == {new_kid}
