"""The dialer against the fake Twilio REST server: idempotent attempts, reconciliation, the cap,
and several dialer PROCESSES on PostgreSQL (one of them killed) without a double dial."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.campaigns import store
from callagent.campaigns.dialer import Dialer
from callagent.campaigns.eligibility import DncList
from callagent.campaigns.store import AttemptStatus, ContactState
from callagent.sim.twilio_rest import FakeTwilioRest, Outcome
from callagent.store.db import PROJECT_ROOT, create_engine_for, make_sessionmaker, sync_url
from callagent.store.models import AuditEvent, CallAttempt, CallStatusEvent, Campaign, Contact
from callagent.telephony.twilio.rest import TwilioRest
from tests.campaigns.test_store import make_spec, noon_zone, number, seed

ACCOUNT = "AC" + "0" * 32
TOKEN = "test-token"
ORIGIN = "https://agent.example.com"


class StatusSink:
    """Writes the fake's status callbacks to call_status_events, as /twilio/status would."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(sync_url(url), pool_size=2)

    def __call__(self, params: Mapping[str, str]) -> None:
        if params["CallStatus"] not in store.TERMINAL_CALL_STATUSES:
            return      # the dialer needs the final one; one commit per call keeps the fake fast
        duration = params.get("CallDuration")
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SET LOCAL synchronous_commit = off"))
            conn.execute(insert(CallStatusEvent).values(
                call_sid=params["CallSid"], sequence=int(params["SequenceNumber"]),
                status=params["CallStatus"], at=datetime.now(UTC),
                duration_s=int(duration) if duration else None,
                answered_by=params.get("AnsweredBy")))

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def sink_for() -> Iterator[list[StatusSink]]:
    sinks: list[StatusSink] = []
    yield sinks
    for sink in sinks:
        sink.close()


def public_url(path: str) -> str:
    return ORIGIN + path


async def summary(sessions: async_sessionmaker[AsyncSession]) -> tuple[
        dict[str, int], list[CallAttempt]]:
    async with sessions() as s:
        by_state = dict((await s.execute(
            select(Contact.state, func.count()).group_by(Contact.state))).all())
        attempts = list(await s.scalars(select(CallAttempt).order_by(CallAttempt.id)))
    return {str(k): int(v) for k, v in by_state.items()}, attempts


def assert_accounted(
    fake: FakeTwilioRest, by_state: dict[str, int], attempts: list[CallAttempt], contacts: int,
) -> None:
    """Zero double dials, every create is a recorded attempt, every contact finished."""
    per_key = fake.creates_per_key()
    dups = {k: [(c.sid, c.created_at.isoformat()) for c in fake.creates if c.idempotency_key == k]
            for k, n in per_key.items() if n > 1}
    assert not dups, dups
    dialed = {a.idempotency_key: a for a in attempts if a.call_sid is not None}
    assert set(per_key) == set(dialed)
    assert {c.sid for c in fake.creates} == {a.call_sid for a in dialed.values()}
    assert set(by_state) <= {ContactState.DONE, ContactState.SKIPPED}
    assert sum(by_state.values()) == contacts
    assert all(a.status in (AttemptStatus.ENDED, AttemptStatus.SKIPPED, AttemptStatus.FAILED)
               for a in attempts)
    assert all(a.skip_reason for a in attempts if a.status == AttemptStatus.SKIPPED)


# --- in-process: one dialer, SQLite -------------------------------------------------------------

