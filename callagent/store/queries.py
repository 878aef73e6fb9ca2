"""Query functions. Each takes an ``AsyncSession`` and never commits: the caller
owns the unit of work (``async with sessions.begin() as s: ...``).

``apply_records`` writes a batch of call records in order and is idempotent:
replaying a batch (or any part of it) that was already written adds nothing
and fails on nothing. Unique keys do it for calls, turns, tool calls, metrics,
status callbacks and AMD verdicts; audit events carry the producer's ``source_key``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, case, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.call.records import (
    AmdVerdictRecord,
    AuditRecord,
    CallClosed,
    CallOpened,
    CallStatusChanged,
    CallStreamStarted,
    MetricRecord,
    Record,
    ToolCallRecord,
    TurnRecord,
)
from callagent.compliance.audit import (
    GENESIS,
    AuditRow,
    VerifyResult,
    canonical_content,
    canonical_details,
    event_hash,
    verify_chain,
)
from callagent.store.models import (
    AmdVerdict,
    AuditEvent,
    Call,
    CallMetric,
    CallStatusEvent,
    ToolCall,
    Turn,
    UTCDateTime,
)

__all__ = [
    "AUDIT_LOCK_KEY",
    "TERMINAL_STATUSES",
    "UnknownCall",
    "append_audit",
    "apply_records",
    "audit_head",
    "verify_audit",
]

# Twilio call statuses after which nothing more happens on the call.
TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
_EARLY_STATUSES = ("initiated", "queued", "ringing")
INITIAL_STATUS = "initiated"

# pg_advisory_xact_lock key serializing audit appends across processes.
AUDIT_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"callagent.audit_events").digest()[:8], "big", signed=True
)

_calls = cast(Table, Call.__table__)
_turns = cast(Table, Turn.__table__)
_tool_calls = cast(Table, ToolCall.__table__)
_metrics = cast(Table, CallMetric.__table__)
_status_events = cast(Table, CallStatusEvent.__table__)
_amd_verdicts = cast(Table, AmdVerdict.__table__)
_audit = cast(Table, AuditEvent.__table__)


class UnknownCall(LookupError):
    """A record names a call that has no row (its CallOpened was never written)."""


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _insert(session: AsyncSession, table: Table) -> postgresql.Insert | sqlite.Insert:
    if _dialect(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _utc(value: datetime | None) -> Any:
    """A bound timestamp for SQL expressions (coalesce etc.), typed as UTCDateTime."""
    return literal(value, UTCDateTime())


async def apply_records(
    session: AsyncSession,
    records: Sequence[Record],
    *,
    keys: Sequence[str | None] | None = None,
) -> None:
    """Write ``records`` in order. ``keys`` (parallel to records) are idempotency
    keys; only audit records use theirs (``audit_events.source_key``)."""
    if keys is None:
        keys = [None] * len(records)
    elif len(keys) != len(records):
        raise ValueError("apply_records: keys and records differ in length")
    indexed = list(zip(records, keys))
    for bulk, run in itertools.groupby(indexed, key=lambda rk: type(rk[0]) in _BULK_KINDS):
        if not bulk:
            for record, _ in run:
                await _apply_one(session, record)
            continue
        # A run of turn, tool-call, metric and audit records: rows that depend
        # only on calls opened before the run, not on each other. One statement
        # per kind, each kind in its own order: a batch from many concurrent
        # calls interleaves them, and a statement per interleaved group cost the
        # event loop ~150 ms per 200 records where grouped ones cost ~10 ms.
        by_kind: dict[type, list[tuple[Record, str | None]]] = {}
        for item in run:
            by_kind.setdefault(type(item[0]), []).append(item)
        for kind, items in by_kind.items():
            if kind is TurnRecord:
                await _add_turns(session, [cast(TurnRecord, r) for r, _ in items])
            elif kind is ToolCallRecord:
                await _add_tool_calls(session, [cast(ToolCallRecord, r) for r, _ in items])
            elif kind is MetricRecord:
                await _put_metrics(session, [cast(MetricRecord, r) for r, _ in items])
            else:
                await append_audit(
                    session, [cast(AuditRecord, r) for r, _ in items], keys=[k for _, k in items]
                )


_BULK_KINDS = (TurnRecord, ToolCallRecord, MetricRecord, AuditRecord)


async def _apply_one(session: AsyncSession, record: Record) -> None:
    if isinstance(record, CallOpened):
        await _open_call(session, record)
    elif isinstance(record, CallStreamStarted):
        await _stream_started(session, record)
    elif isinstance(record, CallStatusChanged):
        await _status_changed(session, record)
    elif isinstance(record, AmdVerdictRecord):
        await _amd_verdict(session, record)
    elif isinstance(record, CallClosed):
        await _close_call(session, record)
    else:
        raise TypeError(f"not a call record: {record!r}")


async def _open_call(session: AsyncSession, r: CallOpened) -> None:
    stmt = (
        _insert(session, _calls)
        .values(
            id=r.call_id,
            twilio_call_sid=r.twilio_call_sid or None,
            direction=r.direction,
            from_number=r.from_number,
            to_number=r.to_number,
            agent=r.agent,
            engine=r.engine,
            campaign_id=r.campaign_id,
            contact_id=r.contact_id,
            status=INITIAL_STATUS,
            started_at=r.started_at,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    await session.execute(stmt)
    if not r.twilio_call_sid:
        return
    # Status callbacks and an AMD verdict that arrived before the call row: apply
    # the newest status, then the verdict (which only moves a call on from ringing).
    latest = (
        await session.execute(
            select(_status_events)
            .where(_status_events.c.call_sid == r.twilio_call_sid)
            .order_by(_status_events.c.sequence.desc())
            .limit(1)
        )
    ).first()
    if latest is not None:
        await _apply_status(
            session,
            latest.call_sid,
            latest.sequence,
            latest.status,
            latest.at,
            latest.duration_s,
            latest.answered_by,
        )
    verdict = (
        await session.execute(
            select(_amd_verdicts.c.answered_by, _amd_verdicts.c.at)
            .where(_amd_verdicts.c.call_sid == r.twilio_call_sid)
        )
    ).first()
    if verdict is not None:
        await _apply_verdict(session, r.twilio_call_sid, verdict.answered_by, verdict.at)


async def _stream_started(session: AsyncSession, r: CallStreamStarted) -> None:
    c = _calls.c
    result = await session.execute(
        update(_calls)
        .where(c.id == r.call_id)
        .values(
            stream_sid=r.stream_sid,
            answered_at=func.coalesce(c.answered_at, _utc(r.answered_at)),
            status=case(
                (and_(c.ended_at.is_(None), c.status.in_(_EARLY_STATUSES)), "in-progress"),
                else_=c.status,
            ),
        )
    )
    if cast(Any, result).rowcount == 0:
        raise UnknownCall(r.call_id)


async def _status_changed(session: AsyncSession, r: CallStatusChanged) -> None:
    await session.execute(
        _insert(session, _status_events)
        .values(
            call_sid=r.twilio_call_sid,
            sequence=r.sequence,
            status=r.status,
            at=r.at,
            duration_s=r.duration_s,
            answered_by=r.answered_by,
        )
        .on_conflict_do_nothing(index_elements=["call_sid", "sequence"])
    )
    await _apply_status(
        session, r.twilio_call_sid, r.sequence, r.status, r.at, r.duration_s, r.answered_by
    )


async def _amd_verdict(session: AsyncSession, r: AmdVerdictRecord) -> None:
    inserted = (
        await session.execute(
            _insert(session, _amd_verdicts)
            .values(call_sid=r.twilio_call_sid, answered_by=r.answered_by,
                    detection_ms=r.detection_ms, at=r.at)
            .on_conflict_do_nothing(index_elements=["call_sid"])
            .returning(_amd_verdicts.c.id)  # rowcount is -1 here on psycopg
        )
    ).first()
    if inserted is not None:  # else a retried callback: the first verdict stands
        await _apply_verdict(session, r.twilio_call_sid, r.answered_by, r.at)


async def _apply_verdict(session: AsyncSession, sid: str, answered_by: str, at: datetime) -> None:
    """A verdict means the call was answered. It is not a status callback (no
    SequenceNumber): it never moves a call back, only on from ringing."""
    c = _calls.c
    await session.execute(
        update(_calls)
        .where(c.twilio_call_sid == sid)
        .values(
            answered_by=answered_by,
            answered_at=func.coalesce(c.answered_at, _utc(at)),
            status=case(
                (and_(c.ended_at.is_(None), c.status.in_(_EARLY_STATUSES)), "in-progress"),
                else_=c.status,
            ),
        )
    )


async def _apply_status(
    session: AsyncSession,
    sid: str,
    sequence: int,
    status: str,
    at: datetime,
    duration_s: int | None,
    answered_by: str | None,
) -> None:
    """Move the call to ``status`` unless a newer callback was already applied."""
    c = _calls.c
    values: dict[str, Any] = {"status": status, "last_status_seq": sequence}
    if answered_by is not None:
        values["answered_by"] = answered_by
    if duration_s is not None:
        values["duration_s"] = duration_s
    if status == "in-progress":
        values["answered_at"] = func.coalesce(c.answered_at, _utc(at))
    if status in TERMINAL_STATUSES:
        values["ended_at"] = func.coalesce(c.ended_at, _utc(at))
        values["end_reason"] = func.coalesce(c.end_reason, literal(status))
    await session.execute(
        update(_calls)
        .where(
            c.twilio_call_sid == sid,
            or_(c.last_status_seq.is_(None), c.last_status_seq < sequence),
        )
        .values(values)
    )


async def _close_call(session: AsyncSession, r: CallClosed) -> None:
    c = _calls.c
    row = (
        await session.execute(
            select(c.started_at, c.ended_at, c.duration_s).where(c.id == r.call_id)
        )
    ).first()
    if row is None:
        raise UnknownCall(r.call_id)
    if row.ended_at is not None:
        return
    duration = row.duration_s
    if duration is None:
        duration = max(0, round((r.ended_at - row.started_at).total_seconds()))
    await session.execute(
        update(_calls)
        .where(c.id == r.call_id, c.ended_at.is_(None))
        .values(ended_at=r.ended_at, end_reason=r.end_reason, status=r.status, duration_s=duration)
    )


async def _add_turns(session: AsyncSession, turns: Sequence[TurnRecord]) -> None:
    rows = [
        {
            "call_id": t.call_id,
            "seq": t.seq,
            "speaker": t.speaker,
            "text": t.text,
            "start_ms": t.start_ms,
            "end_ms": t.end_ms,
            "interrupted": t.interrupted,
            "heard_text": t.heard_text,
            "heard_ms": t.heard_ms,
            "response_latency_ms": t.response_latency_ms,
            "stt_ms": t.stt_ms,
            "brain_ms": t.brain_ms,
            "tts_ms": t.tts_ms,
        }
        for t in turns
    ]
    stmt = _insert(session, _turns).on_conflict_do_nothing(index_elements=["call_id", "seq"])
    await session.execute(stmt, rows)


async def _add_tool_calls(session: AsyncSession, calls: Sequence[ToolCallRecord]) -> None:
    rows = [
        {
            "call_id": t.call_id,
            "tool_call_id": t.tool_call_id,
            "name": t.name,
            "arguments": t.arguments,
            "result": t.result,
            "status": t.status,
            "started_at": t.started_at,
            "duration_ms": t.duration_ms,
            "error": t.error,
        }
        for t in calls
    ]
    stmt = _insert(session, _tool_calls).on_conflict_do_nothing(
        index_elements=["call_id", "tool_call_id"]
    )
    await session.execute(stmt, rows)


async def _put_metrics(session: AsyncSession, metrics: Sequence[MetricRecord]) -> None:
    latest: dict[tuple[str, str, str], float] = {}
    for m in metrics:  # last value wins, as if applied one by one
        latest[(m.call_id, m.name, m.turn_id)] = m.value
    rows = [
        {"call_id": c, "name": n, "turn_id": t, "value": v} for (c, n, t), v in latest.items()
    ]
    ins = _insert(session, _metrics)
    stmt = ins.on_conflict_do_update(
        index_elements=["call_id", "name", "turn_id"], set_={"value": ins.excluded.value}
    )
    await session.execute(stmt, rows)


# ---- audit log ------------------------------------------------------------------


async def audit_head(session: AsyncSession) -> tuple[int, str] | None:
    """The last (seq, hash) of the audit chain, or None when it is empty."""
    row = (
        await session.execute(
            select(_audit.c.seq, _audit.c.hash).order_by(_audit.c.seq.desc()).limit(1)
        )
    ).first()
    return None if row is None else (int(row.seq), str(row.hash))


async def append_audit(
    session: AsyncSession,
    records: Sequence[AuditRecord],
    *,
    keys: Sequence[str | None] | None = None,
) -> list[int]:
    """Append ``records`` to the hash chain; returns the seqs given to them.

    A record whose key (``source_key``) is already in the log is skipped, so a
    replayed batch appends nothing twice. One chain across processes: on
    PostgreSQL a transaction-scoped advisory lock serializes appenders (run in
    READ COMMITTED, the default); on SQLite the write transaction does, as
    ``store.db`` engines open every transaction with ``BEGIN IMMEDIATE``.
    """
    if not records:
        return []
    if keys is None:
        keys = [None] * len(records)
    elif len(keys) != len(records):
        raise ValueError("append_audit: keys and records differ in length")
    if _dialect(session) == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(AUDIT_LOCK_KEY)))
    seen: set[str] = set()
    wanted = [k for k in keys if k is not None]
    if wanted:
        found = await session.scalars(
            select(_audit.c.source_key).where(_audit.c.source_key.in_(wanted))
        )
        seen.update(k for k in found if k is not None)
    head = await audit_head(session)
    seq, prev = head if head is not None else (0, GENESIS)
    rows: list[dict[str, Any]] = []
    for record, key in zip(records, keys):
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        seq += 1
        details = canonical_details(record.details)
        digest = event_hash(
            prev,
            canonical_content(seq, record.at, record.actor, record.action, record.call_id, details),
        )
        rows.append(
            {
                "seq": seq,
                "at": record.at,
                "actor": record.actor,
                "action": record.action,
                "call_id": record.call_id,
                "details": details,
                "prev_hash": prev,
                "hash": digest,
                "source_key": key,
            }
        )
        prev = digest
    if rows:
        await session.execute(_insert(session, _audit), rows)
    return [int(r["seq"]) for r in rows]


async def verify_audit(
    session: AsyncSession,
    *,
    expected_head: tuple[int, str] | None = None,
    chunk_size: int = 1000,
) -> VerifyResult:
    """Verify the whole stored chain in seq order, ``chunk_size`` rows at a time."""
    cols = (
        _audit.c.seq,
        _audit.c.at,
        _audit.c.actor,
        _audit.c.action,
        _audit.c.call_id,
        _audit.c.details,
        _audit.c.prev_hash,
        _audit.c.hash,
    )
    start: tuple[int, str] | None = None
    checked = 0
    result = VerifyResult(True, 0, None, None)
    while True:
        after = start[0] if start is not None else 0
        rows = (
            await session.execute(
                select(*cols).where(_audit.c.seq > after).order_by(_audit.c.seq).limit(chunk_size)
            )
        ).all()
        if not rows:
            break
        result = verify_chain(cast(Sequence[AuditRow], rows), start=start)
        checked += result.checked
        if not result.ok:
            return VerifyResult(
                False, checked, result.head_seq, result.head_hash, result.broken_seq, result.reason
            )
        assert result.head_seq is not None and result.head_hash is not None
        start = (result.head_seq, result.head_hash)
    head_seq, head_hash = start if start is not None else (None, None)
    if expected_head is not None:
        stored = (
            await session.execute(select(_audit.c.hash).where(_audit.c.seq == expected_head[0]))
        ).scalar_one_or_none()
        if stored != expected_head[1]:
            return VerifyResult(
                False, checked, head_seq, head_hash, expected_head[0],
                f"exported head seq {expected_head[0]} is missing or differs (log truncated?)",
            )
    return VerifyResult(True, checked, head_seq, head_hash)
