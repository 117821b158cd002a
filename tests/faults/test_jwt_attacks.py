"""The JWT attack list, replayed against every route that needs a bearer token, and through the
dashboard's access cookie (the same token) against its JSON api and its pages.

tests/integration/test_auth.py refuses these forgeries on `/auth/me`; a route whose dependencies
skipped `get_claims`, or read a token some other way, would pass there and fail here. The routes
are the app's own: every operation of its OpenAPI schema whose security is the bearer scheme, and
every route of the dashboard's routers. Path parameters are real ids of a tenant (project,
member, write key, alert rule), so a forgery that got through would meet a live resource.

An answer to a forged token is a 401 JSON error (code `unauthorized`, with `WWW-Authenticate:
Bearer`); a dashboard page answers a redirect to the sign-in page. Never 200, never 500. The
control: the forger's untouched token passes every one of those routes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from eventpipe.api.app import create_app
from eventpipe.auth.admin import create_user_sync
from eventpipe.core.config import Settings
from eventpipe.dashboard import jobs, manage, routes, session
from eventpipe.local.stack import StackUrls
from tests.integration.ingest_fixtures import module_api_settings
from tests.integration.test_ingest import PASSWORD

pytestmark = pytest.mark.integration

Json = dict[str, Any]
ORIGIN = "http://testserver"  # TestClient's own: a cookie-authenticated write from our pages


# --- the app, a tenant, and a forger ------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    """An owner's account and the real ids that the routes' path parameters are filled with."""

    user_id: str
    email: str
    access: str
    refresh: str
    ids: dict[str, str]

    def path(self, template: str) -> str:
        return template.format(**self.ids)


def make_tenant(client: TestClient, settings: Settings, who: str) -> Tenant:
    email = f"{who}-{uuid.uuid4().hex[:8]}@example.com"
    user_id = str(create_user_sync(settings, email=email, password=PASSWORD))
    tokens = client.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    project = client.post("/api/projects", json={"name": who}, headers=auth).json()["id"]
    base = f"/api/projects/{project}"
    key = client.post(f"{base}/write-keys", json={"name": "k"}, headers=auth).json()["id"]
    rule = {"name": "r", "comparison": "above", "threshold": 1, "window_minutes": 5,
            "webhook_url": "https://hooks.example.com/x"}  # fmt: skip
    rule_id = client.post(f"{base}/alerts", json=rule, headers=auth).json()["id"]
    ids = {"project_id": project, "user_id": user_id, "key_id": key, "rule_id": rule_id,
           "message_id": "m-1", "job_id": str(uuid.uuid4())}  # fmt: skip
    return Tenant(user_id, email, tokens["access_token"], tokens["refresh_token"], ids)


@pytest.fixture(scope="module")
def jwt_settings(
    stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """A database of this module's own and an api signing key of its own."""
    with module_api_settings(stack_urls, tmp_path_factory, "jwt") as settings:
        yield settings


