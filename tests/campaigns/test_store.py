"""Campaign store: idempotent import, claims with SKIP LOCKED and a cross-process cap, leases,
idempotency keys, outcomes -> retries, skip reasons. SQLite and PostgreSQL unless named."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callagent.campaigns import store
from callagent.campaigns.eligibility import DncList, SkipReason
from callagent.campaigns.importer import ContactRow, parse_contacts
from callagent.campaigns.settings import (
    CallingWindow,
    CallOutcome,
    CampaignSpec,
    CampaignState,
    Purpose,
    RetryDelays,
    Weekday,
)
from callagent.campaigns.store import AttemptStatus, ContactState
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.store.models import AmdVerdict, CallAttempt, CallStatusEvent, Contact

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def noon_zone(now: datetime) -> str:
    """An ``Etc/GMT`` zone where ``now`` is around local noon (inside any day window)."""
    offset = 12 - now.hour
    if offset > 14:
        offset -= 24
    if offset < -12:
        offset += 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def make_spec(*, cap: int = 5, max_attempts: int = 2, retry_s: float = 3600.0) -> CampaignSpec:
    delay = timedelta(seconds=retry_s)
    return CampaignSpec(
        name="Renewals", agent_profile="fixture", caller_id="+12125550100",
        purpose=Purpose.INFORMATIONAL, window=CallingWindow(time(9), time(20)),
        allowed_days=frozenset(Weekday), max_concurrent_calls=cap, max_attempts=max_attempts,
        max_attempts_per_day=max_attempts,
        retry_delays=RetryDelays(no_answer=delay, busy=delay, failed=delay, voicemail=delay * 2),
    )


def number(i: int) -> str:
    return f"+1212555{i:04d}"


def csv_text(n: int, *, zone: str, no_consent: Sequence[int] = ()) -> str:
    lines = ["phone,name,timezone,consent_type,consent_at,plan"]
    for i in range(1, n + 1):
        consent = ",," if i in no_consent else ",PEC,2026-01-01T00:00:00Z"
        lines.append(f"{number(i)},Person {i},{zone}{consent},gold")
    return "\n".join(lines) + "\n"


def rows(text: str, key: str) -> list[ContactRow]:
    events = list(parse_contacts(io.StringIO(text, newline=""), campaign_key=key))
    assert all(isinstance(e, ContactRow) for e in events), events
    return [e for e in events if isinstance(e, ContactRow)]


async def seed(
    sessions: async_sessionmaker[AsyncSession], n: int, *, key: str = "c1", zone: str = "Etc/GMT",
    spec: CampaignSpec | None = None, no_consent: Sequence[int] = (), now: datetime = NOW,
) -> int:
    async with sessions.begin() as s:
        cid = await store.create_campaign(s, key, spec or make_spec(), now=now,
                                          state=CampaignState.RUNNING)
        await store.import_rows(s, cid, rows(csv_text(n, zone=zone, no_consent=no_consent), key),
                                now=now)
    return cid


async def states(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as s:
        result = await s.execute(select(Contact.state, func.count()).group_by(Contact.state))
        return {state: count for state, count in result.all()}


@pytest.fixture
async def pg_sessions(pg_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine: AsyncEngine = create_engine_for(pg_db_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


# --- import ----------------------------------------------------------------------------------

async def test_importing_the_same_csv_twice_adds_nothing(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    text = csv_text(23, zone="America/New_York")
    async with db_sessions.begin() as s:
        cid = await store.create_campaign(s, "c1", make_spec(), now=NOW)
        first = await store.import_rows(s, cid, rows(text, "c1"), now=NOW, batch_size=5)
    async with db_sessions.begin() as s:
        second = await store.import_rows(s, cid, rows(text, "c1"), now=NOW, batch_size=5)
    assert (first, second) == (23, 0)
    async with db_sessions() as s:
        contacts = list(await s.scalars(select(Contact).order_by(Contact.id)))
    assert len(contacts) == 23
    assert contacts[0].e164 == number(1) and contacts[0].state == ContactState.PENDING
    assert contacts[0].fields == '{"plan": "gold"}'
    assert contacts[0].timezones == '["America/New_York"]'


async def test_campaign_spec_round_trips_through_the_store(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    spec = make_spec(cap=7, retry_s=90)
    await seed(db_sessions, 1, spec=spec)
    async with db_sessions() as s:
        [stored] = await store.running_campaigns(s)
    assert stored.spec == spec and stored.state is CampaignState.RUNNING


# --- claims, cap, leases -------------------------------------------------------------------------

async def test_claim_takes_due_contacts_up_to_the_cap(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(db_sessions, 10)
    async with db_sessions.begin() as s:
        first = await store.claim_due_contacts(s, cid, 3, worker="a", now=NOW, lease=LEASE, limit=10)
    async with db_sessions.begin() as s:
        second = await store.claim_due_contacts(s, cid, 3, worker="b", now=NOW, lease=LEASE, limit=10)
    assert len(first) == 3 and second == []
    async with db_sessions.begin() as s:   # a placed call still holds its slot
        attempt = await store.begin_attempt(s, first[0].id, worker="a", now=NOW, lease=LEASE)
        await store.mark_placed(s, attempt.id, "CA" + "1" * 32, now=NOW)
        assert await store.claim_due_contacts(
            s, cid, 3, worker="b", now=NOW, lease=LEASE, limit=10) == []
    async with db_sessions.begin() as s:   # its outcome frees it
        await store.record_attempt_outcome(s, attempt.id, "completed", answered_by="human",
                                           duration_s=12, now=NOW)
        again = await store.claim_due_contacts(s, cid, 3, worker="b", now=NOW, lease=LEASE, limit=10)
    assert len(again) == 1 and again[0].id not in {c.id for c in first}
    assert await states(db_sessions) == {"claimed": 3, "done": 1, "pending": 6}


async def test_contacts_not_yet_due_are_not_claimed(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(db_sessions, 2, now=NOW + timedelta(minutes=5))
    async with db_sessions.begin() as s:
        assert await store.claim_due_contacts(
            s, cid, 5, worker="a", now=NOW, lease=LEASE, limit=10) == []


async def test_expired_leases_are_taken_over_and_the_old_holder_cannot_dial(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(db_sessions, 4)
    async with db_sessions.begin() as s:
        held = await store.claim_due_contacts(s, cid, 2, worker="dead", now=NOW, lease=LEASE,
                                              limit=10)
    async with db_sessions.begin() as s:
        early = await store.reclaim_expired(s, worker="b", now=NOW + LEASE / 2, lease=LEASE,
                                            limit=10)
    async with db_sessions.begin() as s:
        late = await store.reclaim_expired(s, worker="b", now=NOW + LEASE * 2, lease=LEASE,
                                           limit=10)
    assert early == [] and {c.id for c in late} == {c.id for c in held}
    with pytest.raises(store.LostClaim):
        async with db_sessions.begin() as s:
            await store.begin_attempt(s, held[0].id, worker="dead", now=NOW, lease=LEASE)
    async with db_sessions() as s:
        assert await s.scalar(select(func.count()).select_from(CallAttempt)) == 0
        assert {c.claimed_by for c in await s.scalars(
            select(Contact).where(Contact.state == ContactState.CLAIMED))} == {"b"}


@pytest.mark.postgres
async def test_reclaim_skips_rows_locked_by_another_dialer(
    pg_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(pg_sessions, 6)
    async with pg_sessions.begin() as s:
        await store.claim_due_contacts(s, cid, 6, worker="dead", now=NOW, lease=LEASE, limit=10)
    later = NOW + LEASE * 2
    async with pg_sessions() as a, pg_sessions() as b:
        async with a.begin():
            got_a = await store.reclaim_expired(a, worker="a", now=later, lease=LEASE, limit=3)
            async with b.begin():   # a's rows stay locked: SKIP LOCKED hands b the rest
                got_b = await asyncio.wait_for(
                    store.reclaim_expired(b, worker="b", now=later, lease=LEASE, limit=10), 5)
    assert len(got_a) == 3 and len(got_b) == 3
    assert not {c.id for c in got_a} & {c.id for c in got_b}


@pytest.mark.postgres
async def test_cap_check_is_serialized_across_connections(
    pg_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(pg_sessions, 20)
    async with pg_sessions() as a, pg_sessions() as b:
        await a.begin()
        got_a = await store.claim_due_contacts(a, cid, 5, worker="a", now=NOW, lease=LEASE,
                                               limit=10)

        async def claim_b() -> list[store.ClaimedContact]:
            async with b.begin():
                return await store.claim_due_contacts(b, cid, 5, worker="b", now=NOW,
                                                      lease=LEASE, limit=10)

        task = asyncio.create_task(claim_b())
        await asyncio.sleep(0.3)
        assert not task.done(), "b must wait for a's advisory lock"
        await a.commit()
        got_b = await asyncio.wait_for(task, 5)
    assert len(got_a) == 5 and got_b == []


# --- attempts, idempotency, outcomes, skips --------------------------------------------------------

async def test_an_attempt_key_is_recorded_once(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(db_sessions, 1)
    async with db_sessions.begin() as s:
        [c] = await store.claim_due_contacts(s, cid, 1, worker="a", now=NOW, lease=LEASE, limit=1)
        attempt = await store.begin_attempt(s, c.id, worker="a", now=NOW, lease=LEASE)
    assert (attempt.idempotency_key, attempt.status) == (f"{c.id}:1", AttemptStatus.PLACING)
    with pytest.raises(IntegrityError):
        async with db_sessions.begin() as s:
            s.add(CallAttempt(campaign_id=cid, contact_id=c.id, attempt_no=1,
                              idempotency_key=f"{c.id}:1", e164=c.e164, call_id="x", worker="b",
                              status=AttemptStatus.PLACING, created_at=NOW))
    async with db_sessions() as s:
        assert (await store.open_attempt(s, c.id)) is not None


OUTCOME_CASES: list[tuple[str, str | None, CallOutcome | None, timedelta | None]] = [
    ("completed", "human", None, None),
    ("completed", None, None, None),
    ("completed", "machine_start", CallOutcome.VOICEMAIL, timedelta(seconds=120)),
    ("completed", "fax", CallOutcome.VOICEMAIL, timedelta(seconds=120)),
    ("busy", None, CallOutcome.BUSY, timedelta(seconds=60)),
    ("no-answer", None, CallOutcome.NO_ANSWER, timedelta(seconds=60)),
    ("canceled", None, CallOutcome.NO_ANSWER, timedelta(seconds=60)),
    ("failed", None, CallOutcome.FAILED, timedelta(seconds=60)),
]


async def test_outcome_schedules_the_retry(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    """Status callback (+ AnsweredBy) -> outcome -> retry after ``CampaignSpec.retry_delay``,
    or done when answered by a person."""
    cid = await seed(db_sessions, len(OUTCOME_CASES), spec=make_spec(cap=len(OUTCOME_CASES),
                                                                    max_attempts=2, retry_s=60))
    async with db_sessions.begin() as s:
        held = await store.claim_due_contacts(s, cid, 10, worker="a", now=NOW, lease=LEASE,
                                              limit=10)
        attempts = []
        for i, c in enumerate(held):
            attempt = await store.begin_attempt(s, c.id, worker="a", now=NOW, lease=LEASE)
            await store.mark_placed(s, attempt.id, f"CA{i:032d}", now=NOW)
            attempts.append(attempt.id)
    end = NOW + timedelta(seconds=40)
    async with db_sessions.begin() as s:
        for i, (status, answered_by, _, _) in enumerate(OUTCOME_CASES):
            s.add(CallStatusEvent(call_sid=f"CA{i:032d}", sequence=3, status=status, at=end,
                                  duration_s=30, answered_by=answered_by))
        await s.flush()
        assert await store.apply_status_events(s, now=end) == len(OUTCOME_CASES)
        assert await store.apply_status_events(s, now=end) == 0
    for c, attempt_id, (_, answered_by, outcome, delay) in zip(held, attempts, OUTCOME_CASES):
        async with db_sessions() as s:
            contact = await s.get_one(Contact, c.id)
            row = await s.get_one(CallAttempt, attempt_id)
        assert row.status == AttemptStatus.ENDED
        assert row.outcome == store.campaign_outcome(outcome) and row.answered_by == answered_by
        if delay is None:
            assert (contact.state, contact.next_attempt_at) == (ContactState.DONE, None)
        else:
            assert (contact.state, contact.next_attempt_at) == (ContactState.PENDING, end + delay)
            assert contact.claimed_by is None


async def test_the_async_amd_verdict_decides_when_the_final_callback_has_no_answered_by(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Async AMD: ``AnsweredBy`` comes only on ``/twilio/amd`` (``amd_verdicts``), not on the
    status callbacks; the terminal callback's own ``AnsweredBy`` wins when it has one."""
    cid = await seed(db_sessions, 3, spec=make_spec(cap=3, max_attempts=2, retry_s=60))
    async with db_sessions.begin() as s:
        held = await store.claim_due_contacts(s, cid, 10, worker="a", now=NOW, lease=LEASE,
                                              limit=10)
        attempts = []
        for i, c in enumerate(held):
            attempt = await store.begin_attempt(s, c.id, worker="a", now=NOW, lease=LEASE)
            await store.mark_placed(s, attempt.id, f"CA{i:032d}", now=NOW)
            attempts.append(attempt.id)
    end = NOW + timedelta(seconds=40)
    cases = [("machine_end_beep", None, "voicemail"), ("human", None, "answered"),
             ("machine_end_beep", "human", "answered")]
    async with db_sessions.begin() as s:
        for i, (verdict, in_status, _) in enumerate(cases):
            s.add(AmdVerdict(call_sid=f"CA{i:032d}", answered_by=verdict, detection_ms=2100,
                             at=NOW + timedelta(seconds=5)))
            s.add(CallStatusEvent(call_sid=f"CA{i:032d}", sequence=3, status="completed", at=end,
                                  duration_s=30, answered_by=in_status))
        await s.flush()
        assert await store.apply_status_events(s, now=end) == len(cases)
    async with db_sessions() as s:
        rows = [await s.get_one(CallAttempt, a) for a in attempts]
    assert [(r.outcome, r.answered_by) for r in rows] == [
        ("voicemail", "machine_end_beep"), ("answered", "human"), ("answered", "human")]


