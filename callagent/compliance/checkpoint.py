"""Signed checkpoints of the audit chain's head, as pure functions (no I/O, no clock).

A hash chain shows edits, insertions, deletions and reordering, but not that
its newest rows were cut off: a shorter chain is still a valid chain. So the
head ``(seq, hash)`` is checkpointed outside the audit table, with the time it
was signed, under HMAC-SHA256 with a key that only the service holds
(``CALLAGENT_AUDIT_CHECKPOINT_KEY``). Whoever can rewrite the database but not
read that key cannot forge a checkpoint; a log that no longer contains a
checkpointed ``(seq, hash)`` has been truncated or rewritten.

The signed text is ``DOMAIN`` followed by the canonical JSON of ``v, seq, hash,
at (ISO 8601 UTC, microseconds), key_id``. ``key_id`` names the key (an HMAC of
a fixed label, revealing nothing about it), so a checkpoint signed with
another key is told apart from a forged one. One JSON line per checkpoint
(``to_json_line`` / ``from_json_line``) is the file format.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "DOMAIN",
    "MIN_KEY_CHARS",
    "VERSION",
    "Checkpoint",
    "CheckpointFormatError",
    "from_json_line",
    "key_id",
    "sign",
    "signature_problem",
    "to_json_line",
]

VERSION = 1
DOMAIN = b"callagent.audit.checkpoint\n"
MIN_KEY_CHARS = 32
_KEY_ID_LABEL = b"callagent.audit.checkpoint.key-id"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"v", "seq", "hash", "at", "key_id", "sig"}


class CheckpointFormatError(ValueError):
    """A checkpoint line is not a well-formed checkpoint (before any signature check)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The audit chain held ``seq`` events ending in ``hash`` when signed at ``at``."""

    seq: int
    hash: str
    at: datetime
    key_id: str
    signature: str  # hex HMAC-SHA256 of ``_message(...)``

    @property
    def at_text(self) -> str:
        return _iso_utc(self.at)


def _iso_utc(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: checkpoint times must be timezone-aware")
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def key_id(key: bytes) -> str:
    """A short public name for ``key`` (16 hex digits)."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def _message(seq: int, head_hash: str, at: datetime, kid: str) -> bytes:
    body = {"v": VERSION, "seq": seq, "hash": head_hash, "at": _iso_utc(at), "key_id": kid}
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _mac(key: bytes, seq: int, head_hash: str, at: datetime, kid: str) -> str:
    return hmac.new(key, _message(seq, head_hash, at, kid), hashlib.sha256).hexdigest()


def sign(key: bytes, seq: int, head_hash: str, at: datetime) -> Checkpoint:
    """Sign the head ``(seq, head_hash)`` of the chain as of ``at``."""
    if not key:
        raise ValueError("checkpoint key is empty")
    if seq < 1 or not _HEX64.fullmatch(head_hash):
        raise ValueError(f"not a chain head: seq {seq}, hash {head_hash!r}")
    kid = key_id(key)
    return Checkpoint(seq, head_hash, at, kid, _mac(key, seq, head_hash, at, kid))


def signature_problem(key: bytes, cp: Checkpoint) -> str | None:
    """None when ``cp`` was signed with ``key`` and not altered since; else what is wrong."""
    ours = key_id(key)
    if not hmac.compare_digest(cp.key_id.encode("utf-8"), ours.encode("utf-8")):
        return (
            f"signed with another key (key id {cp.key_id!r}, ours is {ours!r}): a forgery, "
            "or CALLAGENT_AUDIT_CHECKPOINT_KEY is not the key the service signs with"
        )
    try:
        expected = _mac(key, cp.seq, cp.hash, cp.at, cp.key_id)
    except ValueError as exc:
        return f"unreadable ({exc})"
    if not hmac.compare_digest(cp.signature.encode("utf-8"), expected.encode("utf-8")):
        return "signature does not match its content (forged or altered)"
    return None


def to_json_line(cp: Checkpoint) -> str:
    """One line of the checkpoint file (no trailing newline)."""
    data = {
        "v": VERSION,
        "seq": cp.seq,
        "hash": cp.hash,
        "at": cp.at_text,
        "key_id": cp.key_id,
        "sig": cp.signature,
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def from_json_line(line: str) -> Checkpoint:
    """Parse one checkpoint line; ``CheckpointFormatError`` names what is malformed."""
    try:
        data: Any = json.loads(line)
    except ValueError as exc:
        raise CheckpointFormatError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != _FIELDS:
        raise CheckpointFormatError(f"expected an object with keys {sorted(_FIELDS)}")
    if data["v"] != VERSION:
        raise CheckpointFormatError(f"unknown version {data['v']!r}")
    seq = data["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise CheckpointFormatError(f"seq: expected a positive integer, got {seq!r}")
    for name in ("hash", "sig"):
        if not isinstance(data[name], str) or not _HEX64.fullmatch(data[name]):
            raise CheckpointFormatError(f"{name}: expected 64 lowercase hex digits")
    if not isinstance(data["key_id"], str):
        raise CheckpointFormatError("key_id: expected a string")
    try:
        at = datetime.fromisoformat(data["at"]) if isinstance(data["at"], str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise CheckpointFormatError(f"at: expected an ISO 8601 time with offset, got {data['at']!r}")
    return Checkpoint(seq, data["hash"], at, data["key_id"], data["sig"])
