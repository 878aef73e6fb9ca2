"""Console events in the hash-chained audit log (logins, transcript views, exports, ...).

Written in the caller's transaction through ``store.queries.append_audit``, so the event
is in the chain before the page or file is sent.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from callagent.call.records import AuditRecord
from callagent.store.queries import append_audit

__all__ = ["ConsoleAction", "audit"]


class ConsoleAction(enum.Enum):
    LOGIN = "console.login"
    LOGIN_FAILED = "console.login_failed"
    LOGOUT = "console.logout"
    TRANSCRIPT_VIEWED = "console.transcript_viewed"
    CALL_EXPORTED = "console.call_exported"
    RECORDING_PLAYED = "console.recording_played"
    OPERATOR_ADDED = "console.operator_added"
    OPERATOR_DISABLED = "console.operator_disabled"
    OPERATOR_ENABLED = "console.operator_enabled"
    ROLE_CHANGED = "console.role_changed"
    TOKEN_CREATED = "console.token_created"
    CAMPAIGN_CREATED = "console.campaign_created"
    CONTACTS_IMPORTED = "console.contacts_imported"
    CAMPAIGN_STARTED = "console.campaign_started"
    CAMPAIGN_PAUSED = "console.campaign_paused"


async def audit(
    s: AsyncSession, action: ConsoleAction, actor: str, *, now: datetime,
    call_id: str | None = None, **details: Any,
) -> int:
    """Append one event; returns its seq."""
    [seq] = await append_audit(s, [AuditRecord(action.value, actor, now, call_id, dict(details))])
    return seq