async def test_one_dialer_on_sqlite_calls_skips_and_retries(
    sqlite_db_url: str, sink_for: list[StatusSink],
) -> None:
    now = datetime.now(UTC)
    sink = StatusSink(sqlite_db_url)
    sink_for.append(sink)
    busy, machine, rejected = number(3), number(4), number(5)
    engine = create_engine_for(sqlite_db_url)
    sessions = make_sessionmaker(engine)
    try:
        cid = await seed(sessions, 30, zone=noon_zone(now), now=now, no_consent=[1],
                         spec=make_spec(cap=3, max_attempts=2, retry_s=0.2))
        async with sessions.begin() as s:
            await store.add_dnc(s, [number(2)], DncList.INTERNAL, now=now)
        fake = FakeTwilioRest(sink=sink, outcomes={busy: Outcome.BUSY, machine: Outcome.MACHINE},
                              rejects=frozenset({rejected}), duration_s=(0.01, 0.05))
        with fake:
            async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
                dialer = Dialer(sessions, rest, public_url, worker="solo",
                                lease=timedelta(seconds=5), batch_size=5, poll_interval_s=0.02,
                                rest_timeout_s=1.0)
                await asyncio.wait_for(dialer.run(asyncio.Event(), until_idle=True), 30)
        by_state, attempts = await summary(sessions)
        async with sessions() as s:
            dnc_hits = (await s.execute(
                select(AuditEvent).where(AuditEvent.action == "dnc.hit"))).scalars().all()
            finished = (await s.execute(
                select(AuditEvent).where(AuditEvent.action == "campaign.finished"))).scalars().all()
            state = await s.scalar(select(Campaign.state).where(Campaign.id == cid))
    finally:
        await engine.dispose()
    assert_accounted(fake, by_state, attempts, 30)
    assert by_state == {"done": 28, "skipped": 2}
    # The do-not-call hit is audited, without the number.
    assert [json.loads(h.details)["lists"] for h in dnc_hits] == [["internal_dnc"]]
    assert number(2) not in dnc_hits[0].details
    # Every contact done or skipped: the campaign finished by itself, once, audited.
    assert state == "finished" and len(finished) == 1
    assert fake.max_in_progress[str(cid)] <= 3
    skipped = {a.e164: a.skip_reason for a in attempts if a.status == AttemptStatus.SKIPPED}
    assert skipped == {number(1): "no_consent", number(2): "internal_dnc"}
    outcomes = [(a.e164, a.attempt_no, a.outcome) for a in attempts
                if a.e164 in (busy, machine, rejected)]
    assert sorted(outcomes) == [(busy, 1, "busy"), (busy, 2, "busy"),
                                (machine, 1, "voicemail"), (machine, 2, "voicemail"),
                                (rejected, 1, "failed"), (rejected, 2, "failed")]
    first = fake.creates[0]
    assert first.form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert (first.one("MachineDetection"), first.one("AsyncAmd"), first.one("Timeout")) == (
        "DetectMessageEnd", "true", "30")
    amd_url = urlsplit(first.one("AsyncAmdStatusCallback"))
    assert f"{amd_url.scheme}://{amd_url.netloc}{amd_url.path}" == ORIGIN + "/twilio/amd"
    assert dict(parse_qsl(amd_url.query, keep_blank_values=True)) == {
        "campaign": str(cid), "attempt": first.idempotency_key, "voicemail": "hang_up",
        "message": ""}
    assert first.one("StatusCallback") == ORIGIN + "/twilio/status"
    assert first.one("Url").startswith(ORIGIN + "/twilio/voice?call_id=")
    assert first.query["agent"] == "fixture" and first.query["campaign"] == str(cid)


# --- reconciliation ------------------------------------------------------------------------------

