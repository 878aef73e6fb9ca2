"""Erasure of one person by phone number (GDPR Art. 17).

For every call from or to the number: its transcript (turns) is deleted, its
tool payloads are purged, its recording file is removed and unlinked, and the
number on the call row is replaced by ``erased``. Campaign contacts with the
number lose their name, fields and number and are skipped from then on;
call attempts lose the number. The do-not-call entry stays: an opt-out must
outlive the erasure. The audit log keeps one ``erasure.completed`` event that
names the number only by a digest, with the counts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import phonenumbers
from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.call.guard import number_digest
from callagent.call.records import AuditRecord
from callagent.compliance import events as ev
from callagent.compliance.retention import PURGED, remove_files
from callagent.store.models import Call, CallAttempt, Contact, DncNumber, ToolCall, Turn
from callagent.store.queries import append_audit

__all__ = ["ERASED", "BadPhone", "ErasureReport", "erase_phone", "parse_e164"]

ERASED = "erased"

_calls = cast(Table, Call.__table__)
_turns = cast(Table, Turn.__table__)
_tools = cast(Table, ToolCall.__table__)
_contacts = cast(Table, Contact.__table__)
_attempts = cast(Table, CallAttempt.__table__)
_dnc = cast(Table, DncNumber.__table__)


class BadPhone(ValueError):
    """Not an E.164 phone number."""


def parse_e164(text: str) -> str:
    """The number in E.164 form, or ``BadPhone`` saying what was expected."""
    raw = text.strip()
    expected = f"expected an E.164 phone number such as +14155550100, got {text!r}"
    if not raw.startswith("+"):
        raise BadPhone(f"{expected} (it must start with + and the country code)")
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise BadPhone(expected) from None
    if not phonenumbers.is_possible_number(parsed):
        raise BadPhone(f"{expected} (not a possible number)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass
class ErasureReport:
    calls: int = 0
    turns: int = 0
    tool_calls: int = 0
    recordings: int = 0
    contacts: int = 0
    attempts: int = 0
    dnc_kept: bool = False
    files: list[str] = field(default_factory=list)
    unremoved: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        return {"calls": self.calls, "turns": self.turns, "tool_calls": self.tool_calls,
                "recordings": self.recordings, "contacts": self.contacts,
                "attempts": self.attempts, "dnc_kept": self.dnc_kept}  # fmt: skip


def _rows(result: Any) -> int:
    return int(cast(Any, result).rowcount or 0)


async def erase(session: AsyncSession, e164: str, now: datetime, actor: str) -> ErasureReport:
    report = ErasureReport()
    c = _calls.c
    calls = (await session.execute(
        select(c.id, c.recording_path).where(or_(c.from_number == e164, c.to_number == e164))
    )).all()
    ids = [r.id for r in calls]
    report.calls = len(ids)
    report.files = [str(r.recording_path) for r in calls if r.recording_path]
    report.recordings = len(report.files)
    if ids:
        report.turns = _rows(await session.execute(delete(_turns).where(_turns.c.call_id.in_(ids))))
        report.tool_calls = _rows(await session.execute(
            update(_tools).where(_tools.c.call_id.in_(ids))
            .values(arguments=PURGED, result=PURGED, error="")))
        await session.execute(update(_calls).where(c.id.in_(ids), c.from_number == e164)
                              .values(from_number=ERASED))  # fmt: skip
        await session.execute(update(_calls).where(c.id.in_(ids), c.to_number == e164)
                              .values(to_number=ERASED))  # fmt: skip
        await session.execute(update(_calls).where(c.id.in_(ids)).values(recording_path=None))
    report.contacts = _rows(await session.execute(
        update(_contacts).where(_contacts.c.e164 == e164)
        .values(e164=ERASED, name="", fields="{}", state="skipped", skip_reason=ERASED,
                claimed_by=None, lease_until=None, next_attempt_at=None)))  # fmt: skip
    report.attempts = _rows(await session.execute(
        update(_attempts).where(_attempts.c.e164 == e164).values(e164=ERASED)))
    report.dnc_kept = (await session.scalar(
        select(_dnc.c.id).where(_dnc.c.e164 == e164).limit(1))) is not None
    await append_audit(session, [AuditRecord(ev.ERASURE_COMPLETED, actor, now, None,
                                             {"number": number_digest(e164), **report.counts()})])
    return report


async def erase_phone(
    sessions: async_sessionmaker[AsyncSession], phone: str, now: datetime,
    actor: str = "operator:cli",
) -> ErasureReport:
    """Validate, erase in one transaction, then remove the recording files."""
    e164 = parse_e164(phone)
    async with sessions.begin() as session:
        report = await erase(session, e164, now, actor)
    report.unremoved = await asyncio.to_thread(remove_files, report.files)
    return report
