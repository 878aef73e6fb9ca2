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
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from callagent.agents.profile import AgentProfile, load_profile
from callagent.app import create_app
from callagent.audio.codec import pcm_to_ulaw
from callagent.audio.pcm import Samples
from callagent.audio.wavfile import read_wav
from callagent.config import AgentSettings, RecordingSettings, Settings, TwilioSettings
from callagent.engines.base import CallContext, Engine
from callagent.engines.pipeline.engine import PipelineEngine
from callagent.engines.pipeline.models import shared_models
from callagent.sim.caller import parse_stream_twiml, post_signed, stream_socket
from callagent.sim.playout import CallerPlayout
from callagent.sim.stream import FRAME, CallerStream, Frame
from callagent.sim.twilio_rest import FakeTwilioRest
from callagent.store.db import create_engine_for, make_sessionmaker, sync_url
from callagent.store.models import AuditEvent, Call, DncNumber, ToolCall
from callagent.telephony.twilio.peer import TwilioPeer
from callagent.telephony.twilio.rest import TwilioRest
from tests.e2e.conftest import TOKEN, make_settings, start_service, stop_service
from tests.e2e.test_call_end_to_end import wait_closed

ROOT = Path(__file__).resolve().parents[2]
CARD = "4111111111111111"
CALLER = "+14155550100"  # California: all-party consent
HUMAN = "+12125550199"
RATE = 8000


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


async def scripted_call(base: str, origin: str, call_sid: str, steps: list[Step],
                        *, quiet_s: float = 1.2, limit_s: float = 240.0) -> Caller:  # fmt: skip
    """Each step waits until the agent has spoken since the last one and gone quiet."""
    caller = Caller()
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": CALLER,
            "To": "+15005550001", "CallStatus": "ringing", "Direction": "inbound",
            "ApiVersion": "2010-04-01"}  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await post_signed(http, base, origin, TOKEN, "/twilio/voice", form)
        assert answer.status_code == 200, answer.text
        stream_url, params = parse_stream_twiml(answer.text)
        caller.call_id = params["call_id"]
        ws_url, headers = stream_socket(base, stream_url, TOKEN)
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            await _converse(ws, caller, call_sid, params, steps, quiet_s, limit_s)
        await post_signed(http, base, origin, TOKEN, "/twilio/status",
                    {**form, "CallStatus": "completed", "SequenceNumber": "3"})
    return caller


async def _converse(ws: websockets.ClientConnection, caller: Caller, call_sid: str,
                    params: dict[str, str], steps: list[Step], quiet_s: float,
                    limit_s: float) -> None:  # fmt: skip
    peer = TwilioPeer(stream_sid="MZ" + "1" * 32, call_sid=call_sid, account_sid="AC" + "0" * 32)
    stream = CallerStream(ws, peer, caller.playout, params)
    async with stream:
        try:
            await stream.speak(_Steps(caller, steps, quiet_s, limit_s))
        except websockets.exceptions.ConnectionClosed:
            caller.server_closed = True  # the service hung up (after the transfer) while we were sending
    caller.server_closed = caller.server_closed or stream.server_closed


class _Steps:
    """Takes each step once the agent has spoken since the last one and gone quiet."""

    def __init__(self, caller: Caller, steps: list[Step], quiet_s: float, limit_s: float) -> None:
        self._caller, self._quiet_s, self._limit_s = caller, quiet_s, limit_s
        self._pending = list(steps)
        self._speech = np.zeros(0, np.int16)
        self._heard_before = 0
        self._acted_at = 0.0
        self._pending_reply = True  # the opening is the first reply

    @property
    def done(self) -> bool:
        return False  # the call ends when the service hangs up

    def frame(self, at: float, now: float) -> Frame:
        if at > self._limit_s:
            raise AssertionError(f"the call did not end within {self._limit_s} s: {self._caller.log}")
        playout, t = self._caller.playout, now
        agent_spoke = len(playout.segments) > self._heard_before
        last_end = playout.segments[-1].end if playout.segments else 0.0
        quiet = last_end + self._quiet_s <= t and not len(self._speech)
        keys = ""
        if self._pending and quiet and (agent_spoke or t - self._acted_at > self._quiet_s
                                        and not self._pending_reply):  # fmt: skip
            step = self._pending.pop(0)
            self._caller.log.append(f"{t:6.1f}s keys={step.keys!r} audio={step.audio is not None}")
            keys = step.keys
            if step.audio is not None:
                self._speech = step.audio.copy()
            self._heard_before = len(playout.segments)
            self._acted_at = t
            self._pending_reply = step.expect_reply
        frame, self._speech = self._speech[:FRAME], self._speech[FRAME:]
        if len(frame) < FRAME:
            frame = np.concatenate([frame, np.zeros(FRAME - len(frame), np.int16)])
        return Frame(pcm_to_ulaw(frame), keys)


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
