"""The recorder never blocks, writes in batches, and loses nothing when the database stops.

Outages are real: PostgreSQL is reached through a TCP proxy that is shut down
(every connection cut) and started again; SQLite is locked by another process
holding an exclusive transaction, so writers get "database is locked".
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from callagent.call.recorder import Recorder, RecorderClosed
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
    record_to_json,
)
from callagent.config import RecorderSettings
from callagent.store import queries
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.store.models import (
    AmdVerdict,
    AuditEvent,
    Call,
    CallMetric,
    CallStatusEvent,
    ToolCall,
    Turn,
)
from tests.outage import Outage, PgOutage

T0 = datetime(2026, 5, 4, 9, 0, 0, tzinfo=timezone.utc)


def settings(tmp_path: Path, **kw: int) -> RecorderSettings:
    values = {"queue_size": 64, "batch_size": 16, "flush_interval_ms": 20, "retry_interval_ms": 100}
    values.update(kw)
    return RecorderSettings(journal_dir=str(tmp_path / "journal"), **values)


def journal_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "journal").glob("recorder-*.jsonl"))


async def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


# ---- a call's worth of records ----------------------------------------------------------


def one_call(n: int, turns: int) -> list[Record]:
    call_id, sid = f"call-{n}", f"CA{n:032d}"
    at = T0 + timedelta(minutes=n)
    out: list[Record] = [
        CallOpened(call_id, "inbound", "support", "pipeline", "+15550001", f"+1555100{n:04d}", sid, at),
        AuditRecord("call.received", "twilio", at, call_id, {"sid": sid}),
        CallStatusChanged(sid, "ringing", 1, at),
        CallStreamStarted(call_id, f"MZ{n:032d}", at + timedelta(seconds=1)),
        CallStatusChanged(sid, "in-progress", 2, at + timedelta(seconds=1)),
        AuditRecord("call.answered", "system", at + timedelta(seconds=1), call_id, {"n": n}),
        AmdVerdictRecord(sid, "human", at + timedelta(seconds=3), detection_ms=None if n % 2 else 2000 + n),
    ]
    for i in range(turns):
        out.append(TurnRecord(call_id, i, "caller" if i % 2 else "agent", f"call {n} turn {i}",
                              i * 2000.0, i * 2000.0 + 1500, interrupted=i % 5 == 4,
                              heard_text="partial" if i % 5 == 4 else None, response_latency_ms=400.0 + i))
        if i % 6 == 3:
            out.append(ToolCallRecord(call_id, f"tc-{i}", "lookup", json.dumps({"i": i}), "{}", "ok",
                                      at + timedelta(seconds=i), 12.5))
            out.append(AuditRecord("tool.called", "agent", at + timedelta(seconds=i), call_id, {"i": i}))
        if i % 4 == 0:
            out.append(MetricRecord(call_id, f"latency_p{i % 3}", float(i)))
            out.append(MetricRecord(call_id, f"latency_p{i % 3}", float(i), turn_id=f"t{i}"))
    end = at + timedelta(seconds=turns * 2 + 5)
    out += [
        CallClosed(call_id, end, "caller_hangup"),
        AuditRecord("call.ended", "system", end, call_id, {"reason": "caller_hangup"}),
        CallStatusChanged(sid, "completed", 3, end, duration_s=turns * 2 + 4),
    ]
    return out


def interleaved_calls(n_calls: int = 3, turns: int = 40) -> list[Record]:
    """Several calls at once, as one process's recorder sees them (each call in order)."""
    calls = [one_call(n, turns) for n in range(n_calls)]
    out: list[Record] = []
    for i in range(max(len(c) for c in calls)):
        out += [c[i] for c in calls if i < len(c)]
    return out


