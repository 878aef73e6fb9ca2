"""Reading calls for the console: the keyset-paginated list, one call in full, and the
dashboard's figures. Each takes an ``AsyncSession`` and never commits."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from callagent.console.call_filters import CallFilter, Cursor
from callagent.store.models import AuditEvent, Call, ToolCall, Turn
from callagent.store.operators import TranscriptTerm

__all__ = [
    "AuditLine",
    "CallDetail",
    "CallPage",
    "CallRow",
    "Dashboard",
    "ToolCallRow",
    "TurnRow",
    "UnknownCall",
    "call_audit",
    "call_detail",
    "dashboard",
    "list_calls",
    "percentile",
]


class UnknownCall(LookupError):
    """No call with that id."""


@dataclass(frozen=True, slots=True)
class CallRow:
    id: str
    started_at: datetime
    direction: str
    from_number: str
    to_number: str
    agent: str
    engine: str
    campaign_id: int | None
    status: str
    end_reason: str | None
    duration_s: int | None
    ended_at: datetime | None
    answered_by: str | None
    twilio_call_sid: str | None
    # the kept two-channel WAV (caller left, agent right), when the recording policy kept one
    recording_path: str | None


@dataclass(frozen=True, slots=True)
class CallPage:
    calls: list[CallRow]
    next_cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class TurnRow:
    seq: int
    speaker: str
    text: str
    start_ms: float
    end_ms: float
    interrupted: bool
    heard_text: str | None
    heard_ms: float | None
    response_latency_ms: float | None


@dataclass(frozen=True, slots=True)
class ToolCallRow:
    tool_call_id: str
    name: str
    arguments: str
    result: str
    status: str
    started_at: datetime
    duration_ms: float
    error: str


@dataclass(frozen=True, slots=True)
class AuditLine:
    seq: int
    at: datetime
    actor: str
    action: str
    details: str


@dataclass(frozen=True, slots=True)
class CallDetail:
    call: CallRow
    turns: list[TurnRow]
    tool_calls: list[ToolCallRow]
    audit: list[AuditLine]


_CALL_COLUMNS = (Call.id, Call.started_at, Call.direction, Call.from_number, Call.to_number,
                 Call.agent, Call.engine, Call.campaign_id, Call.status, Call.end_reason,
                 Call.duration_s, Call.ended_at, Call.answered_by, Call.twilio_call_sid,
                 Call.recording_path)


def _call_row(r: Any) -> CallRow:
    return CallRow(*(r[i] for i in range(len(_CALL_COLUMNS))))


def _conditions(f: CallFilter) -> list[Any]:
    where: list[Any] = []
    if f.since is not None:
        where.append(Call.started_at >= f.since)
    if f.until is not None:
        where.append(Call.started_at < f.until)
    if f.direction:
        where.append(Call.direction == f.direction)
    if f.campaign_id is not None:
        where.append(Call.campaign_id == f.campaign_id)
    if f.agent:
        where.append(Call.agent == f.agent)
    if f.engine:
        where.append(Call.engine == f.engine)
    if f.outcome:
        where.append(Call.status == f.outcome)
    if f.number:
        where.append(or_(Call.from_number == f.number, Call.to_number == f.number))
    if f.cursor is not None:
        c = f.cursor
        where.append(or_(Call.started_at < c.started_at,
                         and_(Call.started_at == c.started_at, Call.id < c.call_id)))
    return where


# A word in more turns than this is "common": the list then walks calls newest first and
# checks each (few calls to read before a page is full); rarer words drive the query
# from their postings instead.
COMMON_POSTINGS = 5000


async def _postings(s: AsyncSession, word: str, cap: int) -> int:
    """How many turns hold ``word``, counted up to ``cap`` (an index range scan)."""
    capped = select(TranscriptTerm.turn_id).where(TranscriptTerm.term == word).limit(cap)
    return int(await s.scalar(select(func.count()).select_from(capped.subquery())) or 0)


def _turns_with(words: Sequence[str]) -> Any:
    """Turn ids (and their call ids) holding every word; the first word drives."""
    first = aliased(TranscriptTerm)
    stmt = select(first.call_id).where(first.term == words[0])
    for word in words[1:]:
        other = aliased(TranscriptTerm)
        stmt = stmt.where(exists().where(other.term == word, other.turn_id == first.turn_id))
    return stmt


def _call_has_turn_with(words: Sequence[str]) -> Any:
    """EXISTS: one turn of the outer call holds every word."""
    turn = aliased(Turn)
    stmt = select(turn.id).where(turn.call_id == Call.id)
    for word in words:
        term = aliased(TranscriptTerm)
        stmt = stmt.where(exists().where(term.term == word, term.turn_id == turn.id))
    return stmt.exists()


async def _word_condition(s: AsyncSession, words: Sequence[str], common: int) -> Any:
    counts = {w: await _postings(s, w, common) for w in words}
    ordered = sorted(words, key=lambda w: counts[w])
    if counts[ordered[0]] == 0:
        return false()
    if counts[ordered[0]] < common:
        return Call.id.in_(_turns_with(ordered))
    return _call_has_turn_with(ordered)


async def list_calls(
    s: AsyncSession, f: CallFilter, *, common_postings: int = COMMON_POSTINGS
) -> CallPage:
    stmt = select(*_CALL_COLUMNS).where(*_conditions(f))
    if f.words:
        stmt = stmt.where(await _word_condition(s, f.words, common_postings))
    stmt = stmt.order_by(Call.started_at.desc(), Call.id.desc()).limit(f.limit + 1)
    rows = [_call_row(r) for r in (await s.execute(stmt)).all()]
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    cursor = Cursor(rows[-1].started_at, rows[-1].id) if more and rows else None
    return CallPage(rows, cursor)


async def call_detail(s: AsyncSession, call_id: str) -> CallDetail:
    row = (await s.execute(select(*_CALL_COLUMNS).where(Call.id == call_id))).first()
    if row is None:
        raise UnknownCall(f"no call with id {call_id!r}")
    turns = [
        TurnRow(t.seq, t.speaker, t.text, t.start_ms, t.end_ms, t.interrupted, t.heard_text,
                t.heard_ms, t.response_latency_ms)
        for t in await s.scalars(select(Turn).where(Turn.call_id == call_id).order_by(Turn.seq))
    ]
    tools = [
        ToolCallRow(t.tool_call_id, t.name, t.arguments, t.result, t.status, t.started_at,
                    t.duration_ms, t.error)
        for t in await s.scalars(
            select(ToolCall).where(ToolCall.call_id == call_id).order_by(ToolCall.started_at,
                                                                           ToolCall.id))
    ]
    return CallDetail(_call_row(row), turns, tools, await call_audit(s, call_id))


async def call_audit(s: AsyncSession, call_id: str) -> list[AuditLine]:
    """The call's audit trail, oldest first."""
    return [
        AuditLine(a.seq, a.at, a.actor, a.action, a.details)
        for a in await s.scalars(
            select(AuditEvent).where(AuditEvent.call_id == call_id).order_by(AuditEvent.seq))
    ]