async def test_the_last_attempt_finishes_the_contact_whatever_the_outcome(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(db_sessions, 1, spec=make_spec(max_attempts=1))
    async with db_sessions.begin() as s:
        [c] = await store.claim_due_contacts(s, cid, 1, worker="a", now=NOW, lease=LEASE, limit=1)
        attempt = await store.begin_attempt(s, c.id, worker="a", now=NOW, lease=LEASE)
        await store.record_place_failure(s, attempt.id, "Twilio 400 (code 21211)", now=NOW)
    async with db_sessions() as s:
        contact = await s.get_one(Contact, c.id)
        row = await s.get_one(CallAttempt, attempt.id)
    assert contact.state == ContactState.DONE
    assert (row.status, row.outcome) == (AttemptStatus.FAILED, "failed")


async def test_skips_store_their_reasons(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    cid = await seed(db_sessions, 2)
    async with db_sessions.begin() as s:
        final, waiting = await store.claim_due_contacts(s, cid, 2, worker="a", now=NOW,
                                                        lease=LEASE, limit=2)
        await store.record_skip(s, final.id, [SkipReason.NO_CONSENT, SkipReason.INTERNAL_DNC],
                                None, worker="a", now=NOW)
        later = NOW + timedelta(hours=3)
        await store.record_skip(s, waiting.id, [SkipReason.OUTSIDE_HOURS], later, worker="a",
                                now=NOW)
    async with db_sessions() as s:
        skipped = await s.get_one(Contact, final.id)
        waits = await s.get_one(Contact, waiting.id)
        attempts = list(await s.scalars(select(CallAttempt)))
    assert (skipped.state, skipped.skip_reason) == (ContactState.SKIPPED, "no_consent,internal_dnc")
    assert [(a.contact_id, a.status, a.skip_reason) for a in attempts] == [
        (final.id, AttemptStatus.SKIPPED, "no_consent,internal_dnc")]
    assert (waits.state, waits.next_attempt_at, waits.skip_reason) == (
        ContactState.PENDING, later, "outside_hours")


async def test_dnc_numbers_load_by_list(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db_sessions.begin() as s:
        await store.add_dnc(s, [number(1), number(2)], DncList.INTERNAL, now=NOW)
        await store.add_dnc(s, [number(2)], DncList.INTERNAL, now=NOW)   # idempotent
        await store.add_dnc(s, [number(3)], DncList.NATIONAL, now=NOW)
    async with db_sessions() as s:
        dnc = await store.load_dnc(s)
        held = await store.load_dnc(s, [number(2), number(3), number(4)])
        none = await store.load_dnc(s, [])
    assert dnc.internal == {number(1), number(2)} and dnc.national == {number(3)}
    # only the numbers asked about are loaded (the dialer asks for the ones it holds)
    assert held.internal == {number(2)} and held.national == {number(3)}
    assert none.internal == frozenset() and none.national == frozenset()


def test_noon_zone_is_near_local_noon() -> None:
    from zoneinfo import ZoneInfo

    for hour in range(24):
        now = NOW.replace(hour=hour)
        assert 9 <= now.astimezone(ZoneInfo(noon_zone(now))).hour <= 15


def test_public_names_are_pinned() -> None:
    from callagent.campaigns import commands, dialer, operations, spec_input, voicemail
    from callagent.sim import twilio_rest
    from callagent.telephony.twilio import rest

    assert sorted(store.__all__) == sorted([
        "AttemptStatus", "CLAIM_LOCK_CLASS", "CampaignExists", "CampaignProgress",
        "ClaimedContact", "ContactState", "IN_FLIGHT", "LostClaim", "StoredCampaign",
        "TERMINAL_CALL_STATUSES", "UnknownCampaign", "add_dnc", "answered_by_of",
        "apply_status_events",
        "attempt_counts", "begin_attempt", "campaign_by_key", "campaign_ids",
        "campaign_outcome", "campaign_progress", "change_state", "claim_due_contacts",
        "create_campaign", "import_rows", "known_call_sids", "load_dnc", "mark_placed",
        "open_attempt", "outcome_of", "pending_work", "reclaim_expired",
        "record_attempt_outcome", "record_place_failure", "record_skip", "release_claim",
        "release_worker_claims", "renew_lease", "running_campaigns", "spec_from_json",
        "spec_to_json", "stale_placed_attempts", "withdraw_attempt"])
    assert sorted(dialer.__all__) == [
        "AnotherDialer", "Dialer", "run_dialer", "sqlite_single_dialer", "worker_id"]
    assert sorted(rest.__all__) == [
        "DEFAULT_STATUS_EVENTS", "DeadlinePassed", "FoundCall", "PlacedCall", "TwilioRest",
        "TwilioRestError", "TwilioUnavailable"]
    assert sorted(twilio_rest.__all__) == ["CreatedCall", "FakeTwilioRest", "Outcome", "StatusSink"]
    assert sorted(voicemail.__all__) == [
        "ANSWERED_BY", "AmdAction", "AmdQuery", "AmdQueryError", "VoicemailRest",
        "amd_callback_query", "decide", "parse_amd_query", "voicemail_twiml"]
    assert sorted(operations.__all__) == [
        "ImportRefused", "ImportReport", "create", "finish", "import_csv", "pause", "start",
        "status"]
    assert sorted(spec_input.__all__) == [
        "parse_days", "parse_duration", "parse_window", "spec_from_fields"]
    assert sorted(commands.__all__) == ["ProgressBar", "register", "render_status"]
    for module in (store, dialer, rest, twilio_rest, voicemail, operations, spec_input,
                   commands):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
