from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from eventpipe.auth.keys import KeyConfigError, generate_key_file, load_keyring
from eventpipe.auth.passwords import Passwords, password_problem
from eventpipe.auth.tokens import InvalidToken, issue_access_token, verify_access_token
from eventpipe.core.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    generate_key_file(tmp_path / "keys")
    return Settings(jwt_keys_dir=tmp_path / "keys", password_time_cost=1, password_memory_kib=8192)


def test_issued_token_verifies_with_every_claim(settings: Settings) -> None:
    keyring = load_keyring(settings)
    issued = issue_access_token(keyring, settings, user_id="u1", session_id="s1")
    claims = verify_access_token(keyring, settings, issued.token)
    assert claims == issued.claims
    assert claims.exp - claims.iat == settings.access_token_ttl_s
    header = jwt.get_unverified_header(issued.token)
    assert header == {"alg": "EdDSA", "kid": keyring.signing_kid, "typ": "JWT"}


def test_rotation_newest_key_signs_older_still_verifies(settings: Settings) -> None:
    old_ring = load_keyring(settings)
    old_token = issue_access_token(old_ring, settings, user_id="u", session_id="s").token
    assert settings.jwt_keys_dir is not None
    (settings.jwt_keys_dir / "zzz-newer.pem").write_bytes(
        generate_key_file(settings.jwt_keys_dir.parent / "other").read_bytes()
    )
    new_ring = load_keyring(settings)
    assert new_ring.signing_kid == "zzz-newer"
    assert verify_access_token(new_ring, settings, old_token).sub == "u"
    assert {key["kid"] for key in new_ring.jwks()["keys"]} == {old_ring.signing_kid, "zzz-newer"}


def test_other_audience_is_refused(settings: Settings) -> None:
    keyring = load_keyring(settings)
    token = issue_access_token(keyring, settings, user_id="u", session_id="s").token
    other = settings.model_copy(update={"jwt_audience": "someone-else"})
    with pytest.raises(InvalidToken):
        verify_access_token(keyring, other, token)


def test_expired_token_is_refused(settings: Settings) -> None:
    keyring = load_keyring(settings)
    now = time.time()
    payload = {
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": "u", "sid": "s",
        "jti": "j", "iat": now - 100, "nbf": now - 100, "exp": now - 10,
    }  # fmt: skip
    token = jwt.encode(
        payload, keyring.signing_key, algorithm="EdDSA", headers={"kid": keyring.signing_kid}
    )
    with pytest.raises(InvalidToken, match="expired"):
        verify_access_token(keyring, settings, token)


def test_active_kid_must_exist(settings: Settings) -> None:
    with pytest.raises(KeyConfigError, match="names no private key"):
        load_keyring(settings.model_copy(update={"jwt_active_kid": "missing"}))


def test_passwords_hash_verify_and_rehash(settings: Settings) -> None:
    passwords = Passwords(settings)
    stored = passwords.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert passwords.verify(stored, "correct horse battery").ok
    assert not passwords.verify(stored, "wrong").ok
    assert not passwords.verify(None, "anything").ok
    stronger = Passwords(settings.model_copy(update={"password_time_cost": 2}))
    assert stronger.verify(stored, "correct horse battery").needs_rehash


def test_password_rules() -> None:
    assert password_problem("short") is not None
    assert password_problem("x" * 2000) is not None
    assert password_problem("long enough pass") is None