async def assert_written_exactly_once(url: str, records: Sequence[Record]) -> None:
    engine = create_engine_for(url)
    try:
        async with make_sessionmaker(engine)() as s:
            calls = (await s.scalars(select(Call))).all()
            turns = sorted((t.call_id, t.seq, t.text) for t in (await s.scalars(select(Turn))).all())
            tools = sorted((t.call_id, t.tool_call_id) for t in (await s.scalars(select(ToolCall))).all())
            metrics = {(m.call_id, m.name, m.turn_id): m.value
                       for m in (await s.scalars(select(CallMetric))).all()}
            verdicts = sorted((v.call_sid, v.answered_by, v.detection_ms)
                              for v in (await s.scalars(select(AmdVerdict))).all())
            statuses = sorted((e.call_sid, e.sequence)
                              for e in (await s.scalars(select(CallStatusEvent))).all())
            audits = [(a.action, a.call_id, json.loads(a.details))
                      for a in (await s.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all()]
            chain = await queries.verify_audit(s)
    finally:
        await engine.dispose()
    expected_metrics: dict[tuple[str, str, str], float] = {}
    for r in records:
        if isinstance(r, MetricRecord):
            expected_metrics[(r.call_id, r.name, r.turn_id)] = r.value
    assert sorted(c.id for c in calls) == sorted(r.call_id for r in records if isinstance(r, CallOpened))
    assert turns == sorted((r.call_id, r.seq, r.text) for r in records if isinstance(r, TurnRecord))
    assert tools == sorted((r.call_id, r.tool_call_id) for r in records if isinstance(r, ToolCallRecord))
    assert metrics == expected_metrics
    assert verdicts == sorted((r.twilio_call_sid, r.answered_by, r.detection_ms)
                              for r in records if isinstance(r, AmdVerdictRecord))
    assert statuses == sorted((r.twilio_call_sid, r.sequence)
                              for r in records if isinstance(r, CallStatusChanged))
    # exactly once and in submission order
    assert audits == [(r.action, r.call_id, r.details) for r in records if isinstance(r, AuditRecord)]
    assert chain.ok, chain.reason
    for c in calls:
        if any(isinstance(r, CallClosed) and r.call_id == c.id for r in records):
            assert (c.status, c.end_reason, c.ended_at is not None) == ("completed", "caller_hangup", True)


# ---- outages ---------------------------------------------------------------------------


# ---- tests --------------------------------------------------------------------------------


async def test_submit_never_blocks_even_far_past_the_queue_size(db_url: str, tmp_path: Path) -> None:
    engine = create_engine_for(db_url)
    rec = Recorder(make_sessionmaker(engine), settings(tmp_path, queue_size=50, batch_size=20))
    records = [AuditRecord("transcript.viewed", "operator:1", T0, None, {"n": i}) for i in range(500)]
    try:
        rec.start()
        for r in records:  # no await in between: a submit that waited would never return
            rec.submit(r)
        assert rec.queue_depth == 500 and rec.overflowed == 450
        await rec.close()
    finally:
        await rec.close()
        await engine.dispose()
    assert rec.journaled >= 450  # the overflow was spilled to disk, then replayed
    assert rec.written + rec.replayed == 500 and rec.rejected == 0
    assert journal_files(tmp_path) == []
    await assert_written_exactly_once(db_url, records)


async def test_records_are_written_in_batches_and_flushed_on_the_interval(
    db_url: str, tmp_path: Path
) -> None:
    engine = create_engine_for(db_url)
    rec = Recorder(make_sessionmaker(engine), settings(tmp_path, batch_size=10, flush_interval_ms=50))
    records = interleaved_calls(1, 20)
    assert len(records) > 25
    try:
        rec.start()
        for r in records[:25]:
            rec.submit(r)
        await wait_until(lambda: rec.written == 25, 10)
        assert rec.batches == 3  # 10 + 10 + 5, one transaction each
        for r in records[25:]:
            rec.submit(r)
        await wait_until(lambda: rec.written == len(records), 10, "the interval flush")  # no close()
        assert rec.journaled == 0 and journal_files(tmp_path) == []
    finally:
        await rec.close()
        await engine.dispose()
    await assert_written_exactly_once(db_url, records)


async def test_the_database_stops_mid_call_and_nothing_is_lost(outage: Outage, tmp_path: Path) -> None:
    records = interleaved_calls(3, 40)
    engine = outage.recorder_engine()
    rec = Recorder(make_sessionmaker(engine), settings(tmp_path), write_timeout_s=10)
    third = len(records) // 3
    try:
        rec.start()
        for i, r in enumerate(records):
            if i == third:
                await wait_until(lambda: rec.written == third, what="writes before the outage")
                await outage.down()
            if i == 2 * third:
                await wait_until(lambda: rec.journal_pending, what="the journal")
                assert journal_files(tmp_path) and rec.written >= third
                await outage.up()
            rec.submit(r)
            await asyncio.sleep(0.002)
        await wait_until(lambda: not rec.journal_pending and rec.queue_depth == 0, what="the replay")
        await rec.close()
    finally:
        await rec.close()
        await engine.dispose()
    assert rec.journaled >= third and rec.replayed >= rec.journaled and rec.rejected == 0
    assert rec.written + rec.journaled == len(records)
    assert journal_files(tmp_path) == []
    await assert_written_exactly_once(outage.direct_url, records)


async def test_closing_while_the_database_is_down_keeps_the_journal_for_the_next_start(
    outage: Outage, tmp_path: Path
) -> None:
    records = interleaved_calls(2, 10)
    engine = outage.recorder_engine()
    rec = Recorder(make_sessionmaker(engine), settings(tmp_path))
    try:
        rec.start()
        await outage.down()
        for r in records:
            rec.submit(r)
        started = time.monotonic()
        await rec.close()
        assert time.monotonic() - started < 10
        with pytest.raises(RecorderClosed):
            rec.submit(records[0])
    finally:
        await rec.close()
        await engine.dispose()
    assert rec.journaled == len(records) and rec.written == 0
    assert len(journal_files(tmp_path)) == 1

    await outage.up()
    engine = create_engine_for(outage.direct_url)
    rec = Recorder(make_sessionmaker(engine), settings(tmp_path))
    try:
        async with rec:
            await wait_until(lambda: not rec.journal_pending, what="the replay")
    finally:
        await engine.dispose()
    assert rec.replayed == len(records)
    assert journal_files(tmp_path) == []
    await assert_written_exactly_once(outage.direct_url, records)


CRASHER = """
import asyncio, json, sys
from callagent.call.recorder import Recorder
from callagent.call.records import record_from_json
from callagent.config import RecorderSettings
from callagent.store.db import create_engine_for, make_sessionmaker

async def main() -> None:
    records_path, journal_dir = sys.argv[1:3]
    engine = create_engine_for("postgresql+psycopg://postgres@127.0.0.1:1/unreachable")
    rec = Recorder(make_sessionmaker(engine), RecorderSettings(
        queue_size=1000, batch_size=7, flush_interval_ms=5, journal_dir=journal_dir,
        retry_interval_ms=3_600_000))
    rec.start()
    records = [record_from_json(json.loads(line)) for line in open(records_path)]
    for r in records:
        rec.submit(r)
    while rec.journaled < len(records):
        await asyncio.sleep(0.01)
    print("journaled", flush=True)
    await asyncio.sleep(3600)  # killed here

asyncio.run(main())
"""


async def test_a_journal_left_by_a_dead_process_is_replayed_on_start(db_url: str, tmp_path: Path) -> None:
    records = interleaved_calls(2, 12)
    records_path = tmp_path / "records.jsonl"
    records_path.write_text("".join(json.dumps(record_to_json(r)) + "\n" for r in records))
    journal_dir = tmp_path / "journal"
    crasher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHER, str(records_path), str(journal_dir),
        stdout=asyncio.subprocess.PIPE)
    engine = create_engine_for(db_url)
    try:
        assert crasher.stdout is not None
        line = await asyncio.wait_for(crasher.stdout.readline(), 60)
        assert line == b"journaled\n"
        [journal] = journal_files(tmp_path)

        # while its process lives, a journal is not anyone else's to replay
        async with Recorder(make_sessionmaker(engine), settings(tmp_path)) as live:
            await asyncio.sleep(0.2)
            assert not live.journal_pending and live.replayed == 0
        assert journal.exists()

        crasher.kill()
        await crasher.communicate()
        with journal.open("ab") as f:  # the crash also tore a half-written line
            f.write(b'{"id":"torn","start":0,"records":[{"kind":"tu')

        async with Recorder(make_sessionmaker(engine), settings(tmp_path)) as rec:
            await wait_until(lambda: not rec.journal_pending, what="the replay")
        assert rec.replayed == len(records)
    finally:
        if crasher.returncode is None:
            crasher.kill()
            await crasher.communicate()
        await engine.dispose()
    assert journal_files(tmp_path) == []
    [kept] = (journal_dir / "rejected.jsonl").read_text().splitlines()
    assert json.loads(kept)["error"] == "torn journal line"
    await assert_written_exactly_once(db_url, records)


