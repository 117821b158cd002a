"""Download links that expire: signed with the api's Ed25519 token key, so every replica can
check them and no new secret has to be configured; a link works without a sign-in (a browser
download, curl) until `expires`."""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature

from eventpipe.auth.keys import Keyring


class LinkError(ValueError):
    """A link that is expired, forged or malformed; the message says which."""


def _message(export_id: uuid.UUID, expires: int) -> bytes:
    # Bound to its purpose: a link's signature can never pass for anything else the key signs.
    return f"eventpipe-export-download:{export_id}:{expires}".encode()


def signed_query(
    keyring: Keyring, export_id: uuid.UUID, *, ttl_s: int, now: float | None = None
) -> tuple[str, int]:
    """The query string of a download link for this export, and when it stops working."""
    expires = int(now if now is not None else time.time()) + ttl_s
    signature = keyring.signing_key.sign(_message(export_id, expires))
    query = urlencode({
        "expires": expires,
        "kid": keyring.signing_kid,
        "signature": base64.urlsafe_b64encode(signature).decode().rstrip("="),
    })  # fmt: skip
    return query, expires


def check_link(
    keyring: Keyring, export_id: uuid.UUID, *, expires: int, kid: str, signature: str,
    now: float | None = None,
) -> None:  # fmt: skip
    if expires < (now if now is not None else time.time()):
        raise LinkError("this download link has expired; ask the job for a new one")
    public = keyring.public_keys.get(kid)
    if public is None:
        raise LinkError("this download link was not signed by this api")
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        public.verify(raw, _message(export_id, expires))
    except (binascii.Error, ValueError, InvalidSignature) as error:
        raise LinkError("this download link was not signed by this api") from error