@pytest.mark.parametrize("created_before_crash", [True, False])
async def test_an_attempt_left_placing_is_reconciled_not_redialed(
    db_url: str, sink_for: list[StatusSink], created_before_crash: bool,
) -> None:
    now = datetime.now(UTC)
    clock = [now]
    sink = StatusSink(db_url)
    sink_for.append(sink)
    engine = create_engine_for(db_url)
    sessions = make_sessionmaker(engine)
    try:
        await seed(sessions, 1, zone=noon_zone(now), now=now)
        with FakeTwilioRest(sink=sink, duration_s=(0.01, 0.02)) as fake:
            async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
                async with sessions.begin() as s:    # the dead dialer's claim and attempt
                    [campaign] = await store.running_campaigns(s)
                    [c] = await store.claim_due_contacts(s, campaign.id, 1, worker="dead",
                                                         now=now, lease=timedelta(seconds=10),
                                                         limit=1)
                    attempt = await store.begin_attempt(s, c.id, worker="dead", now=now,
                                                        lease=timedelta(seconds=10))
                if created_before_crash:             # ... it died after Twilio created the call
                    await rest.place_call(to=c.e164, from_=campaign.spec.caller_id,
                                          url=f"{ORIGIN}/twilio/voice?attempt="
                                              f"{attempt.idempotency_key}&campaign={campaign.id}",
                                          status_callback=ORIGIN + "/twilio/status")
                dialer = Dialer(sessions, rest, public_url, worker="b",
                                lease=timedelta(seconds=10), poll_interval_s=0.02,
                                rest_timeout_s=1.0, clock=lambda: clock[0])
                assert await dialer.tick() == 0      # the lease has not expired yet
                clock[0] = now + timedelta(seconds=11)
                await dialer.tick()
                for _ in range(100):
                    clock[0] = datetime.now(UTC) + timedelta(seconds=11)
                    if await dialer.tick() == 0:
                        async with sessions() as s:
                            if await store.pending_work(s) == 0:
                                break
                    await asyncio.sleep(0.02)
        by_state, attempts = await summary(sessions)
    finally:
        await engine.dispose()
    assert_accounted(fake, by_state, attempts, 1)
    assert len(fake.creates) == 1
    assert [(a.attempt_no, a.worker, a.outcome) for a in attempts] == [(1, "dead", "answered")]


async def test_hang_up_treats_an_ended_call_as_success() -> None:
    with FakeTwilioRest(duration_s=(0.01, 0.01)) as fake:
        async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
            placed = await rest.place_call(to=number(1), from_=number(100), url=ORIGIN + "/v",
                                           status_callback=ORIGIN + "/s", timeout=20)
            await rest.hang_up(placed.sid)
            await asyncio.sleep(0.05)
            await rest.hang_up(placed.sid)
            await rest.hang_up("CA" + "f" * 32)
    assert fake.by_sid[placed.sid].status in ("completed", "canceled")


# --- several dialer processes on PostgreSQL ------------------------------------------------------