async def test_replaying_a_batch_that_was_already_committed_adds_nothing(
    db_url: str, tmp_path: Path
) -> None:
    """The commit reached the database but its acknowledgement did not: the batch was
    journaled anyway. Its replay must add nothing (audit events carry their key)."""
    records = interleaved_calls(1, 6)
    engine = create_engine_for(db_url)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions.begin() as s:
            await queries.apply_records(s, records, keys=[f"b1:{i}" for i in range(len(records))])
        journal = tmp_path / "journal" / "recorder-0123.jsonl"
        journal.parent.mkdir()
        line = {"id": "b1", "start": 0, "records": [record_to_json(r) for r in records]}
        journal.write_text(json.dumps(line) + "\n")
        async with Recorder(sessions, settings(tmp_path)) as rec:
            await wait_until(lambda: not rec.journal_pending, what="the replay")
        assert rec.replayed == len(records)
    finally:
        await engine.dispose()
    assert not journal.exists()
    await assert_written_exactly_once(db_url, records)


async def test_a_refused_record_is_kept_aside_and_the_rest_is_written(db_url: str, tmp_path: Path) -> None:
    records = interleaved_calls(1, 6)
    orphan = TurnRecord("no-such-call", 0, "agent", "lost?", 0, 1)
    engine = create_engine_for(db_url)
    try:
        async with Recorder(make_sessionmaker(engine), settings(tmp_path, batch_size=100)) as rec:
            for r in records[:5]:
                rec.submit(r)
            rec.submit(orphan)
            for r in records[5:]:
                rec.submit(r)
    finally:
        await engine.dispose()
    assert (rec.rejected, rec.written) == (1, len(records))
    [kept] = (tmp_path / "journal" / "rejected.jsonl").read_text().splitlines()
    assert json.loads(kept)["record"]["call_id"] == "no-such-call"
    await assert_written_exactly_once(db_url, records)


