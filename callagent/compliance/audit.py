"""The audit log's hash chain, as pure functions (no database, no clock).

Each event's hash is ``sha256(prev_hash || canonical_json(content))`` in hex,
where the content is ``seq, at (ISO 8601 UTC, microseconds), actor, action,
call_id, details (sorted keys)``. The first event's ``prev_hash`` is
``GENESIS``. Sequence numbers start at 1 and have no gaps, so
``verify_chain`` names the first broken seq for an edited, inserted, deleted
or reordered row. Removing rows from the *end* of the log leaves a valid
shorter chain: pass the exported head (``expected_head``) to catch that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

__all__ = [
    "GENESIS",
    "AuditRow",
    "VerifyResult",
    "canonical_content",
    "canonical_details",
    "event_hash",
    "verify_chain",
]

GENESIS = "0" * 64


class AuditRow(Protocol):
    """What ``verify_chain`` reads from a row (``store.models.AuditEvent`` fits)."""

    @property
    def seq(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def call_id(self) -> str | None: ...
    @property
    def details(self) -> str | Mapping[str, Any]: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...


def _dumps(obj: Any) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_details(details: str | Mapping[str, Any]) -> str:
    """The details object as canonical JSON (sorted keys, no whitespace)."""
    if isinstance(details, str):
        details = json.loads(details)
    if not isinstance(details, Mapping):
        raise TypeError(f"audit details must be a JSON object, got {type(details).__name__}")
    return _dumps(dict(details))


def _iso_utc(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: audit times must be timezone-aware")
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def canonical_content(
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    call_id: str | None,
    details: str | Mapping[str, Any],
) -> str:
    """The exact text an event's hash covers."""
    return _dumps(
        {
            "seq": seq,
            "at": _iso_utc(at),
            "actor": actor,
            "action": action,
            "call_id": call_id,
            "details": json.loads(canonical_details(details)),
        }
    )


def event_hash(prev_hash: str, canonical: str) -> str:
    """Hex SHA-256 of the previous hash followed by this event's canonical content."""
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    head_seq: int | None  # last seq verified good (None: none yet)
    head_hash: str | None
    broken_seq: int | None = None
    reason: str | None = None


def verify_chain(
    rows: Iterable[AuditRow],
    *,
    start: tuple[int, str] | None = None,
    expected_head: tuple[int, str] | None = None,
) -> VerifyResult:
    """Check rows given in ascending ``seq`` order; stop at the first break.

    ``start`` continues from a previously verified ``(seq, hash)`` (chunked
    verification of a long log). ``expected_head`` is a ``(seq, hash)`` exported
    earlier: the chain must still contain it, which catches truncation.
    """
    prev_seq, prev_hash = start if start is not None else (0, GENESIS)
    head_seq: int | None = start[0] if start is not None else None
    checked = 0
    head_seen = expected_head is None or (start is not None and start == expected_head)

    def result(ok: bool, broken_seq: int | None = None, reason: str | None = None) -> VerifyResult:
        head_hash = prev_hash if head_seq is not None else None
        return VerifyResult(ok, checked, head_seq, head_hash, broken_seq, reason)

    def broken(seq: int, reason: str) -> VerifyResult:
        return result(False, seq, reason)

    for row in rows:
        if row.seq != prev_seq + 1:
            if row.seq <= prev_seq:
                return broken(row.seq, f"seq {row.seq} out of order after {prev_seq}")
            return broken(row.seq, f"seq {prev_seq + 1} missing (next is {row.seq})")
        if row.prev_hash != prev_hash:
            return broken(row.seq, "prev_hash does not match the previous event's hash")
        try:
            content = canonical_content(
                row.seq, row.at, row.actor, row.action, row.call_id, row.details
            )
        except (ValueError, TypeError) as exc:
            return broken(row.seq, f"content not canonicalizable: {exc}")
        if event_hash(prev_hash, content) != row.hash:
            return broken(row.seq, "hash does not match the event's content")
        prev_seq, prev_hash, head_seq = row.seq, row.hash, row.seq
        checked += 1
        if expected_head is not None and (row.seq, row.hash) == expected_head:
            head_seen = True
    if expected_head is not None and not head_seen:
        return broken(
            expected_head[0],
            f"exported head seq {expected_head[0]} is missing or differs (log truncated?)",
        )
    return result(True)
