"""``/twilio/amd`` (async AMD verdicts) and the campaign side of ``/twilio/voice``, on a real
service over loopback, with the local Twilio REST server taking the call updates.

Posts are signed like Twilio's (the service verifies them); SQLite unless named."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from callagent.app import create_app
from callagent.campaigns.settings import VoicemailPolicy
from callagent.campaigns.voicemail import AmdAction, AmdQuery, amd_callback_query, decide
from callagent.sim.twilio_rest import CreatedCall, FakeTwilioRest
from callagent.store.db import create_engine_for
from callagent.store.models import AmdVerdict, AuditEvent, Call, CallStatusEvent
from callagent.telephony.twilio.rest import TwilioRest
from callagent.telephony.twilio.signature import SignatureChecker
from tests.e2e.conftest import TOKEN, make_settings, start_service, stop_service

ACCOUNT = "AC" + "0" * 32
MESSAGE = "Hello, this is Acme about your renewal. Please call us back at 212 555 0100."


@dataclasses.dataclass
class Rig:
    base_url: str
    origin: str
    fake: FakeTwilioRest
    db: AsyncEngine

    async def post(self, path_and_query: str, params: dict[str, str], *,
                   signed: bool = True) -> httpx.Response:
        url = self.origin + path_and_query
        headers = {}
        if signed:
            headers["X-Twilio-Signature"] = SignatureChecker(TOKEN, True).sign(url, params)
        async with httpx.AsyncClient() as http:
            return await http.post(self.base_url + path_and_query, data=params, headers=headers)

    async def call(self) -> CreatedCall:
        """A call in progress at the fake (answered, long enough to be updated)."""
        async with TwilioRest(ACCOUNT, TOKEN, base_url=self.fake.base_url) as rest:
            placed = await rest.place_call(to="+12125550001", from_="+12125550100",
                                           url=self.origin + "/twilio/voice",
                                           status_callback=self.origin + "/twilio/status")
        call = self.fake.by_sid[placed.sid]
        await until(lambda: call.status == "in-progress")
        return call


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


@pytest.fixture
def fake() -> Iterator[FakeTwilioRest]:
    # calls answer after 3 s and last 10 s: the AMD posts below come while they run
    with FakeTwilioRest(auth_token=TOKEN, duration_s=(10.0, 10.0), message_s=0.05) as fake:
        yield fake


@pytest.fixture
async def rig(sqlite_db_url: str, tmp_path: Path, fake: FakeTwilioRest) -> AsyncIterator[Rig]:
    settings = make_settings(sqlite_db_url, tmp_path)
    settings = dataclasses.replace(
        settings, twilio=dataclasses.replace(settings.twilio, api_base_url=fake.base_url))
    server, task = await start_service(settings, create_app(settings))
    db = create_engine_for(sqlite_db_url)
    try:
        yield Rig(f"http://127.0.0.1:{settings.server.port}", settings.server.public_origin,
                  fake, db)
    finally:
        await stop_service(server, task)
        await db.dispose()


def amd_path(policy: VoicemailPolicy, message: str = "") -> str:
    return "/twilio/amd?" + amd_callback_query(AmdQuery(7, "42:1", policy, message))


def verdict(sid: str, answered_by: str) -> dict[str, str]:
    return {"CallSid": sid, "AccountSid": ACCOUNT, "AnsweredBy": answered_by,
            "MachineDetectionDuration": "2310"}


async def stored_verdicts(db: AsyncEngine, sid: str) -> list[tuple[str, int | None]]:
    async with db.connect() as conn:
        rows = await conn.execute(select(AmdVerdict.answered_by, AmdVerdict.detection_ms)
                                  .where(AmdVerdict.call_sid == sid))
        return [(r[0], r[1]) for r in rows.all()]


async def stored_statuses(db: AsyncEngine, sid: str) -> list[tuple[str, int, str | None]]:
    async with db.connect() as conn:
        rows = await conn.execute(select(CallStatusEvent.status, CallStatusEvent.sequence,
                                         CallStatusEvent.answered_by)
                                  .where(CallStatusEvent.call_sid == sid))
        return [(r[0], r[1], r[2]) for r in rows.all()]


async def audit_actions(db: AsyncEngine) -> list[str]:
    async with db.connect() as conn:
        return list((await conn.scalars(select(AuditEvent.action).order_by(AuditEvent.seq))).all())


# --- the pure policy ---------------------------------------------------------------------------

@pytest.mark.parametrize(("answered_by", "hang_up", "leave"), [
    ("human", None, None),
    ("unknown", None, None),
    ("machine_start", None, None),      # reportedly fires on people who pause: never acted on
    ("machine_end_beep", AmdAction.HANG_UP, AmdAction.LEAVE_MESSAGE),
    ("machine_end_silence", AmdAction.HANG_UP, AmdAction.LEAVE_MESSAGE),
    ("machine_end_other", AmdAction.HANG_UP, AmdAction.LEAVE_MESSAGE),
    ("fax", AmdAction.HANG_UP, AmdAction.HANG_UP),
])
def test_the_voicemail_policy_acts_only_once_the_greeting_ended(
    answered_by: str, hang_up: AmdAction | None, leave: AmdAction | None,
) -> None:
    assert decide(answered_by, VoicemailPolicy.HANG_UP) is hang_up
    assert decide(answered_by, VoicemailPolicy.LEAVE_MESSAGE) is leave
    with pytest.raises(ValueError, match="unknown AnsweredBy"):
        decide("machine", VoicemailPolicy.HANG_UP)


# --- the webhook -------------------------------------------------------------------------------

async def test_a_beep_under_leave_message_says_the_message_then_hangs_up(rig: Rig) -> None:
    call = await rig.call()
    resp = await rig.post(amd_path(VoicemailPolicy.LEAVE_MESSAGE, MESSAGE),
                          verdict(call.sid, "machine_end_beep"))
    assert resp.status_code == 204
    await until(lambda: call.ended_at is not None)
    [update] = call.updates
    twiml = update["Twiml"][0]
    assert f"<Say>{MESSAGE}</Say><Hangup /></Response>" in twiml
    assert (call.status, call.ended_by) == ("completed", "update")
    await until_stored(rig, call.sid)
    assert await stored_verdicts(rig.db, call.sid) == [("machine_end_beep", 2310)]
    await until_async(lambda: audit_has(rig.db, "call.voicemail"))
    assert "call.amd" in await audit_actions(rig.db)


async def test_a_machine_under_hang_up_is_hung_up(rig: Rig) -> None:
    call = await rig.call()
    resp = await rig.post(amd_path(VoicemailPolicy.HANG_UP),
                          verdict(call.sid, "machine_end_silence"))
    assert resp.status_code == 204
    await until(lambda: call.ended_at is not None)
    assert [u.get("Status") for u in call.updates] == [["completed"]]
    assert call.ended_by == "update"


async def test_a_fax_is_hung_up_even_when_a_message_would_be_left(rig: Rig) -> None:
    call = await rig.call()
    resp = await rig.post(amd_path(VoicemailPolicy.LEAVE_MESSAGE, MESSAGE),
                          verdict(call.sid, "fax"))
    assert resp.status_code == 204
    await until(lambda: call.ended_at is not None)
    assert [u.get("Status") for u in call.updates] == [["completed"]]


async def test_a_human_is_left_with_the_agent_and_the_verdict_is_stored(rig: Rig) -> None:
    call = await rig.call()
    resp = await rig.post(amd_path(VoicemailPolicy.LEAVE_MESSAGE, MESSAGE),
                          verdict(call.sid, "human"))
    assert resp.status_code == 204
    await until_stored(rig, call.sid)
    assert await stored_verdicts(rig.db, call.sid) == [("human", 2310)]
    assert await stored_statuses(rig.db, call.sid) == []  # a verdict is not a status callback
    assert call.updates == [] and call.ended_at is None


async def test_a_retried_verdict_is_stored_once(rig: Rig) -> None:
    sid = "CA" + "5" * 32
    params = verdict(sid, "machine_end_beep") | {"MachineDetectionDuration": ""}
    for _ in range(2):          # Twilio retries a callback it did not see answered
        resp = await rig.post("/twilio/amd", params)
        assert resp.status_code == 204
    await until_async(lambda: audit_has(rig.db, "call.amd", 2))   # both were written
    assert await stored_verdicts(rig.db, sid) == [("machine_end_beep", None)]


async def test_a_verdict_for_a_call_not_from_a_campaign_is_only_stored(rig: Rig) -> None:
    call = await rig.call()
    resp = await rig.post("/twilio/amd", verdict(call.sid, "machine_end_beep"))
    assert resp.status_code == 204
    await until_stored(rig, call.sid)
    assert call.updates == []


async def test_a_failed_update_is_audited_and_counted(rig: Rig) -> None:
    sid = "CA" + "e" * 32          # Twilio has no such call: the update gets a 404
    resp = await rig.post(amd_path(VoicemailPolicy.LEAVE_MESSAGE, MESSAGE),
                          verdict(sid, "machine_end_beep"))
    assert resp.status_code == 204
    await until_async(lambda: audit_has(rig.db, "call.voicemail"))
    async with rig.db.connect() as conn:
        details = await conn.scalar(select(AuditEvent.details)
                                    .where(AuditEvent.action == "call.voicemail"))
    assert details is not None and '"result":"failed: Twilio 404 (code 20404)' in details
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(rig.base_url + "/metrics")).text
    assert 'callagent_amd_action_failures_total{action="leave_message"} 1' in metrics


BAD_POSTS: list[tuple[str, str, dict[str, str], str]] = [
    ("no AnsweredBy", amd_path(VoicemailPolicy.HANG_UP),
     {"CallSid": "CA" + "1" * 32, "AccountSid": ACCOUNT}, "AnsweredBy: expected one of"),
    ("unknown AnsweredBy", amd_path(VoicemailPolicy.HANG_UP),
     verdict("CA" + "1" * 32, "machine"), "got 'machine'"),
    ("no CallSid", amd_path(VoicemailPolicy.HANG_UP),
     {"AccountSid": ACCOUNT, "AnsweredBy": "human"}, "CallSid: expected CA"),
    ("bad CallSid", amd_path(VoicemailPolicy.HANG_UP),
     verdict("CA123", "human"), "got 'CA123'"),
    ("bad duration", amd_path(VoicemailPolicy.HANG_UP),
     verdict("CA" + "1" * 32, "human") | {"MachineDetectionDuration": "2.3s"},
     "MachineDetectionDuration: expected milliseconds, got '2.3s'"),
    ("bad policy", "/twilio/amd?" + urlencode({"campaign": "7", "voicemail": "shout"}),
     verdict("CA" + "1" * 32, "human"), "voicemail must be one of hang_up, leave_message"),
    ("no message", amd_path(VoicemailPolicy.LEAVE_MESSAGE),
     verdict("CA" + "1" * 32, "human"), "voicemail=leave_message needs a message"),
    ("bad campaign", "/twilio/amd?" + urlencode({"campaign": "x", "voicemail": "hang_up"}),
     verdict("CA" + "1" * 32, "human"), "campaign must be a campaign id, got 'x'"),
]


@pytest.mark.parametrize(("what", "path", "params", "error"), BAD_POSTS,
                         ids=[case[0] for case in BAD_POSTS])
async def test_a_bad_verdict_post_is_refused_precisely_and_records_nothing(
    rig: Rig, what: str, path: str, params: dict[str, str], error: str,
) -> None:
    resp = await rig.post(path, params)
    assert resp.status_code == 400 and error in resp.text, (what, resp.text)
    good = await rig.post(amd_path(VoicemailPolicy.HANG_UP), verdict("CA" + "2" * 32, "human"))
    assert good.status_code == 204
    await until_stored(rig, "CA" + "2" * 32)          # the recorder wrote what came after
    assert await stored_verdicts(rig.db, "CA" + "1" * 32) == []
    assert "call.amd" in await audit_actions(rig.db)
    assert (await audit_actions(rig.db)).count("call.amd") == 1


async def test_an_unsigned_or_forged_verdict_is_refused(rig: Rig) -> None:
    params = verdict("CA" + "3" * 32, "machine_end_beep")
    assert (await rig.post(amd_path(VoicemailPolicy.HANG_UP), params,
                           signed=False)).status_code == 403
    forged = dict(params, AnsweredBy="human")
    url = rig.origin + amd_path(VoicemailPolicy.HANG_UP)
    headers = {"X-Twilio-Signature": SignatureChecker(TOKEN, True).sign(url, params)}
    async with httpx.AsyncClient() as http:
        resp = await http.post(rig.base_url + amd_path(VoicemailPolicy.HANG_UP), data=forged,
                               headers=headers)
    assert resp.status_code == 403
    # the policy in the query is signed too: turning hang_up into leave_message breaks it
    tampered = rig.base_url + amd_path(VoicemailPolicy.LEAVE_MESSAGE, "spam")
    async with httpx.AsyncClient() as http:
        resp = await http.post(tampered, data=params, headers=headers)
    assert resp.status_code == 403
    await until_async(lambda: audit_has(rig.db, "webhook.rejected", 3))
    assert await stored_verdicts(rig.db, "CA" + "3" * 32) == []


async def test_a_campaign_call_opens_with_its_campaign_contact_and_agent(rig: Rig) -> None:
    query = urlencode({"call_id": "c" * 32, "agent": "appointment_reminder", "campaign": "7",
                       "attempt": "42:2"})
    params = {"CallSid": "CA" + "4" * 32, "AccountSid": ACCOUNT, "From": "+12125550100",
              "To": "+12125550001", "CallStatus": "in-progress", "Direction": "outbound-api"}
    resp = await rig.post("/twilio/voice?" + query, params)
    assert resp.status_code == 200 and "<Connect><Stream" in resp.text
    assert '<Parameter name="agent" value="appointment_reminder"' in resp.text
    assert '<Parameter name="direction" value="outbound"' in resp.text

    async def opened() -> bool:
        async with rig.db.connect() as conn:
            return await conn.scalar(select(Call.id).where(Call.id == "c" * 32)) is not None

    await until_async(opened)
    async with rig.db.connect() as conn:
        row = (await conn.execute(select(Call.direction, Call.agent, Call.campaign_id,
                                         Call.contact_id).where(Call.id == "c" * 32))).one()
    assert tuple(row) == ("outbound", "appointment_reminder", 7, 42)


# --- helpers -----------------------------------------------------------------------------------

async def until_async(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def audit_has(db: AsyncEngine, action: str, count: int = 1) -> bool:
    return (await audit_actions(db)).count(action) >= count


async def until_stored(rig: Rig, sid: str) -> None:
    """Until the call has a stored AMD verdict or status callback."""
    async def stored() -> bool:
        return bool(await stored_verdicts(rig.db, sid) or await stored_statuses(rig.db, sid))

    await until_async(stored)
