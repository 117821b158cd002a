"""Standard Webhooks signatures (https://www.standardwebhooks.com/), as alert webhooks carry them.

How a receiver verifies an alert webhook
----------------------------------------
Every request carries three headers:

    webhook-id:        a unique message id; the same id on a retry of the same alert
    webhook-timestamp: when this attempt was signed, integer Unix seconds
    webhook-signature: "v1,<base64 signature>", possibly several separated by spaces

1. Take the secret shown when the webhook was created, drop its `whsec_` prefix and
   base64-decode the rest: that is the HMAC key.
2. Refuse the request if the timestamp is more than 5 minutes from your clock (replay guard).
3. Compute HMAC-SHA256 with that key over the exact bytes `{webhook-id}.{webhook-timestamp}.{body}`,
   using the raw request body as received (parse the JSON only afterwards), and base64-encode it.
4. Accept if it equals, compared in constant time, any `v1,` entry of `webhook-signature`.
5. Optionally remember `webhook-id` for a while and ignore a repeat: deliveries are at least once.

Any Standard Webhooks library does all this, e.g. in Python
`standardwebhooks.Webhook(secret).verify(body, headers)`; `verify` below is our own version.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300


class SignatureError(Exception):
    """The request does not carry a valid, fresh signature; the message says which check failed."""


def new_secret() -> str:
    """A new signing secret: `whsec_` and 32 random bytes, base64-encoded."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # The "==" mirrors the official library: it accepts unpadded secrets too.
        key = base64.b64decode(encoded + "==")
    except binascii.Error as exc:
        raise ValueError("webhook secret is not valid base64") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _digest(secret: str, msg_id: str, timestamp: int, body: bytes) -> bytes:
    # The body is signed as the raw bytes sent, never re-serialised: a receiver verifies the
    # bytes it received, and any difference in JSON formatting would break the signature.
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(_key(secret), signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>`."""
    signature = base64.b64encode(_digest(secret, msg_id, timestamp, body)).decode("ascii")
    return f"{SIGNATURE_VERSION},{signature}"


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt: the three Standard Webhooks headers and content type."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a request's signature and freshness; raise SignatureError if either fails."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and raw_timestamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    timestamp = _fresh_timestamp(raw_timestamp, tolerance_s, time.time() if now is None else now)
    expected = _digest(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in _v1_signatures(signatures)):
        raise SignatureError("no matching signature")


def _fresh_timestamp(raw: str, tolerance_s: int, now: float) -> int:
    try:
        timestamp = int(raw)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer") from None
    # Both directions: an old timestamp is a replay, a future one would stay valid too long.
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"webhook-timestamp is more than {tolerance_s} s from now")
    return timestamp


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded `v1` signatures of the header; other versions and malformed entries skipped."""
    found = []
    for entry in header.split(" "):
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            continue
    return found
