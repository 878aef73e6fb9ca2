"""Password and API-token hashing.

Passwords: argon2id (memory-hard) via argon2-cffi's ``PasswordHasher``. API tokens are
random 256-bit secrets, so one SHA-256 is enough to store them (nothing to brute-force).
Token text: ``cat_<43 url-safe chars>``.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "TOKEN_PREFIX",
    "WeakPassword",
    "check_password_rules",
    "hash_password",
    "hash_token",
    "new_token",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
TOKEN_PREFIX = "cat_"
# Verified against when the username is unknown, so both paths cost one argon2 run.
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("callagent-no-such-operator")


class WeakPassword(ValueError):
    """A new password that breaks the length rule."""


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    check_password_rules(password)
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; None (unknown user) still spends one argon2 run."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