async def test_with_the_journal_unwritable_too_records_wait_in_memory(
    outage: Outage, tmp_path: Path
) -> None:
    records = interleaved_calls(1, 8)
    (tmp_path / "journal").write_text("not a directory")
    engine = outage.recorder_engine()
    rec = Recorder(make_sessionmaker(engine), settings(tmp_path))
    try:
        rec.start()
        await outage.down()
        for r in records:
            rec.submit(r)
        await wait_until(lambda: rec.queue_depth == 0 and rec.journal_pending, what="the backlog")
        assert rec.journaled == 0
        await outage.up()
        await wait_until(lambda: not rec.journal_pending, what="the replay")
        await rec.close()
    finally:
        await rec.close()
        await engine.dispose()
    assert rec.replayed == len(records)
    await assert_written_exactly_once(outage.direct_url, records)


async def test_a_database_that_stops_answering_times_out_into_the_journal(
    pg_db_url: str, tmp_path: Path
) -> None:
    """Connections stay open but nothing comes back: the write times out, psycopg cancels
    and drops the connection, the batch is journaled and replayed when the network heals."""
    outage = PgOutage(pg_db_url)
    await outage.open()
    engine = outage.recorder_engine()
    rec = Recorder(make_sessionmaker(engine), settings(tmp_path), write_timeout_s=1)
    records = interleaved_calls(2, 20)
    half = len(records) // 2
    try:
        rec.start()
        for i, r in enumerate(records):
            if i == half:
                await wait_until(lambda: rec.written == half, what="writes before the partition")
                outage.proxy.frozen = True
            rec.submit(r)
            await asyncio.sleep(0.002)
        await wait_until(lambda: rec.journal_pending, what="the journal")
        outage.proxy.frozen = False
        await wait_until(lambda: not rec.journal_pending and rec.queue_depth == 0, what="the replay")
        await rec.close()
    finally:
        await rec.close()
        await engine.dispose()
        await outage.aclose()
    assert rec.journaled > 0 and rec.rejected == 0
    await assert_written_exactly_once(pg_db_url, records)


def test_what_counts_as_the_database_being_unavailable() -> None:
    import psycopg.errors
    from sqlalchemy import exc as sa_exc

    from callagent.call.recorder import is_unavailable

    def wrap(cls: type[sa_exc.DBAPIError], orig: Exception) -> sa_exc.DBAPIError:
        return cls("INSERT ...", {}, orig)

    assert is_unavailable(wrap(sa_exc.OperationalError, Exception("database is locked")))
    assert is_unavailable(wrap(sa_exc.InterfaceError, Exception("connection closed")))
    assert is_unavailable(TimeoutError())
    assert is_unavailable(ConnectionRefusedError())
    assert is_unavailable(wrap(sa_exc.ProgrammingError, psycopg.errors.UndefinedTable("no calls")))
    # the data, not the database: retried record by record, then kept aside
    assert not is_unavailable(wrap(sa_exc.IntegrityError, Exception("FOREIGN KEY constraint failed")))
    assert not is_unavailable(wrap(sa_exc.DataError, Exception("value too long")))
    assert not is_unavailable(wrap(sa_exc.ProgrammingError, psycopg.errors.SyntaxError("bad")))
    assert not is_unavailable(ValueError("naive datetime"))