@pytest.fixture(scope="module")
def client(jwt_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(jwt_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def victim(client: TestClient, jwt_settings: Settings) -> Tenant:
    return make_tenant(client, jwt_settings, "victim")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class Forger:
    """Signs tokens with the api's own key file, changing one thing at a time."""

    kid: str
    key: Ed25519PrivateKey
    key_path: Path
    claims: Json = field(default_factory=dict)

    def sign(
        self, *, drop: tuple[str, ...] = (), headers: Json | None = None, **changes: Any
    ) -> str:
        claims = {k: v for k, v in {**self.claims, **changes}.items() if k not in drop}
        return jwt.encode(
            claims, self.key, algorithm="EdDSA", headers={"kid": self.kid, **(headers or {})}
        )

    def unsigned(self, header: Json, claims: Json | None = None, signature: bytes = b"") -> str:
        return f"{segment(header)}.{segment(claims or self.claims)}.{b64url(signature)}"

    def hmac(self, secret: bytes) -> str:
        """HS256 over our claims and kid: the algorithm confusion of a verifier that takes the
        algorithm from the token and the public key as the HMAC secret."""
        signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': self.kid})}"
        signing_input += f".{segment(self.claims)}"
        digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(digest)}"

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_raw(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


@pytest.fixture
def forger(jwt_settings: Settings, victim: Tenant) -> Forger:
    assert jwt_settings.jwt_keys_dir is not None
    (path,) = jwt_settings.jwt_keys_dir.glob("*.pem")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    now = time.time()
    claims = {
        "iss": jwt_settings.jwt_issuer, "aud": jwt_settings.jwt_audience, "sub": victim.user_id,
        "iat": now, "nbf": now, "exp": now + 300, "jti": uuid.uuid4().hex, "sid": str(uuid.uuid4()),
    }  # fmt: skip
    return Forger(path.stem, key, path, claims)


# --- the routes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # a template: {project_id}, {user_id}, ...
    body: Json | None = None


BODIES: dict[str, Json] = {
    "POST /api/projects": {"name": "x"},
    "PATCH /api/projects/{project_id}": {"name": "y"},
    "POST /api/projects/{project_id}/members": {"email": "nobody@example.com", "role": "viewer"},
    "PATCH /api/projects/{project_id}/members/{user_id}": {"role": "owner"},
    "POST /api/projects/{project_id}/write-keys": {"name": "x"},
    "PATCH /api/projects/{project_id}/write-keys/{key_id}": {"name": "y"},
    "POST /api/projects/{project_id}/exports": {"format": "csv"},
    "POST /api/projects/{project_id}/alerts": {
        "name": "r", "comparison": "above", "threshold": 1, "window_minutes": 5,
        "webhook_url": "https://hooks.example.com/y",
    },
    "PATCH /api/projects/{project_id}/alerts/{rule_id}": {"threshold": 2},
}  # fmt: skip


def bearer_operations() -> list[Operation]:
    """Every operation of the app's schema that asks for the bearer scheme."""
    schema = create_app(Settings()).openapi()
    found = [
        Operation(method.upper(), path, BODIES.get(f"{method.upper()} {path}"))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if any("HTTPBearer" in scheme for scheme in operation.get("security", []))
    ]
    # What signs out or deletes goes last (the control runs them for real).
    return sorted(found, key=lambda op: ("logout" in op.path, op.method == "DELETE"))


BEARER_OPERATIONS = bearer_operations()
# The live stream never ends once it is allowed: its refusals are checked, not its control.
STREAMING = {"/api/projects/{project_id}/live"}


def dashboard_operations() -> list[Operation]:
    """Every route of the dashboard's routers that a signed-in user's cookie opens."""
    public = {"/signin", "/setup", "/session/refresh", "/session/signout"}
    found = [
        Operation(method, path.replace("{message_id:path}", "{message_id}"))
        for router in (session.router, manage.router, routes.router, jobs.router)
        for route in router.routes
        if (path := str(getattr(route, "path", ""))) not in public
        for method in sorted(getattr(route, "methods", set()))
    ]
    return sorted(found, key=lambda op: op.method == "POST")


DASHBOARD_OPERATIONS = dashboard_operations()


def test_the_route_lists_are_complete() -> None:
    assert len(BEARER_OPERATIONS) >= 30, BEARER_OPERATIONS
    paths = {op.path for op in BEARER_OPERATIONS}
    assert {"/auth/me", "/auth/logout", "/api/projects/{project_id}/live", "/api/jobs/{job_id}",
            "/api/projects/{project_id}/alerts/{rule_id}/deliveries"} <= paths  # fmt: skip
    assert any(op.method == "POST" for op in DASHBOARD_OPERATIONS)
    assert {"/", "/projects/{project_id}", "/projects/{project_id}/events/{message_id}"} <= {
        op.path for op in DASHBOARD_OPERATIONS
    }


def call(
    client: TestClient, tenant: Tenant, op: Operation, *, token: str | None = None,
    cookie: str | None = None,
) -> httpx.Response:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if cookie is not None:
        client.cookies.set("ep_access", cookie)
        headers["Origin"] = ORIGIN  # past the same-origin rule, to the token's check
    try:
        url = tenant.path(op.path)
        if op.method == "POST" and not url.startswith("/api/") and not url.startswith("/auth/"):
            answer: httpx.Response = client.post(url, data={"name": "x"}, headers=headers,
                                                 follow_redirects=False)  # fmt: skip
        else:
            answer = client.request(op.method, url, json=op.body, headers=headers,
                                    follow_redirects=False)  # fmt: skip
    finally:
        client.cookies.clear()
    return answer


# --- the attacks --------------------------------------------------------------------------------

Attack = Callable[[Forger, Tenant], str]


def _tampered(forger: Forger, _: Tenant) -> str:
    header, _payload, signature = forger.sign().split(".")
    return f"{header}.{segment({**forger.claims, 'sub': str(uuid.uuid4())})}.{signature}"


def _other_key(forger: Forger, _: Tenant) -> str:
    return jwt.encode(forger.claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                      headers={"kid": forger.kid})  # fmt: skip


def _signature(forger: Forger) -> bytes:
    """The signature of a genuine token, to carry over onto another header."""
    return base64.urlsafe_b64decode(forger.sign().split(".")[2] + "==")


def _embedded_jwk(forger: Forger, _: Tenant) -> str:
    other = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(other.public_key()))
    return jwt.encode(forger.claims, other, algorithm="EdDSA",
                      headers={"kid": forger.kid, "jwk": jwk})  # fmt: skip


ATTACKS: dict[str, Attack] = {
    "alg none": lambda f, _: f.unsigned({"alg": "none", "typ": "JWT", "kid": f.kid}),
    "alg NONE, signature kept": lambda f, _: f.unsigned({"alg": "NONE", "kid": f.kid},
                                                        signature=_signature(f)),
    "tampered claims, signature kept": _tampered,
    "signature stripped": lambda f, _: f.sign().rsplit(".", 1)[0] + ".",
    "HS256 keyed with the public key's PEM": lambda f, _: f.hmac(f.public_pem()),
    "HS256 keyed with the raw public key": lambda f, _: f.hmac(f.public_raw()),
    "RS256 with garbage": lambda f, _: f.unsigned({"alg": "RS256", "kid": f.kid}, signature=b"x"),
    "another key under our kid": _other_key,
    "unknown kid": lambda f, _: f.sign(headers={"kid": "20990101T000000000000Z"}),
    "kid ../../etc/passwd": lambda f, _: f.sign(headers={"kid": "../../etc/passwd"}),
    "kid ../keys/<our kid>": lambda f, _: f.sign(headers={"kid": f"../keys/{f.kid}"}),
    "kid of the key file's path": lambda f, _: f.sign(headers={"kid": str(f.key_path)}),
    "kid with a NUL": lambda f, _: f.sign(headers={"kid": f"{f.kid}\x00"}),
    "kid not a string": lambda f, _: f.unsigned({"alg": "EdDSA", "kid": [f.kid]},
                                                signature=_signature(f)),
    "no kid": lambda f, _: f.unsigned({"alg": "EdDSA"}, signature=_signature(f)),
    "a jwk header with another key": _embedded_jwk,
    "expired": lambda f, _: f.sign(iat=time.time() - 600, nbf=time.time() - 600,
                                   exp=time.time() - 60),
    "not valid yet (nbf)": lambda f, _: f.sign(nbf=time.time() + 600),
    "issued in the future (iat)": lambda f, _: f.sign(iat=time.time() + 600),
    "wrong audience": lambda f, _: f.sign(aud="another-api"),
    "wrong issuer": lambda f, _: f.sign(iss="https://evil.example"),
    "no exp": lambda f, _: f.sign(drop=("exp",)),
    "no sid": lambda f, _: f.sign(drop=("sid",)),
    "exp as a string": lambda f, _: f.sign(exp=str(int(time.time()) + 300)),
    "the refresh token as access token": lambda _, t: t.refresh,
    # Revoked (POST /auth/logout) by `forged` before it is used.
    "a revoked token (signed out)": lambda f, _: f.sign(jti=uuid.uuid4().hex),
    "64 KB of garbage": lambda _, __: "A" * 65536,
}  # fmt: skip
REVOKE = {"a revoked token (signed out)"}


def forged(attack: str, forger: Forger, tenant: Tenant, client: TestClient) -> str:
    token = ATTACKS[attack](forger, tenant)
    if attack in REVOKE:
        signed_out = client.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
        assert signed_out.status_code == 204, signed_out.text
    return token


def unauthorized_problem(answer: httpx.Response, *, bearer: bool) -> str | None:
    if answer.status_code != 401:
        return f"status {answer.status_code}: {answer.text[:160]}"
    if answer.headers.get("content-type") != "application/json":
        return f"content type {answer.headers.get('content-type')}"
    if answer.json().get("error", {}).get("code") != "unauthorized":
        return f"body {answer.text[:160]}"
    if bearer and not answer.headers.get("www-authenticate", "").startswith("Bearer"):
        return "no WWW-Authenticate: Bearer"
    return None


@pytest.mark.parametrize("attack", ATTACKS.keys())
def test_a_forged_token_is_refused_by_every_route(
    client: TestClient, forger: Forger, victim: Tenant, attack: str
) -> None:
    token = forged(attack, forger, victim, client)
    problems = []
    for op in BEARER_OPERATIONS:
        problem = unauthorized_problem(call(client, victim, op, token=token), bearer=True)
        if problem is not None:
            problems.append(f"{op.method} {op.path}: {problem}")
    # The dashboard's cookie carries the same token: its JSON api refuses it the same way.
    for op in (Operation("GET", "/auth/me"), Operation("POST", "/api/projects", {"name": "x"})):
        problem = unauthorized_problem(call(client, victim, op, cookie=token), bearer=True)
        if problem is not None:
            problems.append(f"cookie {op.method} {op.path}: {problem}")
    assert not problems, "\n".join(problems)


# One of each kind: the cookie goes through the same verification as the bearer token above.
COOKIE_ATTACKS = [
    "alg none", "tampered claims, signature kept", "HS256 keyed with the public key's PEM",
    "kid ../../etc/passwd", "another key under our kid", "expired", "wrong audience",
    "the refresh token as access token", "a revoked token (signed out)",
]  # fmt: skip


@pytest.mark.parametrize("attack", COOKIE_ATTACKS)
def test_a_forged_cookie_opens_no_dashboard_page(
    client: TestClient, forger: Forger, victim: Tenant, attack: str
) -> None:
    """Every page (forms posted from our own origin included) sends to the sign-in page."""
    token = forged(attack, forger, victim, client)
    problems = []
    for op in DASHBOARD_OPERATIONS:
        answer = call(client, victim, op, cookie=token)
        location = answer.headers.get("location", "")
        if answer.status_code != 303 or not location.startswith("/signin"):
            problems.append(f"{op.method} {op.path}: {answer.status_code} to {location!r}")
    assert not problems, "\n".join(problems)


def test_the_forgers_own_token_passes_every_route(
    client: TestClient, forger: Forger, jwt_settings: Settings
) -> None:
    """The control of the refusals above: the forger's token, unchanged, is let in everywhere
    (a route answering 401 to everyone would pass them vacuously). A tenant of its own, since
    this really deletes and signs out."""
    owner = make_tenant(client, jwt_settings, "control")
    own = Forger(forger.kid, forger.key, forger.key_path, {**forger.claims, "sub": owner.user_id})
    refused = []
    for op in DASHBOARD_OPERATIONS:
        answer = call(client, owner, op, cookie=own.sign())
        if answer.status_code >= 500 or answer.headers.get("location", "").startswith("/signin"):
            refused.append(f"page {op.method} {op.path}: {answer.status_code}")
    for op in BEARER_OPERATIONS:
        if op.path in STREAMING:
            continue
        answer = call(client, owner, op, token=own.sign(jti=uuid.uuid4().hex))
        if answer.status_code in (401, 403) or answer.status_code >= 500:
            refused.append(f"{op.method} {op.path}: {answer.status_code} {answer.text[:120]}")
    assert not refused, "\n".join(refused)


def test_a_forged_refresh_cookie_is_refused(
    client: TestClient, victim: Tenant, forger: Forger
) -> None:
    """The dashboard's refresh route takes an opaque token: an access JWT, a guess or a token
    of another length in its place are 401s that also clear the cookies."""
    for refresh in (forger.sign(), "x" * 43, victim.access, "../../etc/passwd", "A" * 4096):
        client.cookies.set("ep_refresh", refresh, path="/session")
        answer = client.post("/session/refresh", headers={"Origin": ORIGIN})
        client.cookies.clear()
        assert answer.status_code == 401, (refresh[:20], answer.text)
        assert answer.json()["error"]["code"] == "unauthorized"
        assert "ep_access=" in answer.headers.get("set-cookie", "")
