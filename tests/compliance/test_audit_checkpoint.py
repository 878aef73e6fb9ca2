"""Signed audit checkpoints: the pure signing rules, the file, the table, and who writes them."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.app import audit_checkpointer
from callagent.call.recorder import Recorder
from callagent.call.records import AuditRecord, CallOpened, Record
from callagent.compliance import checkpoint
from callagent.compliance.checkpoint import Checkpoint, CheckpointFormatError
from callagent.compliance.checkpointer import Checkpointer, CheckpointFile
from callagent.config import ConfigError, RecorderSettings, Settings, load_settings
from callagent.store import audit_queries, queries
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.store.models import AuditCheckpoint

T0 = datetime(2026, 5, 4, 9, 0, 0, tzinfo=timezone.utc)
KEY = b"test-checkpoint-key-0123456789abcdef"
HEAD = "ab" * 32
Sessions = async_sessionmaker[AsyncSession]


# ---- signing (pure) ---------------------------------------------------------------------


def test_a_signed_checkpoint_verifies_and_survives_its_json_line() -> None:
    cp = checkpoint.sign(KEY, 7, HEAD, T0)
    assert checkpoint.signature_problem(KEY, cp) is None
    line = checkpoint.to_json_line(cp)
    assert "\n" not in line
    assert json.loads(line) == {
        "v": 1, "seq": 7, "hash": HEAD, "at": "2026-05-04T09:00:00.000000+00:00",
        "key_id": checkpoint.key_id(KEY), "sig": cp.signature,
    }
    again = checkpoint.from_json_line(line)
    assert again == cp and checkpoint.signature_problem(KEY, again) is None


def test_the_signature_is_hmac_sha256_over_the_domain_and_canonical_head() -> None:
    import hashlib
    import hmac

    cp = checkpoint.sign(KEY, 7, HEAD, T0)
    message = checkpoint.DOMAIN + (
        '{"at":"2026-05-04T09:00:00.000000+00:00","hash":"' + HEAD + '","key_id":"'
        + checkpoint.key_id(KEY) + '","seq":7,"v":1}'
    ).encode()
    assert cp.signature == hmac.new(KEY, message, hashlib.sha256).hexdigest()


def test_the_time_is_signed_as_the_utc_instant() -> None:
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    assert checkpoint.sign(KEY, 7, HEAD, local) == checkpoint.sign(KEY, 7, HEAD, T0)
    with pytest.raises(ValueError, match="naive"):
        checkpoint.sign(KEY, 7, HEAD, datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 8},
        {"hash": "cd" * 32},
        {"at": T0 + timedelta(microseconds=1)},
        {"signature": "0" * 64},
    ],
    ids=["seq", "hash", "at", "signature"],
)
def test_any_altered_field_fails_the_signature(change: dict[str, object]) -> None:
    cp = checkpoint.sign(KEY, 7, HEAD, T0)
    fields = {"seq": cp.seq, "hash": cp.hash, "at": cp.at, "key_id": cp.key_id,
              "signature": cp.signature, **change}
    altered = Checkpoint(**fields)  # type: ignore[arg-type]
    assert checkpoint.signature_problem(KEY, altered) == (
        "signature does not match its content (forged or altered)"
    )


def test_another_key_is_told_apart_from_a_forgery() -> None:
    cp = checkpoint.sign(b"another-key-0123456789abcdef-0123456", 7, HEAD, T0)
    problem = checkpoint.signature_problem(KEY, cp)
    assert problem is not None and problem.startswith("signed with another key (key id ")
    assert checkpoint.key_id(KEY) in problem


def test_non_ascii_forgeries_are_reported_not_raised() -> None:
    cp = checkpoint.sign(KEY, 7, HEAD, T0)
    assert checkpoint.signature_problem(KEY, Checkpoint(7, HEAD, T0, "ключ", cp.signature))
    assert checkpoint.signature_problem(KEY, Checkpoint(7, HEAD, T0, cp.key_id, "подпись"))


def test_the_key_id_is_short_stable_and_not_the_key() -> None:
    kid = checkpoint.key_id(KEY)
    assert kid == checkpoint.key_id(KEY) and len(kid) == 16
    assert kid not in KEY.hex() and kid != checkpoint.key_id(KEY + b"x")


def test_signing_refuses_an_empty_key_and_a_non_head() -> None:
    with pytest.raises(ValueError, match="empty"):
        checkpoint.sign(b"", 1, HEAD, T0)
    with pytest.raises(ValueError, match="not a chain head"):
        checkpoint.sign(KEY, 0, HEAD, T0)
    with pytest.raises(ValueError, match="not a chain head"):
        checkpoint.sign(KEY, 1, "XYZ", T0)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("not json", "not JSON"),
        ("[1]", "expected an object"),
        ('{"seq": 1}', "expected an object with keys"),
        ('{"v":2,"seq":1,"hash":"%s","at":"2026-05-04T09:00:00+00:00","key_id":"k","sig":"%s"}'
         % (HEAD, HEAD), "unknown version"),
        ('{"v":1,"seq":true,"hash":"%s","at":"2026-05-04T09:00:00+00:00","key_id":"k","sig":"%s"}'
         % (HEAD, HEAD), "seq: expected a positive integer"),
        ('{"v":1,"seq":1,"hash":"AB","at":"2026-05-04T09:00:00+00:00","key_id":"k","sig":"%s"}'
         % HEAD, "hash: expected 64 lowercase hex"),
        ('{"v":1,"seq":1,"hash":"%s","at":"2026-05-04T09:00:00","key_id":"k","sig":"%s"}'
         % (HEAD, HEAD), "at: expected an ISO 8601 time with offset"),
    ],
)
def test_malformed_lines_are_named(line: str, error: str) -> None:
    with pytest.raises(CheckpointFormatError, match=error):
        checkpoint.from_json_line(line)


# ---- the file ---------------------------------------------------------------------------


def test_the_file_is_appended_one_line_per_checkpoint(tmp_path: Path) -> None:
    file = CheckpointFile(tmp_path / "audit" / "nested")
    cps = [checkpoint.sign(KEY, n, HEAD, T0 + timedelta(seconds=n)) for n in (1, 2, 3)]
    for cp in cps:
        file.append(cp)
    assert file.path == tmp_path / "audit" / "nested" / "checkpoints.jsonl"
    assert file.path.read_text() == "".join(checkpoint.to_json_line(cp) + "\n" for cp in cps)
    assert [(line.number, line.checkpoint) for line in file.lines()] == list(enumerate(cps, 1))


def test_reading_names_bad_lines_and_a_torn_last_line(tmp_path: Path) -> None:
    file = CheckpointFile(tmp_path)
    assert list(file.lines()) == []  # no file yet
    good = checkpoint.to_json_line(checkpoint.sign(KEY, 1, HEAD, T0))
    file.path.write_text(f"garbage\n{good}\n{good[:20]}")
    lines = list(file.lines())
    assert [(ln.number, ln.checkpoint is not None, ln.torn) for ln in lines] == [
        (1, False, False), (2, True, False), (3, False, True)
    ]
    assert lines[0].error is not None and lines[0].error.startswith("not JSON")


# ---- the table ----------------------------------------------------------------------------


async def test_checkpoints_round_trip_through_the_table(db_sessions: Sessions) -> None:
    cps = [checkpoint.sign(KEY, n, HEAD, T0 + timedelta(microseconds=n)) for n in (1, 2, 3)]
    async with db_sessions.begin() as s:
        for cp in cps:
            await audit_queries.add_checkpoint(s, cp)
    async with db_sessions() as s:
        stored = [item async for item in audit_queries.stored_checkpoints(s, chunk_size=2)]
    assert stored == list(enumerate(cps, 1))
    assert all(checkpoint.signature_problem(KEY, cp) is None for _, cp in stored)


@pytest.mark.parametrize(
    "sql", ["UPDATE audit_checkpoints SET seq = 99", "DELETE FROM audit_checkpoints",
            "TRUNCATE audit_checkpoints"]
)
async def test_postgres_refuses_to_change_checkpoints(pg_db_url: str, sql: str) -> None:
    engine = create_engine_for(pg_db_url)
    try:
        sessions = make_sessionmaker(engine)
        async with sessions.begin() as s:
            await audit_queries.add_checkpoint(s, checkpoint.sign(KEY, 1, HEAD, T0))
        with pytest.raises(sa_exc.DBAPIError, match="audit_checkpoints is append-only"):
            async with sessions.begin() as s:
                await s.execute(text(sql))
        async with sessions() as s:
            assert len((await s.scalars(select(AuditCheckpoint))).all()) == 1
    finally:
        await engine.dispose()


# ---- the checkpointer ---------------------------------------------------------------------


async def append(sessions: Sessions, n: int, start: int = 0) -> tuple[int, str]:
    async with sessions.begin() as s:
        await queries.append_audit(s, [
            AuditRecord("transcript.viewed", "operator:7", T0 + timedelta(seconds=start + i), "c1",
                        {"n": start + i}) for i in range(n)])
        head = await queries.audit_head(s)
    assert head is not None
    return head


async def stored(sessions: Sessions) -> list[Checkpoint]:
    async with sessions() as s:
        return [cp async for _, cp in audit_queries.stored_checkpoints(s)]


async def test_the_checkpointer_signs_the_head_into_the_file_and_the_table(
    db_sessions: Sessions, tmp_path: Path
) -> None:
    cpr = Checkpointer(db_sessions, KEY, tmp_path / "audit", now=lambda: T0)
    assert await cpr.checkpoint() is None  # an empty log has nothing to sign
    head = await append(db_sessions, 5)
    cp = await cpr.checkpoint()
    assert cp is not None and (cp.seq, cp.hash, cp.at) == (*head, T0)
    assert checkpoint.signature_problem(KEY, cp) is None
    assert await cpr.checkpoint() is None  # the same head is not signed twice
    assert [line.checkpoint for line in cpr.file.lines()] == [cp]
    assert await stored(db_sessions) == [cp]


async def test_the_file_still_gets_the_checkpoint_when_the_table_refuses_it(
    db_sessions: Sessions, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await append(db_sessions, 2)
    async with db_sessions.begin() as s:
        await s.execute(text("DROP TABLE audit_checkpoints CASCADE" if
                             s.get_bind().dialect.name == "postgresql" else
                             "DROP TABLE audit_checkpoints"))
    cpr = Checkpointer(db_sessions, KEY, tmp_path)
    with caplog.at_level(logging.ERROR):
        cp = await cpr.checkpoint()
    assert cp is not None and [line.checkpoint for line in cpr.file.lines()] == [cp]
    assert "could not store it in audit_checkpoints" in caplog.text


async def test_commits_are_checkpointed_at_most_once_per_interval(
    db_sessions: Sessions, tmp_path: Path
) -> None:
    cpr = Checkpointer(db_sessions, KEY, tmp_path, interval_s=0.3)
    await append(db_sessions, 1)
    cpr.audit_committed()
    await wait_until(lambda: cpr.written == 1)
    started = time.monotonic()
    for i in range(5):  # a burst: one more checkpoint, an interval after the first
        head = await append(db_sessions, 1, start=i + 1)
        cpr.audit_committed()
    await wait_until(lambda: cpr.written == 2)
    assert time.monotonic() - started >= 0.25
    await asyncio.sleep(0.4)
    assert cpr.written == 2  # nothing new committed, nothing signed
    assert (await stored(db_sessions))[-1].seq == head[0]
    await cpr.close()
    assert cpr.written == 2  # the head was already signed


async def test_close_writes_a_final_checkpoint(db_sessions: Sessions, tmp_path: Path) -> None:
    cpr = Checkpointer(db_sessions, KEY, tmp_path, interval_s=3600)
    await append(db_sessions, 1)
    cpr.audit_committed()
    await wait_until(lambda: cpr.written == 1)
    head = await append(db_sessions, 3, start=1)
    cpr.audit_committed()  # an hour to go before the next one...
    await cpr.close()  # ...but closing signs the head now
    assert cpr.written == 2 and (await stored(db_sessions))[-1].seq == head[0] == 4
    cpr.audit_committed()  # ignored after close
    assert cpr.written == 2


async def test_close_lets_a_write_in_progress_finish(db_sessions: Sessions, tmp_path: Path) -> None:
    writing = asyncio.Event()

    class Slow(Checkpointer):
        async def checkpoint(self) -> Checkpoint | None:
            writing.set()
            await asyncio.sleep(0.2)
            return await super().checkpoint()

    cpr = Slow(db_sessions, KEY, tmp_path)
    head = await append(db_sessions, 2)
    cpr.audit_committed()
    await writing.wait()
    await cpr.close()  # not cancelled mid-write; the final one finds the head signed
    assert cpr.written == 1 and [(cp.seq, cp.hash) for cp in await stored(db_sessions)] == [head]


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# ---- the recorder drives it -----------------------------------------------------------


class FakeCheckpointer:
    def __init__(self) -> None:
        self.committed = 0
        self.closed = 0

    def audit_committed(self) -> None:
        self.committed += 1

    async def close(self) -> None:
        self.closed += 1


def recorder_settings(tmp_path: Path) -> RecorderSettings:
    return RecorderSettings(queue_size=64, batch_size=4, flush_interval_ms=10,
                            retry_interval_ms=100, journal_dir=str(tmp_path / "journal"))


async def test_the_recorder_tells_the_checkpointer_after_audit_commits_only(
    db_sessions: Sessions, tmp_path: Path
) -> None:
    fake = FakeCheckpointer()
    rec = Recorder(db_sessions, recorder_settings(tmp_path), checkpointer=fake)
    opened: Record = CallOpened("call-1", "inbound", "support", "fixture", "+15550001",
                                "+15550002", "CA" + "1" * 32, T0)
    async with rec:
        rec.submit(opened)
        await wait_until(lambda: rec.written == 1)
        assert fake.committed == 0  # no audit record in that batch
        rec.submit(AuditRecord("call.received", "twilio", T0, "call-1", {}))
        await wait_until(lambda: fake.committed == 1)
    assert fake.closed == 1


async def test_the_recorder_checkpoints_audit_writes_and_signs_the_final_head(
    db_sessions: Sessions, tmp_path: Path
) -> None:
    cpr = Checkpointer(db_sessions, KEY, tmp_path / "audit", interval_s=3600)
    rec = Recorder(db_sessions, recorder_settings(tmp_path), checkpointer=cpr)
    async with rec:
        for i in range(10):
            rec.submit(AuditRecord("transcript.viewed", "operator:1", T0, None, {"i": i}))
        await wait_until(lambda: cpr.written == 1)  # the first one at once
    async with db_sessions() as s:
        head = await queries.audit_head(s)
    final = await stored(db_sessions)
    assert head == (10, final[-1].hash) and final[-1].seq == 10
    assert [line.checkpoint for line in cpr.file.lines()] == final


# ---- settings and wiring --------------------------------------------------------------------


ENV = {"CALLAGENT_TWILIO_AUTH_TOKEN": "t"}


def test_the_key_comes_only_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[audit]\ncheckpoint_key = "x"\n')
    with pytest.raises(ConfigError, match="audit.checkpoint_key: is a secret"):
        load_settings(path, ENV)
    path.write_text('[audit]\ncheckpoint_dir = "/srv/audit"\ncheckpoint_interval_s = 5\n')
    s = load_settings(path, {**ENV, "CALLAGENT_AUDIT_CHECKPOINT_KEY": KEY.decode()})
    assert (s.audit.checkpoint_dir, s.audit.checkpoint_interval_s) == ("/srv/audit", 5.0)
    assert s.audit.checkpoint_key == KEY.decode()


def test_shipped_defaults_have_no_key(tmp_path: Path) -> None:
    from callagent.store.db import PROJECT_ROOT

    s = load_settings(PROJECT_ROOT / "config" / "callagent.toml", ENV)
    assert (s.audit.checkpoint_dir, s.audit.checkpoint_interval_s, s.audit.checkpoint_key) == (
        "var/audit", 60.0, "")


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"CALLAGENT_AUDIT_CHECKPOINT_KEY": "too-short"}, "at least 32 characters"),
        ({"CALLAGENT_AUDIT_CHECKPOINT_INTERVAL_S": "-1"}, "audit.checkpoint_interval_s"),
        ({"CALLAGENT_AUDIT_CHECKPOINT_INTERVAL_S": "nan"}, "audit.checkpoint_interval_s"),
    ],
)
def test_bad_audit_settings_are_refused(tmp_path: Path, env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_settings(tmp_path / "none.toml", {**ENV, **env})


def test_offline_tools_need_no_twilio_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="twilio.auth_token"):
        load_settings(tmp_path / "none.toml", {})
    assert load_settings(tmp_path / "none.toml", {}, for_service=False).twilio.auth_token == ""


async def test_the_app_warns_when_checkpoints_are_off(
    db_sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert audit_checkpointer(Settings(), db_sessions) is None
    assert "AUDIT CHECKPOINTS ARE OFF" in caplog.text
    assert "newest rows cannot be detected" in caplog.text


async def test_the_app_checkpoints_when_the_key_is_set(
    tmp_path: Path, db_sessions: Sessions
) -> None:
    settings = load_settings(tmp_path / "none.toml",
                             {**ENV, "CALLAGENT_AUDIT_CHECKPOINT_KEY": KEY.decode()})
    assert isinstance(audit_checkpointer(settings, db_sessions), Checkpointer)


async def test_the_service_checkpoints_audit_writes_and_signs_the_head_at_shutdown(
    db_url: str, db_sessions: Sessions, tmp_path: Path
) -> None:
    from callagent.app import create_app
    from callagent.config import AuditSettings, DatabaseSettings, TwilioSettings

    await append(db_sessions, 3)
    settings = Settings(
        twilio=TwilioSettings(auth_token="t"),
        database=DatabaseSettings(url=db_url),
        recorder=recorder_settings(tmp_path),
        audit=AuditSettings(checkpoint_dir=str(tmp_path / "audit"), checkpoint_interval_s=3600,
                            checkpoint_key=KEY.decode()),
    )
    app = create_app(settings)
    file = CheckpointFile(tmp_path / "audit")
    async with app.router.lifespan_context(app):
        # The start's own event (config.loaded, seq 4) is signed after its commit.
        await wait_until(lambda: len(list(file.lines())) == 1)
        recorder = app.state.services.recorder
        for i in range(3):
            recorder.submit(AuditRecord("recording.played", "operator:2", T0, None, {"i": i}))
    signed = [line.checkpoint for line in file.lines()]
    assert [cp.seq for cp in signed if cp is not None] == [4, 7]  # the last one at shutdown
    assert await stored(db_sessions) == signed
