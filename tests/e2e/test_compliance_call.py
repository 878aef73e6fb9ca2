"""Done for issue #5: one simulated call through the running service, with the real
pipeline engine, a local Twilio REST server, and the real `callagent audit verify`.

The caller (from California: all-party recording consent) hears the disclosures,
asks for order status by keypad, reads a card number aloud when asked for the
order number, types a card number in secure capture (``*`` ... ``#``), keys the
order number (a tool call), asks not to be called again, and is transferred to
a person (the test agent's opt-out node goes on to the hand-off).

Afterwards: no card digits anywhere in the database, the journal or the logs;
the disclosures' heard events; the tool call with its timing; the number on the
do-not-call list; the transfer's TwiML at Twilio; a recording linked to the
call; and an audit chain that `callagent audit verify` accepts, and rejects
after one row is edited.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import websockets
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from callagent.agents.profile import AgentProfile, load_profile
from callagent.app import create_app
from callagent.audio.codec import pcm_to_ulaw, ulaw_to_pcm
from callagent.audio.pcm import Samples
from callagent.audio.wavfile import read_wav
from callagent.config import AgentSettings, RecordingSettings, Settings, TwilioSettings
from callagent.engines.base import CallContext, Engine
from callagent.engines.pipeline.engine import PipelineEngine
from callagent.engines.pipeline.models import shared_models
from callagent.sim.caller import parse_stream_twiml
from callagent.sim.playout import CallerPlayout
from callagent.sim.twilio_rest import FakeTwilioRest
from callagent.store.db import create_engine_for, make_sessionmaker, sync_url
from callagent.store.models import AuditEvent, Call, DncNumber, ToolCall
from callagent.telephony.twilio.peer import OutboundClear, OutboundMark, OutboundMedia, TwilioPeer
from callagent.telephony.twilio.rest import TwilioRest
from callagent.telephony.twilio.signature import SignatureChecker
from tests.e2e.conftest import TOKEN, make_settings, start_service, stop_service
from tests.e2e.test_call_end_to_end import wait_closed

ROOT = Path(__file__).resolve().parents[2]
CARD = "4111111111111111"
CALLER = "+14155550100"  # California: all-party consent
HUMAN = "+12125550199"
RATE, FRAME = 8000, 160


def compliance_profile(directory: Path) -> Path:
    """The shipped customer_service agent, whose opt-out goes on to the hand-off."""
    source = (ROOT / "config" / "agents" / "customer_service.toml").read_text()
    end_node = ('[flow.nodes.opt_out]\nkind = "end"\nreason = "opt_out"\n'
                'say = "Understood. We won\'t call this number again. Goodbye."')
    assert end_node in source, "the shipped profile changed: update this test's agent"
    source = source.replace(end_node, '[flow.nodes.opt_out]\nkind = "say"\n'
                            'say = "Understood. We won\'t call this number again."\nnext = "handoff"')
    source = source.replace('target = "queue:customer-service"', f'target = "{HUMAN}"')
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "customer_service.toml"
    path.write_text(source)
    return path


# ---- a caller that reacts to the agent --------------------------------------------


@dataclass(frozen=True)
class Step:
    keys: str = ""
    audio: Samples | None = None
    expect_reply: bool = True  # wait for the agent to answer before the next step


@dataclass
class Caller:
    playout: CallerPlayout = field(default_factory=CallerPlayout)
    log: list[str] = field(default_factory=list)
    call_id: str = ""
    server_closed: bool = False


async def _post(http: httpx.AsyncClient, base: str, origin: str, path: str,
                form: dict[str, str]) -> httpx.Response:  # fmt: skip
    signature = SignatureChecker(TOKEN, True).sign(origin + path, form)
    return await http.post(base + path, data=form, headers={"X-Twilio-Signature": signature})


async def scripted_call(base: str, origin: str, call_sid: str, steps: list[Step],
                        *, quiet_s: float = 1.2, limit_s: float = 240.0) -> Caller:  # fmt: skip
    """Each step waits until the agent has spoken since the last one and gone quiet."""
    caller = Caller()
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": CALLER,
            "To": "+15005550001", "CallStatus": "ringing", "Direction": "inbound",
            "ApiVersion": "2010-04-01"}  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await _post(http, base, origin, "/twilio/voice", form)
        assert answer.status_code == 200, answer.text
        stream_url, params = parse_stream_twiml(answer.text)
        caller.call_id = params["call_id"]
        ws_url = f"ws://{urlsplit(base).netloc}{urlsplit(stream_url).path}"
        headers = {"X-Twilio-Signature": SignatureChecker(TOKEN, True).sign(stream_url)}
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            await _converse(ws, caller, call_sid, params, steps, quiet_s, limit_s)
        await _post(http, base, origin, "/twilio/status",
                    {**form, "CallStatus": "completed", "SequenceNumber": "3"})
    return caller


async def _converse(ws: websockets.ClientConnection, caller: Caller, call_sid: str,
                    params: dict[str, str], steps: list[Step], quiet_s: float,
                    limit_s: float) -> None:  # fmt: skip
    peer = TwilioPeer(stream_sid="MZ" + "1" * 32, call_sid=call_sid, account_sid="AC" + "0" * 32)
    playout = caller.playout
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    await ws.send(peer.connected())
    await ws.send(peer.start(custom_parameters=params))
    closed = asyncio.Event()

    async def receive() -> None:
        try:
            async for message in ws:
                t = now()
                for event in peer.receive(message):
                    if isinstance(event, OutboundMedia):
                        playout.on_media(ulaw_to_pcm(event.ulaw), t)
                    elif isinstance(event, OutboundMark):
                        playout.on_mark(event.name, t)
                    elif isinstance(event, OutboundClear):
                        for name in playout.on_clear(t):
                            await ws.send(peer.mark(name))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            closed.set()

    receiver = asyncio.create_task(receive())
    try:
        await _pace(ws, peer, caller, closed, steps, quiet_s, limit_s, now)
    except websockets.exceptions.ConnectionClosed:
        pass  # the service hung up (after the transfer) while we were sending
    finally:
        await ws.close()
        await receiver
    caller.server_closed = closed.is_set()


async def _pace(ws: websockets.ClientConnection, peer: TwilioPeer, caller: Caller,
                closed: asyncio.Event, steps: list[Step], quiet_s: float, limit_s: float,
                now: Callable[[], float]) -> None:  # fmt: skip
    """Send 20 ms frames in real time, echo marks as they play, take the steps."""
    playout = caller.playout
    pending = list(steps)
    speech = np.zeros(0, np.int16)
    heard_before = 0
    acted_at = 0.0
    pending_reply = True  # the opening is the first reply
    sent = 0
    while not closed.is_set():
        target = sent * FRAME / RATE
        if target > limit_s:
            raise AssertionError(f"the call did not end within {limit_s} s: {caller.log}")
        delay = target - now()
        if delay > 0:
            with_timeout = asyncio.wait_for(closed.wait(), timeout=delay)
            try:
                await with_timeout
            except TimeoutError:
                pass
            if closed.is_set():
                break
        t = now()
        for name in playout.due_marks(t):
            await ws.send(peer.mark(name))
        agent_spoke = len(playout.segments) > heard_before
        last_end = playout.segments[-1].end if playout.segments else 0.0
        quiet = last_end + quiet_s <= t and not len(speech)
        if pending and quiet and (agent_spoke or t - acted_at > quiet_s and not pending_reply):
            step = pending.pop(0)
            caller.log.append(f"{t:6.1f}s keys={step.keys!r} audio={step.audio is not None}")
            for key in step.keys:
                await ws.send(peer.dtmf(key))
            if step.audio is not None:
                speech = step.audio.copy()
            heard_before = len(playout.segments)
            acted_at = t
            pending_reply = step.expect_reply
        frame, speech = (speech[:FRAME], speech[FRAME:]) if len(speech) else (
            np.zeros(FRAME, np.int16), speech)
        if len(frame) < FRAME:
            frame = np.concatenate([frame, np.zeros(FRAME - len(frame), np.int16)])
        await ws.send(peer.media(pcm_to_ulaw(frame), timestamp_ms=int(1000 * target)))
        sent += 1


# ---- the test --------------------------------------------------------------------------


def dump_database(url: str) -> str:
    """Every row of every table, as text."""
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            out = []
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    out.append(f"{table}: {tuple(row)}")
            return "\n".join(out)
    finally:
        engine.dispose()


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callagent", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=ROOT, timeout=120)


async def wait_linked(db: AsyncEngine, call_id: str) -> None:
    for _ in range(300):
        async with make_sessionmaker(db)() as s:
            done = await s.scalar(select(AuditEvent.seq).where(
                AuditEvent.call_id == call_id, AuditEvent.action == "recording.saved"))
        if done is not None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_id}: the recording was never saved")


def builder(profile: AgentProfile) -> Callable[[Settings], Callable[[CallContext], Engine]]:
    models = shared_models({profile.name: profile})  # loaded before the service starts

    def engines(settings: Settings) -> Callable[[CallContext], Engine]:
        return lambda call: PipelineEngine(profile, models)

    return engines


async def test_a_call_with_card_numbers_a_tool_an_opt_out_and_a_transfer(
    sqlite_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    profile = load_profile(compliance_profile(tmp_path / "agents"))
    engines = builder(profile)
    clips = ROOT / "tests" / "fixtures" / "audio"
    card_audio = read_wav(clips / "card_spoken.wav").samples
    stop_calling = read_wav(clips / "stop_calling_me.wav").samples

    with FakeTwilioRest(auth_token=TOKEN, duration_s=(900.0, 900.0)) as fake:
        async with TwilioRest("AC" + "0" * 32, TOKEN, base_url=fake.base_url) as rest:
            placed = await rest.place_call(to=CALLER, from_="+15005550001",
                                           url="http://127.0.0.1:9/twilio/voice",
                                           status_callback="http://127.0.0.1:9/twilio/status",
                                           machine_detection=None)  # fmt: skip
        fake.by_sid[placed.sid].status = "in-progress"  # the caller is on the line

        base = make_settings(sqlite_db_url, tmp_path)
        settings = dataclasses.replace(
            base,
            twilio=dataclasses.replace(base.twilio, api_base_url=fake.base_url),
            agent=AgentSettings(default_profile="customer_service", engine="pipeline"),
            recording=RecordingSettings(directory=str(tmp_path / "recordings")),
        )
        app = create_app(settings, engines)
        server, task = await start_service(settings, app)
        db = create_engine_for(sqlite_db_url)
        try:
            origin = settings.server.public_origin
            caller = await scripted_call(origin, origin, placed.sid, [
                Step(keys="1"),                                   # order status
                Step(audio=card_audio),                           # reads the card aloud
                Step(keys="*" + CARD + "#", expect_reply=False),  # types it: secure capture
                Step(keys="45729#"),                              # the order number: a tool
                Step(audio=stop_calling),                         # opt-out -> hand-off
            ])
            assert caller.server_closed and len(caller.log) == 5, caller.log
            call = await wait_closed(db, caller.call_id, timeout=30)
            await wait_linked(db, caller.call_id)  # the recording is finished after the close
            async with make_sessionmaker(db)() as s:
                audit = (await s.execute(select(AuditEvent).where(
                    AuditEvent.call_id == caller.call_id).order_by(AuditEvent.seq))).scalars().all()
                tools = (await s.execute(select(ToolCall).where(
                    ToolCall.call_id == caller.call_id))).scalars().all()
                dnc = (await s.execute(select(DncNumber.e164, DncNumber.source))).all()
                row = await s.get(Call, caller.call_id)
        finally:
            await stop_service(server, task)
            await db.dispose()
        updates = fake.by_sid[placed.sid].updates

    actions = [a.action for a in audit]
    details = {a.action: json.loads(a.details) for a in audit}
    print("\n".join(caller.log))
    print(actions)

    # no card digits anywhere: database, journal, logs
    everything = dump_database(sqlite_db_url)
    spaced = " ".join(CARD)
    for place, content in (("database", everything), ("logs", caplog.text)):
        assert CARD not in content and spaced not in content, place
    for f in (tmp_path / "journal").glob("*"):
        assert CARD not in f.read_text(errors="replace")
    # the card read aloud was recognised and masked before its turn was stored
    assert any(json.loads(a.details).get("kind") == "pan" for a in audit
               if a.action == "redaction.applied")  # fmt: skip

    # the disclosures were heard (mark echoes), then consent and recording
    heard = {json.loads(a.details)["kind"]: json.loads(a.details) for a in audit
             if a.action == "disclosure.heard"}  # fmt: skip
    assert set(heard) == {"ai", "recording"} and 0 < heard["ai"]["heard_at_ms"] <= heard[
        "recording"]["heard_at_ms"]
    assert actions.index("consent.given") > actions.index("disclosure.heard")

    # secure capture: only masked digits, recording paused meanwhile
    assert details["secure_capture.ended"] == {"masked": "************1111", "length": 16,
                                               "ended_by": "end_key"}
    assert "recording.paused" in actions and "recording.resumed" in actions

    # the tool call, with its timing
    lookups = [t for t in tools if t.name == "lookup_order"]
    assert lookups and lookups[-1].status == "ok" and lookups[-1].duration_ms > 0
    assert json.loads(lookups[-1].arguments) == {"order_number": "45729"}
    assert any(a.action == "tool.called" for a in audit)

    # opt-out: on the do-not-call list before the call ended
    assert (CALLER, "internal") in dnc
    assert actions.index("call.opt_out") < actions.index("call.ended")
    assert details["call.opt_out"]["channel"] == "spoken"
    assert actions.index("tool.called") < actions.index("call.opt_out") < actions.index(
        "call.transfer")

    # transfer: the live call was updated with <Dial>
    assert [u["Twiml"][0] for u in updates if "Twiml" in u] == [
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number>{HUMAN}</Number>'
        "</Dial></Response>"]
    assert details["call.transfer"] == {"target": HUMAN, "warm": False}
    assert call.end_reason == "transfer"

    # the recording: two channels, linked to the call
    assert row is not None and row.recording_policy == "all-party" and row.recording_path
    with wave.open(row.recording_path) as w:
        assert w.getnchannels() == 2 and w.getframerate() == RATE and w.getnframes() > RATE

    # the audit chain: accepted by `callagent audit verify`, refused after an edit
    env = {"CALLAGENT_DATABASE_URL": sqlite_db_url}
    ok = run_cli("audit", "verify", "--no-checkpoint", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    edited = create_engine(sync_url(sqlite_db_url), poolclass=NullPool)
    with edited.begin() as conn:
        conn.execute(text("UPDATE audit_events SET details = :d WHERE action = 'call.opt_out'"),
                     {"d": json.dumps({"channel": "none"})})
    edited.dispose()
    broken = run_cli("audit", "verify", "--no-checkpoint", env=env)
    assert broken.returncode == 1, broken.stdout + broken.stderr
