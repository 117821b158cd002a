"""Signing keys for access tokens: one key signs, every listed public key verifies (rotation).

Keys are Ed25519 PEM files named `<kid>.pem` (private) or `<kid>.pub.pem` (public only, for a
retired key whose tokens have not expired yet), or one private PEM in a setting. Development
without any configured key generates one under the state directory; production refuses to start.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from eventpipe.core.config import Settings

log = logging.getLogger(__name__)
ALGORITHM = "EdDSA"


class KeyConfigError(ValueError):
    """A key file or setting that cannot be used; the message names it."""


@dataclass
class Keyring:
    signing_kid: str
    signing_key: Ed25519PrivateKey
    public_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        keys = []
        for kid, public in sorted(self.public_keys.items()):
            jwk: dict[str, Any] = OKPAlgorithm.to_jwk(public, as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"})
        return {"keys": keys}


def _load_private(data: bytes, name: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as error:
        raise KeyConfigError(f"{name} is not a PEM private key: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyConfigError(f"{name} is not an Ed25519 key")
    return key


def _load_public(data: bytes, name: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as error:
        raise KeyConfigError(f"{name} is not a PEM public key: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise KeyConfigError(f"{name} is not an Ed25519 key")
    return key


def _read_dir(directory: Path) -> tuple[dict[str, Ed25519PrivateKey], dict[str, Ed25519PublicKey]]:
    private: dict[str, Ed25519PrivateKey] = {}
    public: dict[str, Ed25519PublicKey] = {}
    for path in sorted(directory.glob("*.pem")):
        if path.name.endswith(".pub.pem"):
            public[path.name.removesuffix(".pub.pem")] = _load_public(path.read_bytes(), str(path))
        else:
            private[path.stem] = _load_private(path.read_bytes(), str(path))
    return private, public


def generate_key_file(directory: Path) -> Path:
    """Write a new Ed25519 private key named by its creation time (newest name signs)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    kid = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"{kid}.pem"
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    return path


def load_keyring(settings: Settings) -> Keyring:
    """Every configured key; the active kid (or the greatest name) signs."""
    private: dict[str, Ed25519PrivateKey] = {}
    public: dict[str, Ed25519PublicKey] = {}
    if settings.jwt_private_key is not None:
        data = settings.jwt_private_key.get_secret_value().encode()
        private["env"] = _load_private(data, "EVENTPIPE_JWT_PRIVATE_KEY")
    directory = settings.jwt_keys_dir
    if directory is None and not private:
        directory = settings.state_dir / "keys"
        if not any(directory.glob("*.pem")):
            log.warning("no signing key configured; generated %s", generate_key_file(directory))
    if directory is not None:
        found_private, found_public = _read_dir(directory)
        private.update(found_private)
        public.update(found_public)
    if not private:
        raise KeyConfigError(f"no private signing key (*.pem) in {directory}")
    kid = settings.jwt_active_kid or max(private)
    if kid not in private:
        raise KeyConfigError(f"EVENTPIPE_JWT_ACTIVE_KID={kid} names no private key")
    public.update({name: key.public_key() for name, key in private.items()})
    return Keyring(signing_kid=kid, signing_key=private[kid], public_keys=public)