def start_dialer(
    db: str, fake: FakeTwilioRest, worker: str, logs: Path, *, lease_s: float = 2.0,
    until_idle: bool = True, extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Logs go to a file: a pipe nobody drains would stall the dialer mid-request."""
    env = {
        **os.environ,
        "CALLAGENT_DATABASE_URL": db,
        "CALLAGENT_TWILIO_API_BASE_URL": fake.base_url,
        "CALLAGENT_TWILIO_AUTH_TOKEN": TOKEN,
        "CALLAGENT_SERVER_PUBLIC_ORIGIN": ORIGIN,
        "CALLAGENT_DIALER_POLL_INTERVAL_S": "0.1",
        "CALLAGENT_DIALER_LEASE_S": str(lease_s),
        "CALLAGENT_DIALER_REST_TIMEOUT_S": str(lease_s / 4),
        "CALLAGENT_DIALER_BATCH_SIZE": "8",
        **(extra_env or {}),
    }
    with open(logs / f"{worker}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "callagent", "dialer", "--worker-id", worker,
             *(["--until-idle"] if until_idle else [])],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)


def wait_all(procs: list[subprocess.Popen[bytes]], logs: Path, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail("a dialer did not finish")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failed = [p.returncode for p in procs if p.returncode != 0]
    assert not failed, (failed, [(f.name, f.read_text()[-2000:]) for f in logs.iterdir()])


@pytest.fixture
async def pg_sessions(pg_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine_for(pg_db_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


CONTACTS, CAP = 200, 8


@pytest.mark.postgres
@pytest.mark.parametrize("dialers", [2, 4])
async def test_parallel_dialers_never_double_dial_and_hold_the_cap(
    pg_db_url: str, pg_sessions: async_sessionmaker[AsyncSession], sink_for: list[StatusSink],
    dialers: int, tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    sink = StatusSink(pg_db_url)
    sink_for.append(sink)
    cid = await seed(pg_sessions, CONTACTS, zone=noon_zone(now), now=now, no_consent=range(1, 11),
                     spec=make_spec(cap=CAP, max_attempts=2, retry_s=0.2))
    async with pg_sessions.begin() as s:
        await store.add_dnc(s, [number(i) for i in range(11, 16)], DncList.INTERNAL, now=now)
    outcomes = {number(i): Outcome.BUSY for i in range(16, 26)}
    outcomes |= {number(i): Outcome.NO_ANSWER for i in range(26, 31)}
    with FakeTwilioRest(sink=sink, outcomes=outcomes, duration_s=(0.005, 0.03), seed=dialers) as fake:
        procs = [start_dialer(pg_db_url, fake, f"d{i}", tmp_path) for i in range(dialers)]
        wait_all(procs, tmp_path)
    by_state, attempts = await summary(pg_sessions)
    assert_accounted(fake, by_state, attempts, CONTACTS)
    assert by_state == {"done": CONTACTS - 15, "skipped": 15}
    assert len(fake.creates) == CONTACTS - 15 + 15          # busy/no-answer numbers twice
    assert 1 < fake.max_in_progress[str(cid)] <= CAP
    assert len({a.worker for a in attempts if a.call_sid}) == dialers
    skipped = {a.e164: a.skip_reason for a in attempts if a.status == AttemptStatus.SKIPPED}
    assert skipped == {number(i): "no_consent" for i in range(1, 11)} | {
        number(i): "internal_dnc" for i in range(11, 16)}
    # each retry waited its delay after the outcome of the attempt before it
    by_contact: dict[int, list[CallAttempt]] = {}
    for a in attempts:
        by_contact.setdefault(a.contact_id, []).append(a)
    retried = [sorted(rows, key=lambda a: a.attempt_no) for rows in by_contact.values()
               if len(rows) > 1]
    assert len(retried) == 15
    for first, second in retried:
        assert (first.outcome, second.outcome) in (("busy", "busy"), ("no_answer", "no_answer"))
        assert first.ended_at is not None
        assert second.created_at >= first.ended_at + timedelta(seconds=0.2)


@pytest.mark.postgres
async def test_a_killed_dialers_claims_are_recovered_without_a_double_dial(
    pg_db_url: str, pg_sessions: async_sessionmaker[AsyncSession], sink_for: list[StatusSink],
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    sink = StatusSink(pg_db_url)
    sink_for.append(sink)
    contacts = 60
    cid = await seed(pg_sessions, contacts, zone=noon_zone(now), now=now,
                     spec=make_spec(cap=CAP, max_attempts=1))
    # Twilio creates the calls but answers slowly: the victim dies waiting for the sids.
    with FakeTwilioRest(sink=sink, duration_s=(0.005, 0.03), create_delay_s=30) as fake:
        victim = start_dialer(pg_db_url, fake, "victim", tmp_path)
        deadline = time.monotonic() + 20
        while len(fake.creates) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        orphaned = len(fake.creates)
        assert orphaned >= 2
        fake.create_delay_s = 0.0
        wait_all([start_dialer(pg_db_url, fake, f"s{i}", tmp_path) for i in range(2)], tmp_path)
    by_state, attempts = await summary(pg_sessions)
    assert_accounted(fake, by_state, attempts, contacts)
    assert by_state == {"done": contacts}
    assert len(fake.creates) == contacts
    victims = [a for a in attempts if a.worker == "victim"]
    assert len(victims) >= orphaned and all(a.call_sid for a in victims)
    assert fake.max_in_progress[str(cid)] <= CAP


# --- shutdown -------------------------------------------------------------------------------------

async def test_on_stop_unsent_creates_are_withdrawn_and_claims_given_back(
    db_url: str, sink_for: list[StatusSink],
) -> None:
    now = datetime.now(UTC)
    sink = StatusSink(db_url)
    sink_for.append(sink)
    engine = create_engine_for(db_url)
    sessions = make_sessionmaker(engine)
    stop = asyncio.Event()
    try:
        await seed(sessions, 20, zone=noon_zone(now), now=now, spec=make_spec(cap=20))
        # Twilio answers the creates slowly; two at a time go out
        with FakeTwilioRest(sink=sink, duration_s=(0.01, 0.02), create_delay_s=1.0) as fake:
            async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
                dialer = Dialer(sessions, rest, public_url, worker="stopping",
                                lease=timedelta(seconds=30), batch_size=20,
                                poll_interval_s=0.02, rest_timeout_s=5.0, parallel_creates=2)
                run = asyncio.create_task(dialer.run(stop))
                deadline = time.monotonic() + 20
                while not fake.creates and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                stop.set()
                await asyncio.wait_for(run, 20)
                sent = len(fake.creates)
        async with sessions() as s:
            contacts = list(await s.scalars(select(Contact).order_by(Contact.id)))
            attempts = list(await s.scalars(select(CallAttempt)))
    finally:
        await engine.dispose()
    assert 1 <= sent <= 2
    assert sorted(a.call_sid or "" for a in attempts) == sorted(c.sid for c in fake.creates)
    assert all(a.status == AttemptStatus.PLACED for a in attempts)
    dialed = {a.contact_id for a in attempts}
    assert {c.state for c in contacts if c.id in dialed} == {ContactState.IN_CALL}
    rest_ = [c for c in contacts if c.id not in dialed]
    assert len(rest_) == 20 - sent
    assert {(c.state, c.claimed_by, c.lease_until, c.attempts) for c in rest_} == {
        (ContactState.PENDING, None, None, 0)}


@pytest.mark.postgres
async def test_a_sigtermed_dialer_gives_its_claims_to_the_others_at_once(
    pg_db_url: str, pg_sessions: async_sessionmaker[AsyncSession], sink_for: list[StatusSink],
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    sink = StatusSink(pg_db_url)
    sink_for.append(sink)
    contacts = 16
    await seed(pg_sessions, contacts, zone=noon_zone(now), now=now,
               spec=make_spec(cap=contacts, max_attempts=1))
    slow = {"CALLAGENT_DIALER_PARALLEL_CREATES": "1", "CALLAGENT_DIALER_BATCH_SIZE": "16"}
    # a lease far longer than the test: only the release can hand the claims over in time
    with FakeTwilioRest(sink=sink, duration_s=(0.01, 0.03), create_delay_s=1.0) as fake:
        first = start_dialer(pg_db_url, fake, "first", tmp_path, lease_s=600.0,
                             until_idle=False, extra_env=slow)
        deadline = time.monotonic() + 20
        while not fake.creates and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0, (tmp_path / "first.log").read_text()
        sent_by_first = len(fake.creates)
        async with pg_sessions() as s:
            held = await s.scalar(select(func.count()).select_from(Contact).where(
                Contact.claimed_by == "first", Contact.state == ContactState.CLAIMED))
        assert held == 0
        fake.create_delay_s = 0.0
        wait_all([start_dialer(pg_db_url, fake, "second", tmp_path, lease_s=600.0)], tmp_path)
    by_state, attempts = await summary(pg_sessions)
    assert_accounted(fake, by_state, attempts, contacts)
    assert by_state == {"done": contacts}
    assert sent_by_first == sum(1 for a in attempts if a.worker == "first") < contacts


# --- lost callbacks, the fake's signed callbacks, the process and its settings ---------------------

async def test_calls_whose_final_callback_was_lost_are_closed_from_twilios_record(
    sqlite_db_url: str,
) -> None:
    now = datetime.now(UTC)
    engine = create_engine_for(sqlite_db_url)
    sessions = make_sessionmaker(engine)
    try:
        await seed(sessions, 6, zone=noon_zone(now), now=now, spec=make_spec(cap=3, retry_s=0.2))
        with FakeTwilioRest(duration_s=(0.01, 0.03), outcomes={number(2): Outcome.BUSY}) as fake:
            async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
                dialer = Dialer(sessions, rest, public_url, worker="solo",
                                lease=timedelta(seconds=5), poll_interval_s=0.02,
                                rest_timeout_s=1.0, stale_after=timedelta(seconds=0.1))
                await asyncio.wait_for(dialer.run(asyncio.Event(), until_idle=True), 20)
        by_state, attempts = await summary(sessions)
    finally:
        await engine.dispose()
    assert_accounted(fake, by_state, attempts, 6)
    assert sorted(a.outcome or "" for a in attempts) == ["answered"] * 5 + ["busy"] * 2


def test_the_fake_posts_status_callbacks_signed_like_twilio() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread
    from urllib.parse import parse_qsl

    from callagent.telephony.twilio.signature import SignatureChecker, SignatureVerdict

    got: list[tuple[str, dict[str, str], str]] = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            got.append((self.path, dict(parse_qsl(body)), self.headers["X-Twilio-Signature"]))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = Thread(target=server.serve_forever)
    thread.start()
    try:
        callback = f"http://127.0.0.1:{server.server_address[1]}/twilio/status"
        with FakeTwilioRest(auth_token=TOKEN, post_callbacks=True, duration_s=(0.01, 0.01),
                            outcomes={number(2): Outcome.MACHINE}) as fake:
            async def place() -> None:
                async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
                    await rest.place_call(to=number(2), from_=number(100),
                                          url=callback.replace("status", "voice"),
                                          status_callback=callback)

            asyncio.run(place())
            deadline = time.monotonic() + 5
            while len(got) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert not fake.callback_errors
    voice = [params for path, params, _ in got if path == "/twilio/voice"]
    assert [p["CallStatus"] for p in voice] == ["in-progress"]
    got = [entry for entry in got if entry[0] == "/twilio/status"]
    checker = SignatureChecker(TOKEN, enabled=True)
    assert [params["CallStatus"] for _, params, _ in got] == [
        "initiated", "ringing", "in-progress", "completed"]
    for path, params, signature in got:
        headers = {"x-twilio-signature": signature}
        assert checker.check(callback, params, headers) is SignatureVerdict.VALID
    assert got[-1][1]["AnsweredBy"] == "machine_start" and int(got[-1][1]["CallDuration"]) >= 1


def test_the_dialer_process_stops_cleanly_on_sigterm(sqlite_db_url: str, tmp_path: Path) -> None:
    with FakeTwilioRest() as fake:
        proc = start_dialer(sqlite_db_url, fake, "term", tmp_path, until_idle=False)
        log = tmp_path / "term.log"
        deadline = time.monotonic() + 20
        while "dialer term started" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        time.sleep(0.2)     # a few idle polls
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, (tmp_path / "term.log").read_text()


def test_dialer_settings_refuse_a_lease_shorter_than_a_request() -> None:
    from callagent.config import ConfigError, load_settings

    env = {"CALLAGENT_TWILIO_AUTH_TOKEN": TOKEN, "CALLAGENT_DIALER_LEASE_S": "15",
           "CALLAGENT_DIALER_REST_TIMEOUT_S": "10"}
    with pytest.raises(ConfigError, match="dialer.lease_s"):
        load_settings(PROJECT_ROOT / "config" / "callagent.toml", env)
    settings = load_settings(PROJECT_ROOT / "config" / "callagent.toml",
                             {**env, "CALLAGENT_DIALER_LEASE_S": "30",
                              "CALLAGENT_DIALER_WORKER_ID": "east-1"})
    assert (settings.dialer.lease_s, settings.dialer.worker_id) == (30.0, "east-1")


def test_a_second_dialer_on_one_sqlite_database_refuses_to_start(
    sqlite_db_url: str, tmp_path: Path,
) -> None:
    with FakeTwilioRest() as fake:
        first = start_dialer(sqlite_db_url, fake, "only", tmp_path, until_idle=False)
        try:
            log = tmp_path / "only.log"
            deadline = time.monotonic() + 20
            while "dialer only started" not in log.read_text() and time.monotonic() < deadline:
                assert first.poll() is None, log.read_text()
                time.sleep(0.05)
            second = start_dialer(sqlite_db_url, fake, "second", tmp_path, until_idle=False)
            assert second.wait(timeout=20) == 2
            error = (tmp_path / "second.log").read_text()
            assert f"another dialer (pid {first.pid}) runs against the SQLite database" in error
            assert "use PostgreSQL (database.url) to run several" in error
            assert first.poll() is None
        finally:
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=10) == 0
    # the lock goes with the process: a new dialer starts
    with FakeTwilioRest() as fake:
        again = start_dialer(sqlite_db_url, fake, "again", tmp_path, until_idle=True)
        assert again.wait(timeout=20) == 0, (tmp_path / "again.log").read_text()
