"""Argon2id password hashing, with rehash when the cost settings change."""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from eventpipe.core.config import Settings

MIN_LENGTH = 8
# Bounded so a megabyte "password" cannot make one login cost seconds of CPU.
MAX_LENGTH = 1024


@dataclass(frozen=True)
class Verdict:
    ok: bool
    needs_rehash: bool = False


class Passwords:
    """Hash and verify with the configured Argon2id cost."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.password_time_cost,
            memory_cost=settings.password_memory_kib,
            parallelism=1,
            type=Type.ID,
        )
        # Verified against when the email is unknown, so both failures take the same time.
        self._dummy = self._hasher.hash("not a real password")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> Verdict:
        """Check `password`; with no stored hash, spend the same time and fail."""
        try:
            self._hasher.verify(stored_hash or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verdict(ok=False)
        if stored_hash is None:
            return Verdict(ok=False)
        return Verdict(ok=True, needs_rehash=self._hasher.check_needs_rehash(stored_hash))


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"password must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password must have at most {MAX_LENGTH} characters"
    return None
