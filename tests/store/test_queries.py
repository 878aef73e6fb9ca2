"""apply_records on both databases: every record kind, status callbacks, idempotent replay."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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
from callagent.store import queries
from callagent.store.models import (
    AmdVerdict,
    AuditEvent,
    Call,
    CallMetric,
    CallStatusEvent,
    ToolCall,
    Turn,
)

T0 = datetime(2026, 5, 4, 9, 0, 0, tzinfo=timezone.utc)
SID = "CA" + "1" * 32

Sessions = async_sessionmaker[AsyncSession]


def opened(call_id: str = "call-1", sid: str = SID, at: datetime = T0) -> CallOpened:
    return CallOpened(call_id, "inbound", "support", "pipeline", "+15550001", "+15550002", sid, at,
                      campaign_id=7, contact_id=70)


def status(seq: int, st: str, at: datetime | None = None, **kw: object) -> CallStatusChanged:
    return CallStatusChanged(SID, st, seq, at or T0 + timedelta(seconds=seq), **kw)  # type: ignore[arg-type]


async def apply(db_sessions: Sessions, records: Sequence[Record], keys: Sequence[str | None] | None = None) -> None:
    async with db_sessions.begin() as s:
        await queries.apply_records(s, records, keys=keys)


async def get_call(db_sessions: Sessions, call_id: str = "call-1") -> Call:
    async with db_sessions() as s:
        return (await s.scalars(select(Call).where(Call.id == call_id))).one()


async def count(db_sessions: Sessions, model: type[object]) -> int:
    async with db_sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_each_record_kind_is_written_and_read_back(db_sessions: Sessions) -> None:
    records: list[Record] = [
        opened(),
        CallStreamStarted("call-1", "MZ" + "2" * 32, T0 + timedelta(seconds=1)),
        TurnRecord("call-1", 0, "agent", "Hello, how can I help?", 0.0, 1800.0, interrupted=True,
                   heard_text="Hello, how", heard_ms=700.0, response_latency_ms=None, tts_ms=120.0),
        TurnRecord("call-1", 1, "caller", "My order is late", 1500.0, 3000.0, response_latency_ms=450.0,
                   stt_ms=90.0, brain_ms=300.0),
        ToolCallRecord("call-1", "tc-1", "lookup_order", '{"order":"A1"}', '{"status":"shipped"}', "ok",
                       T0 + timedelta(seconds=4), 85.5),
        MetricRecord("call-1", "first_response_ms", 512.0),
        AuditRecord("call.answered", "system", T0 + timedelta(seconds=1), "call-1", {"stream": "MZ"}),
        CallClosed("call-1", T0 + timedelta(seconds=65), "caller_hangup"),
    ]
    await apply(db_sessions, records)

    async with db_sessions() as s:
        call = (await s.scalars(select(Call))).one()
        turns = (await s.scalars(select(Turn).order_by(Turn.seq))).all()
        tool = (await s.scalars(select(ToolCall))).one()
        metric = (await s.scalars(select(CallMetric))).one()
        audit = (await s.scalars(select(AuditEvent))).one()
    assert (call.id, call.twilio_call_sid, call.direction, call.agent, call.engine) == (
        "call-1", SID, "inbound", "support", "pipeline")
    assert (call.campaign_id, call.contact_id, call.from_number, call.to_number) == (
        7, 70, "+15550001", "+15550002")
    assert call.stream_sid == "MZ" + "2" * 32
    assert call.started_at == T0 and call.answered_at == T0 + timedelta(seconds=1)
    assert call.ended_at == T0 + timedelta(seconds=65)
    assert (call.status, call.end_reason, call.duration_s) == ("completed", "caller_hangup", 65)
    assert [(t.seq, t.speaker, t.text) for t in turns] == [
        (0, "agent", "Hello, how can I help?"), (1, "caller", "My order is late")]
    assert (turns[0].interrupted, turns[0].heard_text, turns[0].heard_ms, turns[0].tts_ms) == (
        True, "Hello, how", 700.0, 120.0)
    assert (turns[1].interrupted, turns[1].response_latency_ms, turns[1].stt_ms, turns[1].brain_ms) == (
        False, 450.0, 90.0, 300.0)
    assert (tool.tool_call_id, tool.name, tool.arguments, tool.result, tool.status, tool.duration_ms,
            tool.error) == ("tc-1", "lookup_order", '{"order":"A1"}', '{"status":"shipped"}', "ok", 85.5, "")
    assert tool.started_at == T0 + timedelta(seconds=4)
    assert (metric.name, metric.turn_id, metric.value) == ("first_response_ms", "", 512.0)
    assert (audit.seq, audit.action, audit.actor, audit.call_id, audit.details) == (
        1, "call.answered", "system", "call-1", '{"stream":"MZ"}')


async def test_replaying_a_written_batch_adds_nothing(db_sessions: Sessions) -> None:
    records: list[Record] = [
        opened(),
        CallStreamStarted("call-1", "MZ1", T0),
        status(1, "in-progress"),
        TurnRecord("call-1", 0, "agent", "hi", 0, 10),
        ToolCallRecord("call-1", "tc-1", "f", "{}", "{}", "ok", T0, 1.0),
        MetricRecord("call-1", "m", 1.0),
        MetricRecord("call-1", "m", 1.0, turn_id="t1"),
        verdict(),
        AuditRecord("a", "system", T0, "call-1"),
        AuditRecord("b", "system", T0, "call-1"),
        CallClosed("call-1", T0 + timedelta(seconds=9), "done"),
    ]
    keys = [f"batch-1:{i}" for i in range(len(records))]
    await apply(db_sessions, records, keys)
    await apply(db_sessions, records, keys)  # the whole batch again
    await apply(db_sessions, records[3:], keys[3:])  # and a tail of it
    for model, n in [(Call, 1), (Turn, 1), (ToolCall, 1), (CallMetric, 2), (CallStatusEvent, 1),
                     (AmdVerdict, 1), (AuditEvent, 2)]:
        assert await count(db_sessions, model) == n, model
    async with db_sessions() as s:
        assert (await queries.verify_audit(s)).ok


async def test_audit_records_without_keys_always_append(db_sessions: Sessions) -> None:
    await apply(db_sessions, [AuditRecord("a", "system", T0)])
    await apply(db_sessions, [AuditRecord("a", "system", T0)])
    assert await count(db_sessions, AuditEvent) == 2


async def test_status_callbacks_are_deduplicated(db_sessions: Sessions) -> None:
    await apply(db_sessions, [opened(), status(1, "ringing"), status(2, "in-progress")])
    await apply(db_sessions, [status(2, "in-progress"), status(1, "ringing")])  # Twilio retries
    assert await count(db_sessions, CallStatusEvent) == 2
    call = await get_call(db_sessions)
    assert (call.status, call.last_status_seq) == ("in-progress", 2)
    assert call.answered_at == T0 + timedelta(seconds=2)


async def test_out_of_order_status_callbacks_keep_the_newest(db_sessions: Sessions) -> None:
    await apply(db_sessions, [opened(), status(3, "completed", duration_s=42)])
    await apply(db_sessions, [status(2, "in-progress"), status(1, "ringing")])  # late arrivals
    assert await count(db_sessions, CallStatusEvent) == 3  # all stored
    call = await get_call(db_sessions)
    assert (call.status, call.last_status_seq, call.duration_s) == ("completed", 3, 42)
    assert call.ended_at == T0 + timedelta(seconds=3) and call.end_reason == "completed"


@pytest.mark.parametrize("terminal", ["completed", "busy", "failed", "no-answer", "canceled"])
async def test_terminal_statuses_close_the_call(db_sessions: Sessions, terminal: str) -> None:
    await apply(db_sessions, [opened(), status(1, "ringing"),
                           status(2, terminal, duration_s=5, answered_by="human")])
    call = await get_call(db_sessions)
    assert call.ended_at == T0 + timedelta(seconds=2)
    assert (call.status, call.end_reason, call.duration_s, call.answered_by) == (
        terminal, terminal, 5, "human")


async def test_status_callback_before_the_call_row_is_applied_when_it_opens(db_sessions: Sessions) -> None:
    await apply(db_sessions, [status(1, "ringing"), status(2, "in-progress")])
    await apply(db_sessions, [opened()])
    call = await get_call(db_sessions)
    assert (call.status, call.last_status_seq) == ("in-progress", 2)


async def test_first_close_wins_and_twilio_fills_in_the_duration(db_sessions: Sessions) -> None:
    closed_at = T0 + timedelta(seconds=30)
    await apply(db_sessions, [opened(), CallClosed("call-1", closed_at, "agent_transfer")])
    await apply(db_sessions, [CallClosed("call-1", closed_at + timedelta(seconds=5), "again")])
    await apply(db_sessions, [status(9, "completed", at=closed_at + timedelta(seconds=2), duration_s=31)])
    call = await get_call(db_sessions)
    assert call.ended_at == closed_at
    assert (call.end_reason, call.status, call.duration_s) == ("agent_transfer", "completed", 31)


async def test_a_later_status_does_not_reopen_a_closed_call(db_sessions: Sessions) -> None:
    await apply(db_sessions, [opened(), status(2, "completed", duration_s=3)])
    await apply(db_sessions, [CallClosed("call-1", T0 + timedelta(seconds=60), "late")])
    call = await get_call(db_sessions)
    assert (call.end_reason, call.ended_at) == ("completed", T0 + timedelta(seconds=2))


async def test_metrics_are_upserted_and_the_last_value_wins(db_sessions: Sessions) -> None:
    await apply(db_sessions, [opened(), MetricRecord("call-1", "m", 1.0), MetricRecord("call-1", "m", 2.0)])
    await apply(db_sessions, [MetricRecord("call-1", "m", 3.0), MetricRecord("call-1", "n", 4.0)])
    async with db_sessions() as s:
        rows = (await s.execute(select(CallMetric.name, CallMetric.value).order_by(CallMetric.name))).all()
    assert [tuple(r) for r in rows] == [("m", 3.0), ("n", 4.0)]


async def test_a_turns_metric_is_its_own_row_beside_the_calls_latest(db_sessions: Sessions) -> None:
    # the session writes each turn-tagged figure twice: call-level (latest) and the turn's
    await apply(db_sessions, [opened(),
                              MetricRecord("call-1", "eos_to_audio_ms", 610.0),
                              MetricRecord("call-1", "eos_to_audio_ms", 610.0, turn_id="t1"),
                              MetricRecord("call-1", "eos_to_audio_ms", 480.0),
                              MetricRecord("call-1", "eos_to_audio_ms", 480.0, turn_id="t2")])
    await apply(db_sessions, [MetricRecord("call-1", "eos_to_audio_ms", 470.0, turn_id="t2")])
    async with db_sessions() as s:
        rows = (await s.execute(select(CallMetric.turn_id, CallMetric.value)
                                .where(CallMetric.name == "eos_to_audio_ms")
                                .order_by(CallMetric.turn_id))).all()
    assert [tuple(r) for r in rows] == [("", 480.0), ("t1", 610.0), ("t2", 470.0)]


def verdict(answered_by: str = "machine_end_beep", at: datetime = T0 + timedelta(seconds=5),
            sid: str = SID) -> AmdVerdictRecord:
    return AmdVerdictRecord(sid, answered_by, at, detection_ms=2310)


async def test_an_amd_verdict_is_stored_once_and_marks_the_call_answered(db_sessions: Sessions) -> None:
    await apply(db_sessions, [opened(), status(1, "ringing"), verdict()])
    await apply(db_sessions, [verdict("human", T0 + timedelta(seconds=9))])  # a retried callback
    async with db_sessions() as s:
        [row] = (await s.scalars(select(AmdVerdict))).all()
    assert (row.call_sid, row.answered_by, row.detection_ms, row.at) == (
        SID, "machine_end_beep", 2310, T0 + timedelta(seconds=5))
    call = await get_call(db_sessions)
    assert (call.status, call.answered_by, call.answered_at) == (
        "in-progress", "machine_end_beep", T0 + timedelta(seconds=5))
    assert call.last_status_seq == 1          # a verdict is not a status callback
    assert await count(db_sessions, CallStatusEvent) == 1


async def test_an_amd_verdict_never_moves_a_call_back(db_sessions: Sessions) -> None:
    await apply(db_sessions, [opened(), status(2, "in-progress"), status(3, "completed", duration_s=9)])
    await apply(db_sessions, [verdict(at=T0 + timedelta(seconds=8))])   # a late verdict
    call = await get_call(db_sessions)
    assert (call.status, call.answered_by, call.answered_at) == (
        "completed", "machine_end_beep", T0 + timedelta(seconds=2))
    await apply(db_sessions, [status(4, "completed", duration_s=9)])    # and after it
    assert (await get_call(db_sessions)).answered_by == "machine_end_beep"


async def test_an_amd_verdict_before_the_call_row_is_applied_when_it_opens(db_sessions: Sessions) -> None:
    await apply(db_sessions, [status(1, "ringing"), verdict("human")])
    await apply(db_sessions, [opened()])
    call = await get_call(db_sessions)
    assert (call.status, call.last_status_seq, call.answered_by) == ("in-progress", 1, "human")


async def test_calls_without_a_twilio_sid_do_not_collide(db_sessions: Sessions) -> None:
    await apply(db_sessions, [opened("a", sid=""), opened("b", sid="")])
    assert (await get_call(db_sessions, "a")).twilio_call_sid is None
    assert await count(db_sessions, Call) == 2


async def test_records_for_an_unknown_call_are_refused(db_sessions: Sessions) -> None:
    with pytest.raises(sa_exc.IntegrityError):
        await apply(db_sessions, [TurnRecord("nope", 0, "agent", "hi", 0, 1)])
    with pytest.raises(queries.UnknownCall):
        await apply(db_sessions, [CallStreamStarted("nope", "MZ", T0)])
    with pytest.raises(queries.UnknownCall):
        await apply(db_sessions, [CallClosed("nope", T0, "x")])


async def test_a_duplicate_twilio_sid_on_another_call_is_an_error(db_sessions: Sessions) -> None:
    await apply(db_sessions, [opened("a")])
    with pytest.raises(sa_exc.IntegrityError):
        await apply(db_sessions, [opened("b")])


async def test_query_functions_never_commit(db_sessions: Sessions) -> None:
    async with db_sessions() as s:
        await queries.apply_records(s, [opened(), AuditRecord("a", "system", T0)])
        await s.rollback()
    assert await count(db_sessions, Call) == 0
    assert await count(db_sessions, AuditEvent) == 0


async def test_long_free_text_fits(db_sessions: Sessions) -> None:
    reason = "protocol error: start.mediaFormat: " + "x" * 500
    sip = "sip:" + "a" * 200 + "@example.com"
    await apply(db_sessions, [
        CallOpened("call-1", "inbound", "support", "pipeline", sip, "+15550002", SID, T0),
        CallClosed("call-1", T0 + timedelta(seconds=1), reason),
    ])
    call = await get_call(db_sessions)
    assert (call.from_number, call.end_reason) == (sip, reason)


async def test_interleaved_records_of_many_calls_are_one_statement_per_kind(db_sessions: Sessions) -> None:
    # A recorder batch from concurrent calls interleaves turns, metrics and audit
    # events; writing them group by group stalled the event loop (see apply_records).
    from sqlalchemy import event

    calls = [f"call-{i}" for i in range(5)]
    await apply(db_sessions, [opened(c, sid=f"CA{i:032d}") for i, c in enumerate(calls)])
    batch: list[Record] = []
    for n in range(1, 41):
        c = calls[n % 5]
        batch += [TurnRecord(c, n, "agent", f"turn {n}", n * 100.0, n * 100.0 + 50),
                  MetricRecord(c, "late_frames", float(n)),
                  AuditRecord("disclosure_played", "agent", T0 + timedelta(seconds=n), c, {"n": n})]
    statements: list[str] = []
    async with db_sessions() as s:
        engine = s.bind.sync_engine

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", seen)
    try:
        await apply(db_sessions, batch)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements.count("INSERT") == 3  # one each for turns, metrics and audit events
    async with db_sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Turn)) == 40
        latest = {c: v for c, v in (await s.execute(select(CallMetric.call_id, CallMetric.value))).all()}
        audit = (await s.execute(select(AuditEvent.details).order_by(AuditEvent.seq))).scalars().all()
    # Each kind kept its own order: the last value per call wins; the chain is in submission order.
    assert latest == {c: float(max(n for n in range(1, 41) if calls[n % 5] == c)) for c in calls}
    assert [json.loads(d)["n"] for d in audit] == list(range(1, 41))
    async with db_sessions() as s:
        assert (await queries.verify_audit(s)).ok
