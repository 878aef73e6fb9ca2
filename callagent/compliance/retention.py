"""Retention: each kind of data is kept for its configured days after the call, then purged.

Kinds: recordings (the WAV file and the call row's link), transcripts (the
call's turns), tool payloads (tool calls' arguments and results, kept as
``null``: the name, status and timing stay). The audit log is never purged.
One transaction clears the rows and appends a ``retention.purged`` audit
event with the counts; the recording files are removed after it commits
(``PurgeReport.unremoved`` lists the ones that could not be).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.call.records import AuditRecord
from callagent.compliance import events as ev
from callagent.config import RetentionSettings
from callagent.store.models import Call, ToolCall, Turn
from callagent.store.queries import append_audit

__all__ = ["PURGED", "PurgeReport", "remove_files", "run_retention"]

PURGED = "null"  # what a purged tool payload holds (JSON null)

_calls = cast(Table, Call.__table__)
_turns = cast(Table, Turn.__table__)
_tools = cast(Table, ToolCall.__table__)


@dataclass
class PurgeReport:
    recordings: int = 0
    transcripts: int = 0  # turn rows
    tool_payloads: int = 0  # tool-call rows
    files: list[str] = field(default_factory=list)
    unremoved: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"recordings": self.recordings, "transcripts": self.transcripts,
                "tool_payloads": self.tool_payloads}  # fmt: skip


def _cutoff(now: datetime, days: int) -> datetime | None:
    return None if days == 0 else now - timedelta(days=days)


def _call_time() -> Any:
    return func.coalesce(_calls.c.ended_at, _calls.c.started_at)


async def purge(session: AsyncSession, settings: RetentionSettings, now: datetime) -> PurgeReport:
    """The row work of one retention run (the caller owns the transaction)."""
    report = PurgeReport()
    cut = _cutoff(now, settings.recordings_days)
    if cut is not None:
        rows = (await session.execute(
            select(_calls.c.id, _calls.c.recording_path)
            .where(_calls.c.recording_path.is_not(None), _call_time() < cut)
        )).all()
        if rows:
            await session.execute(update(_calls).where(_calls.c.id.in_([r.id for r in rows]))
                                  .values(recording_path=None))  # fmt: skip
        report.recordings = len(rows)
        report.files = [str(r.recording_path) for r in rows]
    cut = _cutoff(now, settings.transcripts_days)
    if cut is not None:
        old = select(_calls.c.id).where(_call_time() < cut)
        result = await session.execute(delete(_turns).where(_turns.c.call_id.in_(old)))
        report.transcripts = int(cast(Any, result).rowcount or 0)
    cut = _cutoff(now, settings.tool_payloads_days)
    if cut is not None:
        result = await session.execute(
            update(_tools)
            .where(_tools.c.started_at < cut,
                   or_(_tools.c.arguments != PURGED, _tools.c.result != PURGED))
            .values(arguments=PURGED, result=PURGED)
        )
        report.tool_payloads = int(cast(Any, result).rowcount or 0)
    details: dict[str, Any] = {
        **report.counts(),
        "days": {"recordings": settings.recordings_days, "transcripts": settings.transcripts_days,
                 "tool_payloads": settings.tool_payloads_days},
    }  # fmt: skip
    await append_audit(session, [AuditRecord(ev.RETENTION_PURGED, "system:retention", now,
                                             None, details)])  # fmt: skip
    return report


def remove_files(paths: list[str]) -> list[str]:
    """Remove files; returns the ones that could not be (a missing one counts as removed)."""
    failed = []
    for p in paths:
        try:
            with contextlib.suppress(FileNotFoundError):
                Path(p).unlink()
        except OSError:
            failed.append(p)
    return failed


async def run_retention(
    sessions: async_sessionmaker[AsyncSession], settings: RetentionSettings, now: datetime
) -> PurgeReport:
    async with sessions.begin() as session:
        report = await purge(session, settings, now)
    report.unremoved = await asyncio.to_thread(remove_files, report.files)
    return report
