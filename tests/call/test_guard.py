"""The in-call guard on a real recorder and database, with a local Twilio REST server."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from callagent.audio.codec import pcm_to_ulaw
from callagent.call.guard import number_digest
from callagent.call.transfer import TransferError
from callagent.store.db import make_sessionmaker
from callagent.store.models import Call, DncNumber, ToolCall
from callagent.telephony.twilio.rest import TwilioRestError
from tests.call.guard_env import GuardEnv, answered_call, guard_env

AI = "Hi, you've reached Acme Supplies' automated assistant."
REC = "This call is recorded for quality and training."


def actions(audit: list[tuple[str, dict[str, object]]]) -> list[str]:
    return [a for a, _ in audit]


def opening(guard_: object, env: GuardEnv) -> None:
    from callagent.call.guard import CallGuard

    assert isinstance(guard_, CallGuard)
    # the engine splits the first sentence at its first clause
    guard_.agent_segment("a1:1", "Hi,", False)
    guard_.agent_segment("a1:2", "you've reached Acme Supplies' automated assistant.", False)
    guard_.agent_segment("a1:3", REC, False)
    guard_.agent_segment("a1:4", "Thanks for calling.", True)
    guard_.agent_segment("a1:5", "Not a disclosure.", False)  # after the opening: ignored


async def test_disclosures_heard_give_consent_and_a_linked_recording(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        g = env.guard(from_number="+14155550100")  # California: all-party consent
        await g.load()
        g.caller_audio(np.full(160, 1000, np.int16))  # before consent: not kept
        opening(g, env)
        for i, mark in enumerate(("a1:1", "a1:2", "a1:3")):
            env.tick(1000)
            g.mark_echoed(mark)
        g.caller_audio(np.full(160, 2000, np.int16))
        g.agent_ulaw(3000.0, pcm_to_ulaw(np.full(160, -2000, np.int16)))
        await g.close()
        audit = await env.audit(g.call.call_id)
        async with make_sessionmaker(env.db)() as s:
            row = await s.get(Call, g.call.call_id)
    heard = [d for a, d in audit if a == "disclosure.heard"]
    assert [(d["kind"], d["heard_at_ms"]) for d in heard] == [("ai", 2000.0), ("recording", 3000.0)]
    assert heard[0]["marks"] == ["a1:1", "a1:2"] and heard[1]["text"] == REC
    assert actions(audit) == ["disclosure.heard", "disclosure.heard", "consent.given",
                              "recording.started", "recording.saved"]
    assert row is not None and row.recording_policy == "all-party"
    assert row.recording_path == str(tmp_path / "recordings" / f"{g.call.call_id}.wav")
    with wave.open(row.recording_path) as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    assert (frames[:160, 0] == 0).all()  # the audio before consent was not kept
    assert abs(int(frames[160, 0]) - 2000) < 100 and abs(int(frames[24000, 1]) + 2000) < 100


async def test_a_call_that_ends_first_records_disclosure_not_heard_and_keeps_no_audio(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        g = env.guard(from_number="+14155550100")
        await g.load()
        opening(g, env)
        g.mark_echoed("a1:1")
        g.mark_echoed("a1:2")
        g.caller_audio(np.full(160, 1000, np.int16))
        await g.close()
        audit = await env.audit(g.call.call_id)
    assert actions(audit) == ["disclosure.heard", "disclosure.not_heard"]
    assert audit[1][1] == {"kind": "recording", "reason": "the call ended before it was heard"}
    assert not (tmp_path / "recordings").exists()


async def test_one_party_records_at_once_and_a_refusal_stops_it(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        g = env.guard(from_number="+12125550100", to_number="+12125550101")  # New York
        await g.load()
        g.caller_audio(np.full(160, 1000, np.int16))
        g.caller_text("Please don't record this.")
        g.caller_audio(np.full(160, 3000, np.int16))  # not kept any more
        await g.close()
        audit = await env.audit(g.call.call_id)
    assert actions(audit)[:3] == ["recording.started", "consent.refused", "recording.stopped"]
    assert audit[0][1]["policy"] == "one-party"
    assert audit[0][1]["reasons"] == ["NY: one-party", "NY: one-party"]
    assert audit[2][1] == {"reason": "consent refused", "discarded": False}
    with wave.open(str(tmp_path / "recordings" / f"{g.call.call_id}.wav")) as w:
        assert w.getnframes() == 160  # only the audio from before the refusal


async def test_secure_capture_keeps_only_masked_digits_and_pauses_recording(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        g = env.guard(from_number="+12125550100", to_number="+12125550101")  # one-party
        await g.load()
        assert g.dtmf("*") and g.secure
        g.caller_audio(np.full(160, 1000, np.int16))  # spoken during capture: not kept
        assert all(g.dtmf(d) for d in "4111111111111111#")
        assert not g.secure and not g.dtmf("1")  # the next key goes to the engine
        await g.close()
        audit = await env.audit(g.call.call_id)
        async with make_sessionmaker(env.db)() as s:
            tools = (await s.execute(select(ToolCall))).scalars().all()
    assert actions(audit) == ["recording.started", "secure_capture.started", "recording.paused",
                              "secure_capture.ended", "recording.resumed", "disclosure.not_heard",
                              "disclosure.not_heard"]  # nothing else was said: no file
    assert audit[3][1] == {"masked": "************1111", "length": 16, "ended_by": "end_key"}
    [tool] = tools
    assert tool.name == "secure_capture" and "************1111" in tool.result
    assert "4111111111111111" not in repr(audit) + tool.result + tool.arguments


async def test_a_capture_cut_short_by_the_end_of_the_call_is_audited(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        g = env.guard()
        await g.load()
        g.dtmf("*")
        g.dtmf("4")
        await g.close()
        audit = await env.audit(g.call.call_id)
    assert ("secure_capture.ended", {"masked": "*", "length": 1, "ended_by": "call ended"}) in audit


async def test_opt_out_by_phrase_or_by_the_agent_puts_the_number_on_the_dnc_list(
    db_url: str, tmp_path: Path
) -> None:
    async with guard_env(db_url, tmp_path) as env:
        by_phrase = env.guard(from_number="+13125550123")
        await by_phrase.load()
        by_phrase.caller_text("please take me off your list")
        by_phrase.caller_text("and stop calling me")  # once is enough
        keyed = env.guard(from_number="+14155550100")
        await keyed.load()
        assert keyed.dtmf("9") is False  # the key is the engine's to interpret
        assert keyed.record_opt_out("agent") == "+14155550100"  # the engine says opt-out
        outbound = env.guard(from_number="+15005550006", to_number="+12125550100",
                             direction="outbound")
        await outbound.load()
        assert outbound.record_opt_out("agent") == "+12125550100"
        phrase_audit = await env.audit(by_phrase.call.call_id)
        keyed_audit = await env.audit(keyed.call.call_id)
        async with make_sessionmaker(env.db)() as s:
            dnc = sorted((r.e164, r.source) for r in (await s.execute(select(DncNumber))).scalars())
    assert dnc == [("+12125550100", "internal"), ("+13125550123", "internal"),
                   ("+14155550100", "internal")]
    assert actions(phrase_audit).count("call.opt_out") == 1
    assert ("call.opt_out", {"channel": "spoken", "recorded": True, "list": "internal",
                             "number": number_digest("+13125550123")}) in phrase_audit
    assert actions(keyed_audit).count("call.opt_out") == 1
    assert "+14155550100" not in repr(keyed_audit)


async def test_digits_that_contain_the_opt_out_key_are_not_an_opt_out(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        g = env.guard()
        await g.load()
        assert [g.dtmf(d) for d in "45729#"] == [False] * 6
        g.caller_text("my order number is four five seven two nine")
        audit = await env.audit(g.call.call_id)
    assert "call.opt_out" not in actions(audit)


async def test_an_opt_out_from_a_number_that_is_not_e164_is_audited_as_not_recorded(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        g = env.guard(from_number="client:alice")
        await g.load()
        assert g.record_opt_out("voice") == ""
        audit = await env.audit(g.call.call_id)
    assert audit == [("call.opt_out", {"channel": "voice", "recorded": False,
                                       "error": "the caller's number is not an E.164 number"})]


async def test_transfer_updates_the_live_call_with_dial_twiml(sqlite_db_url: str, tmp_path: Path) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        sid = await answered_call(env)
        g = env.guard(call_sid=sid)
        await g.load()
        await g.transfer("+12125550199", True, "Caller about order 45729")
        audit = await env.audit(g.call.call_id)
        [update] = env.fake.by_sid[sid].updates
    twiml = update["Twiml"][0]
    assert "<Dial><Number url=" in twiml and "+12125550199</Number>" in twiml
    assert "/twilio/whisper?text=Caller+about+order+45729" in twiml
    assert ("call.transfer", {"target": "+12125550199", "warm": True}) in audit


async def test_a_failed_transfer_is_audited_and_raised(sqlite_db_url: str, tmp_path: Path) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        g = env.guard(call_sid="CA" + "0" * 32)  # Twilio has no such call
        await g.load()
        with pytest.raises(TwilioRestError):
            await g.transfer("+12125550199", False, "")
        with pytest.raises(TransferError):
            await g.transfer("reception", False, "")
        audit = await env.audit(g.call.call_id)
    failed = [d for a, d in audit if a == "call.transfer_failed"]
    assert len(failed) == 2 and "20404" in str(failed[0]["error"])
    assert "expected +E.164" in str(failed[1]["error"])


async def test_hang_up_of_a_call_that_already_ended_is_not_an_error(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    async with guard_env(sqlite_db_url, tmp_path) as env:
        gone = env.guard(call_sid="CA" + "1" * 32)
        await gone.load()
        await gone.hang_up("done")  # 404: already over
        sid = await answered_call(env)
        live = env.guard(call_sid=sid)
        await live.load()
        await live.hang_up("done")
        assert env.fake.by_sid[sid].status == "completed"
        await live.hang_up("again")  # ended: still fine
