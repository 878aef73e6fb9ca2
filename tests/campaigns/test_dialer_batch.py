"""A dialer pass in batches: the batch queries' rules (``campaigns/batch.py``), and the ways a
batch can go wrong half-way (a refused create, a dialer dying after the batch's ``placing``
commit, a results transaction failing), each without a double dial."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.campaigns import batch, store
from callagent.campaigns.dialer import Dialer
from callagent.campaigns.eligibility import SkipReason
from callagent.campaigns.store import AttemptStatus, ContactState
from callagent.sim.twilio_rest import FakeTwilioRest
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.store.models import CallAttempt, Contact
from callagent.telephony.twilio.rest import PlacedCall, TwilioRest
from tests.campaigns.test_dialer import (
    ACCOUNT,
    TOKEN,
    StatusSink,
    assert_accounted,
    public_url,
    sink_for,  # noqa: F401  (the fixture)
    summary,
)
from tests.campaigns.test_store import LEASE, NOW, make_spec, noon_zone, number, seed

async def contacts_by_id(sessions: async_sessionmaker[AsyncSession]) -> dict[int, Contact]:
    async with sessions() as s:
        return {c.id: c for c in await s.scalars(select(Contact).order_by(Contact.id))}


async def run_until_idle(dialer: Dialer, clock: list[datetime], shift: timedelta,
                         sessions: async_sessionmaker[AsyncSession]) -> None:
    """Tick with the clock ``shift`` ahead of the wall clock until no work is left."""
    for _ in range(300):
        clock[0] = datetime.now(UTC) + shift
        if await dialer.tick() == 0:
            async with sessions() as s:
                if await store.pending_work(s) == 0:
                    return
        await asyncio.sleep(0.02)
    pytest.fail("work left after 300 passes")


# --- the batch queries -----------------------------------------------------------------------------

async def test_begin_attempts_records_only_the_claims_still_held_with_a_running_lease(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(db_sessions, 4, spec=make_spec(cap=4))
    async with db_sessions.begin() as s:
        held = await store.claim_due_contacts(s, cid, 4, worker="a", now=NOW, lease=LEASE,
                                              limit=4)
    kept, taken, expired, released = (c.id for c in held)
    async with db_sessions.begin() as s:
        rows = await s.scalars(select(Contact).where(Contact.id.in_([taken, expired, released])))
        for row in rows:
            if row.id == taken:          # another dialer took it over after the lease
                row.claimed_by = "b"
            elif row.id == expired:      # the lease ran out; nobody took it yet
                row.lease_until = NOW - timedelta(seconds=1)
            else:                        # given back
                row.state, row.claimed_by, row.lease_until = ContactState.PENDING, None, None
    later = NOW + timedelta(seconds=5)
    async with db_sessions.begin() as s:
        attempts, lost = await batch.begin_attempts(s, [kept, taken, expired, released],
                                                    worker="a", now=later, lease=LEASE)
    assert list(attempts) == [kept] and lost == [taken, expired, released]
    contacts = await contacts_by_id(db_sessions)
    assert (contacts[kept].attempts, contacts[kept].lease_until) == (1, later + LEASE)
    assert [contacts[i].attempts for i in (taken, expired, released)] == [0, 0, 0]
    async with db_sessions() as s:
        [row] = await s.scalars(select(CallAttempt))
    assert (row.id, row.contact_id, row.idempotency_key, row.call_id, row.created_at) == (
        attempts[kept].id, kept, f"{kept}:1", attempts[kept].call_id, later)
    assert (row.status, row.worker, row.attempt_no) == (AttemptStatus.PLACING, "a", 1)


async def test_results_keep_reconciled_attempts_and_leave_refusals_to_a_new_holder(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A sid lands only on a ``placing`` attempt; a refusal closes an attempt only while this
    worker holds the contact (a new holder reconciles it: no call, so it dials the key)."""
    cid = await seed(db_sessions, 4, spec=make_spec(cap=4, max_attempts=2, retry_s=60))
    async with db_sessions.begin() as s:
        held = await store.claim_due_contacts(s, cid, 4, worker="a", now=NOW, lease=LEASE,
                                              limit=4)
        attempts, _ = await batch.begin_attempts(s, [c.id for c in held], worker="a", now=NOW,
                                                 lease=LEASE)
    placed, reconciled, refused, taken = (attempts[c.id] for c in held)
    async with db_sessions.begin() as s:
        await store.mark_placed(s, reconciled.id, "CA" + "9" * 32, now=NOW)
        row = await s.get_one(Contact, taken.contact_id)
        row.claimed_by = "b"
    async with db_sessions.begin() as s:
        withdrawn = await batch.record_results(s, [
            batch.Placed(placed.id, "CA" + "1" * 32),
            batch.Placed(reconciled.id, "CA" + "2" * 32),
            batch.Refused(refused.id, "Twilio 400 (code 21211): Invalid 'To'"),
            batch.Refused(taken.id, "Twilio 400 (code 21211): Invalid 'To'"),
        ], worker="a", now=NOW)
    assert withdrawn == []
    async with db_sessions() as s:
        rows = {a.id: a for a in await s.scalars(select(CallAttempt))}
    contacts = await contacts_by_id(db_sessions)
    assert (rows[placed.id].status, rows[placed.id].call_sid) == (
        AttemptStatus.PLACED, "CA" + "1" * 32)
    assert contacts[placed.contact_id].state == ContactState.IN_CALL
    assert rows[reconciled.id].call_sid == "CA" + "9" * 32
    assert (rows[refused.id].status, rows[refused.id].outcome) == (AttemptStatus.FAILED, "failed")
    assert "21211" in (rows[refused.id].error or "")
    refused_contact = contacts[refused.contact_id]
    assert (refused_contact.state, refused_contact.claimed_by, refused_contact.next_attempt_at) \
        == (ContactState.PENDING, None, NOW + timedelta(seconds=60))
    assert rows[taken.id].status == AttemptStatus.PLACING
    assert (contacts[taken.contact_id].state, contacts[taken.contact_id].claimed_by) == (
        ContactState.CLAIMED, "b")


