"""Issue #6, done means: a campaign imported from a CSV with good and bad rows runs against
the local Twilio REST server, with the real service taking Twilio's signed callbacks.

The service (uvicorn on loopback) answers ``/twilio/voice`` (the answered call takes the
inbound path with the campaign's agent), ``/twilio/status`` and ``/twilio/amd``; the fake
Twilio fetches the voice URL, posts status callbacks (without ``AnsweredBy``: the verdict
comes only from the AMD callback) and AMD verdicts, all signed, and takes our call updates.
Dialers run in this process (one on SQLite, two on PostgreSQL; several dialer *processes*
are in ``tests/campaigns/test_dialer.py``). Checked: every eligible contact is called inside
its calling window and once per attempt; ineligible ones are skipped with their reasons
(final ones as skipped attempts, time ones rescheduled to their window); voicemail and
no-answer are retried after their delays up to ``max_attempts``; voicemail is hung up on,
or gets the message after the beep, per campaign; the cap holds; every contact is
accounted for."""

from __future__ import annotations

import asyncio
import dataclasses
import zoneinfo
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.app import create_app
from callagent.campaigns import operations, store
from callagent.campaigns.dialer import Dialer
from callagent.campaigns.eligibility import DncList
from callagent.campaigns.settings import (
    CallingWindow,
    CampaignSpec,
    Purpose,
    RetryDelays,
    VoicemailPolicy,
    Weekday,
)
from callagent.campaigns.store import AttemptStatus, ContactState
from callagent.config import Settings
from callagent.sim.twilio_rest import FakeTwilioRest, Outcome
from callagent.store.db import create_engine_for, make_sessionmaker
from callagent.store.models import AmdVerdict, Call, CallAttempt, Contact
from callagent.telephony.twilio.rest import TwilioRest
from tests.campaigns.test_store import noon_zone, number
from tests.e2e.conftest import TOKEN, make_settings, start_service, stop_service

ACCOUNT = "AC" + "0" * 32
RETRY = timedelta(seconds=0.3)
MESSAGE = "Hello from Acme: your appointment is tomorrow at ten. Call us at 212 555 0100."
CAP = 3

# number index -> (campaign, outcome); campaign "remind" leaves a message, "renew" hangs up
HUMANS = {1: "remind", 2: "remind", 3: "renew", 4: "renew", 5: "renew"}
MACHINES = {6: "remind", 7: "renew"}
NO_ANSWER = {8: "remind", 9: "renew"}
NO_CONSENT = {10: "remind"}
ON_DNC = {11: "renew"}
NIGHT = {12: "remind", 13: "renew"}           # it is night where they live: not called now
BAD_ROWS = {
    "remind": ["not a number,Bad,UTC,PEC,2026-01-01T00:00:00Z,x",
               f"{number(14)},Mars,Mars/Olympus,PEC,2026-01-01T00:00:00Z,x"],
    "renew": [f"{number(15)},Short,UTC,PEC"],
}


def spec(name: str, voicemail: VoicemailPolicy) -> CampaignSpec:
    return CampaignSpec(
        name=name, agent_profile="appointment_reminder" if name == "remind" else "fixture",
        caller_id="+12125550100", purpose=Purpose.INFORMATIONAL,
        window=CallingWindow(time(9), time(20)), allowed_days=frozenset(Weekday),
        max_concurrent_calls=CAP, max_attempts=2, max_attempts_per_day=2,
        retry_delays=RetryDelays(no_answer=RETRY, busy=RETRY, failed=RETRY, voicemail=RETRY),
        voicemail=voicemail,
        voicemail_message=MESSAGE if voicemail is VoicemailPolicy.LEAVE_MESSAGE else "",
    )


def csv_lines(campaign: str, now: datetime) -> list[str]:
    day, night = noon_zone(now), noon_zone(now + timedelta(hours=10))   # ~02:00 there
    lines = ["phone,name,timezone,consent_type,consent_at,note"]
    groups = (HUMANS, MACHINES, NO_ANSWER, NO_CONSENT, ON_DNC, NIGHT)
    for group in groups:
        for i, owner in group.items():
            if owner != campaign:
                continue
            zone = night if group is NIGHT else day
            consent = ",," if group is NO_CONSENT else ",PEC,2026-01-01T00:00:00Z"
            lines.append(f"{number(i)},Person {i},{zone}{consent},n{i}")
    lines[2:2] = BAD_ROWS[campaign]            # bad rows among the good ones
    return [line + "\n" for line in lines]


