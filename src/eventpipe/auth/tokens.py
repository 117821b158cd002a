"""Access tokens: short-lived EdDSA JWTs; the algorithm is pinned and every claim required."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from cachetools import LRUCache

from eventpipe.auth.keys import ALGORITHM, Keyring
from eventpipe.core.config import Settings

REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid"]


class InvalidToken(Exception):
    """The token cannot be trusted; the message says why, without echoing the token."""


@dataclass(frozen=True)
class AccessClaims:
    sub: str
    jti: str
    sid: str
    iat: float
    exp: float


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: AccessClaims


def issue_access_token(
    keyring: Keyring, settings: Settings, *, user_id: str, session_id: str
) -> IssuedToken:
    """Sign a new access token for `user_id` in the refresh family `session_id`."""
    # Millisecond `iat` (NumericDate allows fractions) so a logout-all cut-off taken in the same
    # second as a later login still tells the two apart.
    now = round(time.time(), 3)
    claims = AccessClaims(
        sub=user_id,
        jti=uuid.uuid4().hex,
        sid=session_id,
        iat=now,
        exp=now + settings.access_token_ttl_s,
    )
    payload = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": claims.sub,
        "iat": claims.iat,
        "nbf": claims.iat,
        "exp": claims.exp,
        "jti": claims.jti,
        "sid": claims.sid,
    }
    token = jwt.encode(
        payload, keyring.signing_key, algorithm=ALGORITHM, headers={"kid": keyring.signing_kid}
    )
    return IssuedToken(token=token, claims=claims)


def _public_key_for(keyring: Keyring, token: str) -> object:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as error:
        raise InvalidToken("malformed token") from error
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keyring.public_keys:
        raise InvalidToken("unknown signing key")
    return keyring.public_keys[kid]


def verify_access_token(keyring: Keyring, settings: Settings, token: str) -> AccessClaims:
    """Check signature (EdDSA only: `none` and HS256-with-the-public-key are refused), issuer,
    audience and times; raise InvalidToken otherwise."""
    key = _public_key_for(keyring, token)
    try:
        payload = jwt.decode(
            token,
            key,  # type: ignore[arg-type]
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidToken("token expired") from error
    except jwt.ImmatureSignatureError as error:
        raise InvalidToken("token not valid yet") from error
    except jwt.InvalidTokenError as error:
        raise InvalidToken(f"invalid token: {error}") from error
    return _claims_from(payload)


def _claims_from(payload: dict[str, object]) -> AccessClaims:
    sub, jti, sid = payload["sub"], payload["jti"], payload["sid"]
    iat, exp = payload["iat"], payload["exp"]
    if not (isinstance(sub, str) and isinstance(jti, str) and isinstance(sid, str)):
        raise InvalidToken("invalid token: sub, jti and sid must be strings")
    if not (isinstance(iat, int | float) and isinstance(exp, int | float)):
        raise InvalidToken("invalid token: iat and exp must be numbers")
    return AccessClaims(sub=sub, jti=jti, sid=sid, iat=float(iat), exp=float(exp))


class TokenVerifier:
    """`verify_access_token` with the answers for recently seen tokens kept in memory.

    An Ed25519 verification costs ~0.1-0.2 ms here; a dashboard sends the same token many times.
    Only exact token strings that verified are cached, each until its own `exp`; revocation is
    not cached (the Redis check runs on every request).
    """

    def __init__(self, keyring: Keyring, settings: Settings, maxsize: int = 10_000) -> None:
        self._keyring = keyring
        self._settings = settings
        self._cache: LRUCache[str, AccessClaims] = LRUCache(maxsize=maxsize)

    def verify(self, token: str) -> AccessClaims:
        claims = self._cache.get(token)
        if claims is not None and claims.exp > time.time():
            return claims
        claims = verify_access_token(self._keyring, self._settings, token)
        self._cache[token] = claims
        return claims