async def test_not_sent_creates_are_withdrawn_in_the_results(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(db_sessions, 2, spec=make_spec(cap=2))
    async with db_sessions.begin() as s:
        held = await store.claim_due_contacts(s, cid, 2, worker="a", now=NOW, lease=LEASE,
                                              limit=2)
        attempts, _ = await batch.begin_attempts(s, [c.id for c in held], worker="a", now=NOW,
                                                 lease=LEASE)
    first, second = (attempts[c.id] for c in held)
    async with db_sessions.begin() as s:
        withdrawn = await batch.record_results(
            s, [batch.NotSent(first.id), batch.Placed(second.id, "CA" + "3" * 32)],
            worker="a", now=NOW)
    assert withdrawn == [first.id]
    contacts = await contacts_by_id(db_sessions)
    assert (contacts[first.contact_id].state, contacts[first.contact_id].attempts) == (
        ContactState.PENDING, 0)
    assert contacts[second.contact_id].state == ContactState.IN_CALL


async def test_skips_touch_only_the_contacts_still_held(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = await seed(db_sessions, 3, spec=make_spec(cap=3))
    async with db_sessions.begin() as s:
        final, waiting, taken = await store.claim_due_contacts(s, cid, 3, worker="a", now=NOW,
                                                               lease=LEASE, limit=3)
        row = await s.get_one(Contact, taken.id)
        row.claimed_by = "b"
    later = NOW + timedelta(hours=3)
    skips = [batch.Skip(final.id, (SkipReason.NO_CONSENT, SkipReason.INTERNAL_DNC), None),
             batch.Skip(waiting.id, (SkipReason.OUTSIDE_HOURS,), later),
             batch.Skip(taken.id, (SkipReason.NO_CONSENT,), None)]
    async with db_sessions.begin() as s:
        done = await batch.record_skips(s, skips, worker="a", now=NOW)
    assert done == skips[:2]
    contacts = await contacts_by_id(db_sessions)
    assert (contacts[final.id].state, contacts[final.id].skip_reason) == (
        ContactState.SKIPPED, "no_consent,internal_dnc")
    assert (contacts[waiting.id].state, contacts[waiting.id].next_attempt_at) == (
        ContactState.PENDING, later)
    assert (contacts[taken.id].state, contacts[taken.id].skip_reason) == (
        ContactState.CLAIMED, None)
    async with db_sessions() as s:
        attempts = list(await s.scalars(select(CallAttempt)))
    assert [(a.contact_id, a.status) for a in attempts] == [(final.id, AttemptStatus.SKIPPED)]


def test_counts_match_the_single_number_query() -> None:
    day_start = NOW.replace(hour=5)
    times = [NOW - timedelta(days=2), NOW - timedelta(hours=23), day_start,
             NOW - timedelta(minutes=1)]
    assert batch.counts_for(times, since_day_start=day_start, now=NOW) == (
        2, [NOW - timedelta(hours=23), day_start, NOW - timedelta(minutes=1)])


# --- a pass that goes wrong half-way ---------------------------------------------------------------

async def test_a_refused_create_fails_only_its_own_attempt_of_the_batch(
    db_url: str, sink_for: list[StatusSink],
) -> None:
    now = datetime.now(UTC)
    engine = create_engine_for(db_url)
    sessions = make_sessionmaker(engine)
    try:
        cid = await seed(sessions, 6, zone=noon_zone(now), now=now,
                         spec=make_spec(cap=6, max_attempts=2, retry_s=3600))
        with FakeTwilioRest(rejects=frozenset({number(3)}), duration_s=(5.0, 5.0)) as fake:
            async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
                dialer = Dialer(sessions, rest, public_url, worker="solo", batch_size=6,
                                parallel_creates=3, rest_timeout_s=1.0,
                                lease=timedelta(seconds=10), clock=lambda: now)
                assert await dialer.tick() == 6
            _, attempts = await summary(sessions)
            contacts = await contacts_by_id(sessions)
    finally:
        await engine.dispose()
    assert sorted(fake.creates_per_key().values()) == [1] * 5
    by_number = {a.e164: a for a in attempts}
    refused = by_number.pop(number(3))
    assert (refused.status, refused.outcome, refused.call_sid) == (
        AttemptStatus.FAILED, "failed", None)
    assert {a.status for a in by_number.values()} == {AttemptStatus.PLACED}
    assert {a.call_sid for a in by_number.values()} == {c.sid for c in fake.creates}
    assert contacts[refused.contact_id].next_attempt_at == now + timedelta(seconds=3600)
    assert {c.state for c in contacts.values()} == {ContactState.IN_CALL, ContactState.PENDING}
    assert fake.max_in_progress[str(cid)] == 5


class FreezesMidBatch(TwilioRest):
    """A dialer frozen (then killed) in the middle of a batch's creates: the first ``sent``
    creates reach Twilio, which creates the calls, but their answers never come back; the
    others never leave the process."""

    def __init__(self, *args: Any, sent: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent, self.tried = sent, 0

    async def place_call(self, **kwargs: Any) -> PlacedCall:
        self.tried += 1
        if self.tried <= self.sent:
            await super().place_call(**kwargs)
        await asyncio.Event().wait()
        raise AssertionError("never answers")


@pytest.mark.parametrize("sent", [0, 3])
async def test_a_dialer_dying_after_the_batch_placing_commit_is_reconciled_not_redialed(
    db_url: str, sink_for: list[StatusSink], sent: int,
) -> None:
    """Six attempts committed ``placing`` in one transaction, then the dialer dies with
    ``sent`` of their creates at Twilio: the next dialer adopts those calls and dials the
    others under the same keys, once each."""
    contacts_n = 6
    now = datetime.now(UTC)
    sink = StatusSink(db_url)
    sink_for.append(sink)
    engine = create_engine_for(db_url)
    sessions = make_sessionmaker(engine)
    lease = timedelta(seconds=10)
    try:
        await seed(sessions, contacts_n, zone=noon_zone(now), now=now,
                   spec=make_spec(cap=contacts_n, max_attempts=1))
        with FakeTwilioRest(sink=sink, duration_s=(0.01, 0.02)) as fake:
            frozen = FreezesMidBatch(ACCOUNT, TOKEN, base_url=fake.base_url, sent=sent)
            dead = Dialer(sessions, frozen, public_url, worker="dead", batch_size=contacts_n,
                          parallel_creates=contacts_n, rest_timeout_s=1.0, lease=lease)
            tick = asyncio.create_task(dead.tick())
            for _ in range(500):
                if frozen.tried == contacts_n and len(fake.creates) == sent:
                    break
                await asyncio.sleep(0.01)
            assert (frozen.tried, len(fake.creates)) == (contacts_n, sent)
            _, attempts = await summary(sessions)
            assert [(a.status, a.worker) for a in attempts] == [
                (AttemptStatus.PLACING, "dead")] * contacts_n
            tick.cancel()                                    # killed
            with pytest.raises(asyncio.CancelledError):
                await tick
            frozen.close()
            async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
                clock = [now]
                heir = Dialer(sessions, rest, public_url, worker="heir", rest_timeout_s=1.0,
                              lease=lease, poll_interval_s=0.02, clock=lambda: clock[0])
                assert await heir.tick() == 0                # the lease still runs
                await run_until_idle(heir, clock, lease + timedelta(seconds=1), sessions)
        by_state, attempts = await summary(sessions)
    finally:
        await engine.dispose()
    assert_accounted(fake, by_state, attempts, contacts_n)
    assert len(fake.creates) == contacts_n
    assert [(a.attempt_no, a.worker, a.outcome) for a in attempts] == [
        (1, "dead", "answered")] * contacts_n


async def test_a_failed_results_transaction_leaves_the_calls_to_be_adopted(
    db_url: str, sink_for: list[StatusSink], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The creates went out but recording their sids failed (the database went away): the
    attempts stay ``placing``, and after the lease reconciliation adopts every call."""
    contacts_n = 4
    now = datetime.now(UTC)
    sink = StatusSink(db_url)
    sink_for.append(sink)
    real = batch.record_results
    failures: list[int] = []

    async def fails_first(s: AsyncSession, results: Sequence[batch.CreateResult], *,
                          worker: str, now: datetime) -> list[int]:
        if not failures:
            failures.append(len(results))
            raise ConnectionError("the database went away")
        return await real(s, results, worker=worker, now=now)

    monkeypatch.setattr(batch, "record_results", fails_first)
    engine = create_engine_for(db_url)
    sessions = make_sessionmaker(engine)
    lease = timedelta(seconds=10)
    try:
        await seed(sessions, contacts_n, zone=noon_zone(now), now=now,
                   spec=make_spec(cap=contacts_n, max_attempts=1))
        with FakeTwilioRest(sink=sink, duration_s=(0.01, 0.02)) as fake:
            async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
                clock = [now]
                dialer = Dialer(sessions, rest, public_url, worker="solo",
                                batch_size=contacts_n, parallel_creates=contacts_n,
                                rest_timeout_s=1.0, lease=lease, poll_interval_s=0.02,
                                clock=lambda: clock[0])
                assert await dialer.tick() == contacts_n
                _, attempts = await summary(sessions)
                assert failures == [contacts_n]
                assert {a.status for a in attempts} == {AttemptStatus.PLACING}
                assert len(fake.creates) == contacts_n
                await run_until_idle(dialer, clock, lease + timedelta(seconds=1), sessions)
        by_state, attempts = await summary(sessions)
    finally:
        await engine.dispose()
    assert_accounted(fake, by_state, attempts, contacts_n)
    assert len(fake.creates) == contacts_n
    assert {(a.attempt_no, a.outcome) for a in attempts} == {(1, "answered")}


async def test_a_number_held_twice_in_one_pass_is_dialed_once_under_its_daily_cap(
    db_url: str,
) -> None:
    """Two campaigns hold the same number: the pass counts its first dial against the
    number's daily cap (1) before checking the second contact."""
    now = datetime.now(UTC)
    engine = create_engine_for(db_url)
    sessions = make_sessionmaker(engine)
    try:
        for key in ("c1", "c2"):
            await seed(sessions, 1, key=key, zone=noon_zone(now), now=now,
                       spec=make_spec(cap=1, max_attempts=1))
        with FakeTwilioRest(duration_s=(5.0, 5.0)) as fake:
            async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.base_url) as rest:
                dialer = Dialer(sessions, rest, public_url, worker="solo", rest_timeout_s=1.0,
                                clock=lambda: now)
                assert await dialer.tick() == 2
        contacts = list((await contacts_by_id(sessions)).values())
    finally:
        await engine.dispose()
    assert len(fake.creates) == 1
    assert sorted((c.state, c.skip_reason or "") for c in contacts) == [
        (ContactState.IN_CALL, ""), (ContactState.PENDING, "daily_cap")]


async def test_pending_work_can_stop_counting_at_the_first_contact(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An idle dialer only asks whether any work is left (a campaign of 100,000 contacts is
    not counted 20 times a second)."""
    await seed(db_sessions, 5)
    async with db_sessions() as s:
        assert await store.pending_work(s) == 5
        assert await store.pending_work(s, at_most=1) == 1
        assert await store.pending_work(s, at_most=10) == 5


def test_batch_public_names_are_pinned() -> None:
    assert sorted(batch.__all__) == [
        "Attempt", "CreateResult", "NotSent", "Placed", "Refused", "Skip", "attempt_times",
        "begin_attempts", "counts_for", "open_attempts", "record_results", "record_skips"]
    for name in batch.__all__:
        assert hasattr(batch, name), name