@dataclasses.dataclass
class Run:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    fake: FakeTwilioRest


@pytest.fixture
async def run(db_url: str, tmp_path: Path) -> AsyncIterator[Run]:
    outcomes = {number(i): Outcome.MACHINE for i in MACHINES}
    outcomes |= {number(i): Outcome.NO_ANSWER for i in NO_ANSWER}
    # answer after ~1 s, AMD verdict after ~1.6 s, a call left alone ends after 3-3.5 s: the
    # voicemail action has well over a second to arrive before that, even on a busy machine
    with FakeTwilioRest(auth_token=TOKEN, outcomes=outcomes, duration_s=(3.0, 3.5),
                        post_callbacks=True, answered_by_in_status=False) as fake:
        settings = make_settings(db_url, tmp_path)
        settings = dataclasses.replace(
            settings, twilio=dataclasses.replace(settings.twilio, api_base_url=fake.base_url))
        server, task = await start_service(settings, create_app(settings))
        engine = create_engine_for(db_url)
        try:
            yield Run(settings, make_sessionmaker(engine), fake)
        finally:
            await stop_service(server, task)
            await engine.dispose()


async def settled(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """Everyone callable now is finished; only the night contacts wait."""
    async with sessions() as s:
        states = list(await s.scalars(select(Contact.state)))
    return states.count(ContactState.PENDING) == len(NIGHT) and all(
        state in (ContactState.DONE, ContactState.SKIPPED, ContactState.PENDING)
        for state in states)


async def test_a_campaign_runs_from_csv_to_every_contact_accounted_for(
    run: Run, db_kind: str,
) -> None:
    now = datetime.now(UTC)
    sessions = run.sessions
    reports = {}
    for name, policy in (("remind", VoicemailPolicy.LEAVE_MESSAGE),
                         ("renew", VoicemailPolicy.HANG_UP)):
        await operations.create(sessions, name, spec(name, policy), actor="test", now=now)
        reports[name] = await operations.import_csv(sessions, name, csv_lines(name, now),
                                                    actor="test", now=now)
        await operations.start(sessions, name, actor="test", now=now)
    async with sessions.begin() as s:
        await store.add_dnc(s, [number(i) for i in ON_DNC], DncList.INTERNAL, now=now)

    # bad rows: reported with their line and reason, the good rows imported
    assert [(e.line, e.reason.name) for e in reports["remind"].errors] == [
        (3, "UNPARSEABLE_PHONE"), (4, "BAD_TIMEZONE")]
    assert [(e.line, e.reason.name) for e in reports["renew"].errors] == [
        (3, "WRONG_FIELD_COUNT")]
    assert reports["remind"].added + reports["renew"].added == 13

    stop = asyncio.Event()
    async with TwilioRest(ACCOUNT, TOKEN, base_url=run.fake.base_url) as rest:
        dialers = [Dialer(sessions, rest, run.settings.public_url, worker=f"e2e-{i}",
                          lease=timedelta(seconds=20), batch_size=4, poll_interval_s=0.05,
                          rest_timeout_s=5.0)
                   for i in range(1 if db_kind == "sqlite" else 2)]
        tasks = [asyncio.create_task(d.run(stop)) for d in dialers]
        deadline = asyncio.get_running_loop().time() + 90
        while not await settled(sessions):
            assert asyncio.get_running_loop().time() < deadline, "the campaign never settled"
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

    async with sessions() as s:
        contacts = {c.e164: c for c in await s.scalars(select(Contact))}
        attempts = list(await s.scalars(select(CallAttempt).order_by(CallAttempt.id)))
        calls = {c.twilio_call_sid: c for c in await s.scalars(select(Call))}
        amd = {v.call_sid: v.answered_by for v in await s.scalars(select(AmdVerdict))}
        campaigns = {c.key: c for c in await store.running_campaigns(s)}
    fake = run.fake
    assert not fake.callback_errors

    # once per attempt: each idempotency key dialed once, each create a recorded attempt
    assert set(fake.creates_per_key().values()) == {1}
    dialed = {a.call_sid: a for a in attempts if a.call_sid}
    assert set(dialed) == {c.sid for c in fake.creates}
    assert all(a.status in (AttemptStatus.ENDED, AttemptStatus.SKIPPED) for a in attempts)

    # every call inside the callee's window, on an allowed day, local time
    for call in fake.creates:
        zone = zoneinfo.ZoneInfo(contacts[call.one("To")].timezones.strip('[]"'))
        local = call.created_at.astimezone(zone)
        assert time(9) <= local.time() < time(20), (call.one("To"), local)

    def tries(i: int) -> list[CallAttempt]:
        return [a for a in attempts if a.e164 == number(i)]

    # people answered: one attempt, done, the call opened with the campaign's agent
    for i, name in HUMANS.items():
        [a] = tries(i)
        assert (a.outcome, contacts[number(i)].state) == ("answered", ContactState.DONE)
        assert a.call_sid is not None
        row = calls[a.call_sid]
        assert (row.direction, row.agent, row.campaign_id, row.contact_id) == (
            "outbound", campaigns[name].spec.agent_profile, campaigns[name].id, a.contact_id)
        created = next(c for c in fake.creates if c.sid == a.call_sid)
        assert f'value="{campaigns[name].spec.agent_profile}"' in created.voice_twiml
        assert amd[a.call_sid] == "human" and created.updates == []

    # machines: voicemail, retried once after its delay; the policy ran on each call
    for i, name in MACHINES.items():
        first, second = tries(i)
        assert (first.outcome, second.outcome) == ("voicemail", "voicemail")
        assert first.ended_at is not None and second.created_at >= first.ended_at + RETRY
        for a in (first, second):
            assert a.call_sid is not None and amd[a.call_sid] == "machine_end_beep"
            created = next(c for c in fake.creates if c.sid == a.call_sid)
            assert created.ended_by == "update"
            [update] = created.updates
            if name == "remind":
                assert f"<Say>{MESSAGE}</Say><Hangup />" in update["Twiml"][0]
            else:
                assert update["Status"] == ["completed"]
        assert contacts[number(i)].state == ContactState.DONE

    # no answer: retried once after its delay, then done
    for i in NO_ANSWER:
        first, second = tries(i)
        assert (first.outcome, second.outcome) == ("no_answer", "no_answer")
        assert first.ended_at is not None and second.created_at >= first.ended_at + RETRY

    # skipped with their reasons: final ones as a skipped attempt, never dialed
    for i, reason in [*((i, "no_consent") for i in NO_CONSENT),
                      *((i, "internal_dnc") for i in ON_DNC)]:
        [a] = tries(i)
        assert (a.status, a.skip_reason, a.call_sid) == (AttemptStatus.SKIPPED, reason, None)
        assert contacts[number(i)].state == ContactState.SKIPPED
    # ... time ones rescheduled to the opening of their window, not called
    for i in NIGHT:
        contact = contacts[number(i)]
        assert tries(i) == [] and contact.attempts == 0
        assert (contact.state, contact.skip_reason, contact.claimed_by) == (
            ContactState.PENDING, "outside_hours", None)
        assert contact.next_attempt_at is not None
        opens = contact.next_attempt_at.astimezone(zoneinfo.ZoneInfo(
            contact.timezones.strip('[]"')))
        assert opens.time() == time(9) and contact.next_attempt_at > now

    # the cap held per campaign, across the dialers
    for name in ("remind", "renew"):
        assert 1 <= fake.max_in_progress[str(campaigns[name].id)] <= CAP
    # every imported contact accounted for
    assert len(contacts) == 13
    assert sorted(c.state for c in contacts.values()) == sorted(
        [ContactState.DONE] * 9 + [ContactState.SKIPPED] * 2 + [ContactState.PENDING] * 2)
    assert len(fake.creates) == len(HUMANS) + 2 * len(MACHINES) + 2 * len(NO_ANSWER)