# --- dashboard -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Dashboard:
    day_start: datetime
    calls_today: int
    by_outcome: list[tuple[str, int]]
    by_direction: list[tuple[str, int]]
    by_engine: list[tuple[str, int]]
    open_calls: int                    # started today, not ended (per the database)
    interruptions: int
    latency_samples: int
    median_latency_ms: float | None
    p95_latency_ms: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1), linear between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = min(max(q, 0.0), 1.0) * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


async def _grouped(s: AsyncSession, column: Any, since: datetime) -> list[tuple[str, int]]:
    rows = await s.execute(
        select(column, func.count()).where(Call.started_at >= since).group_by(column)
        .order_by(func.count().desc())
    )
    return [(str(k), int(n)) for k, n in rows.all()]


async def dashboard(s: AsyncSession, *, now: datetime, max_samples: int = 20000) -> Dashboard:
    """Today (UTC) in figures; latencies from at most ``max_samples`` recent agent turns."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    total = await s.scalar(select(func.count()).select_from(Call).where(Call.started_at >= day))
    open_calls = await s.scalar(select(func.count()).select_from(Call).where(
        Call.started_at >= day, Call.ended_at.is_(None)))
    today_turns = select(Turn).join(Call, Call.id == Turn.call_id).where(Call.started_at >= day)
    interruptions = await s.scalar(
        select(func.count()).select_from(today_turns.where(Turn.interrupted.is_(True)).subquery()))
    latencies = [float(v) for v in await s.scalars(
        select(Turn.response_latency_ms).join(Call, Call.id == Turn.call_id)
        .where(Call.started_at >= day, Turn.response_latency_ms.is_not(None))
        .order_by(Turn.id.desc()).limit(max_samples)
    ) if v is not None]
    return Dashboard(
        day_start=day,
        calls_today=int(total or 0),
        by_outcome=await _grouped(s, Call.status, day),
        by_direction=await _grouped(s, Call.direction, day),
        by_engine=await _grouped(s, Call.engine, day),
        open_calls=int(open_calls or 0),
        interruptions=int(interruptions or 0),
        latency_samples=len(latencies),
        median_latency_ms=statistics.median(latencies) if latencies else None,
        p95_latency_ms=percentile(latencies, 0.95),
    )
