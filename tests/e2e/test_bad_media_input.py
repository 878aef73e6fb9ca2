"""Bad input on a live media stream: a precise rejection, a counter, and the call goes on."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import websockets
from sqlalchemy import select

from callagent.sim.caller import parse_stream_twiml
from callagent.store.db import make_sessionmaker
from callagent.store.models import Call, CallMetric, Turn
from callagent.telephony.twilio.peer import OutboundMedia, TwilioPeer
from callagent.telephony.twilio.signature import SignatureChecker
from tests.e2e.conftest import TOKEN, LiveService
from tests.e2e.test_call_end_to_end import wait_closed

SILENCE = b"\xff" * 160
SILENCE_B64 = base64.b64encode(SILENCE).decode()


async def open_call(live: LiveService) -> tuple[str, dict[str, str]]:
    form = {
        "CallSid": "CA" + "2" * 32,
        "AccountSid": "AC" + "0" * 32,
        "From": "+15005550006",
        "To": "+15005550001",
        "Direction": "inbound",
    }
    signer = SignatureChecker(TOKEN, True)
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{live.base_url}/twilio/voice",
            data=form,
            headers={"X-Twilio-Signature": signer.sign(live.settings.public_url("/twilio/voice"), form)},
        )
    assert resp.status_code == 200
    return parse_stream_twiml(resp.text)


def connect(live: LiveService, url: str) -> websockets.connect:
    signature = SignatureChecker(TOKEN, True).sign(url)
    return websockets.connect(
        f"ws://127.0.0.1:{live.settings.server.port}/twilio/media",
        additional_headers={"X-Twilio-Signature": signature},
    )


async def metrics_of(live: LiveService, call_id: str) -> dict[str, float]:
    async with make_sessionmaker(live.db)() as s:
        rows = (await s.execute(select(CallMetric).where(
            CallMetric.call_id == call_id, CallMetric.turn_id == ""))).scalars()  # call-level
        return {m.name: m.value for m in rows}


async def test_each_bad_message_is_rejected_and_the_call_goes_on(live: LiveService) -> None:
    url, params = await open_call(live)
    peer = TwilioPeer(stream_sid="MZ" + "3" * 32, call_sid="CA" + "2" * 32, account_sid="AC" + "0" * 32)
    sid = peer.stream_sid or "MZ" + "3" * 32
    bad_messages: list[str | bytes] = [
        "this is not json",
        b"\x00\x01binary frame",
        json.dumps([1, 2, 3]),
        json.dumps({"event": "flash", "streamSid": sid, "sequenceNumber": "90"}),
        json.dumps({"event": "media", "streamSid": sid, "sequenceNumber": "91"}),  # no body
        json.dumps({"event": "media", "streamSid": sid, "sequenceNumber": "92",
                    "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "%%%"}}),
        json.dumps({"event": "media", "streamSid": sid, "sequenceNumber": "93",
                    "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "/w=="}}),
        json.dumps({"event": "media", "streamSid": sid, "sequenceNumber": "94",
                    "media": {"track": "inbound", "chunk": 1, "timestamp": "0", "payload": SILENCE_B64}}),
        json.dumps({"event": "dtmf", "streamSid": sid, "sequenceNumber": "95",
                    "dtmf": {"track": "inbound_track", "digit": "X"}}),
        json.dumps({"event": "mark", "streamSid": "MZother", "sequenceNumber": "96", "mark": {"name": "x"}}),
        "x" * (live.settings.media.max_message_bytes + 1),
    ]
    heard_media = 0
    async with connect(live, url) as ws:
        # Media before start is refused too, and does not end the call.
        await ws.send(peer.connected())
        early = json.dumps({"event": "media", "streamSid": sid, "sequenceNumber": "1",
                            "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "/w=="}})
        await ws.send(early)
        await ws.send(peer.start(custom_parameters=params))
        for message in bad_messages:
            await ws.send(message)
        # The call is alive: the greeting streams to us while we keep sending audio.
        for _ in range(40):
            await ws.send(peer.media(SILENCE))
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=0.05)
            except TimeoutError:
                continue
            heard_media += sum(isinstance(e, OutboundMedia) for e in peer.receive(message))
        await ws.send(peer.stop())
    assert heard_media > 0

    call = await wait_closed(live.db, params["call_id"])
    assert call.end_reason == "caller hung up"
    metrics = await metrics_of(live, params["call_id"])
    assert metrics["rejected_messages"] == len(bad_messages) + 1
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{live.base_url}/metrics")).text
    for reason in ("not_json", "binary_frame", "not_object", "unknown_event", "missing_field",
                   "bad_base64", "bad_frame_size", "wrong_type", "bad_digit",
                   "stream_sid_mismatch", "too_large", "out_of_order"):
        assert f'callagent_media_rejections_total{{reason="{reason}"}}' in text, reason


async def test_unsupported_audio_format_ends_the_call_with_its_reason(live: LiveService) -> None:
    url, params = await open_call(live)
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": "MZ" + "4" * 32,
        "start": {
            "accountSid": "AC" + "0" * 32,
            "streamSid": "MZ" + "4" * 32,
            "callSid": "CA" + "2" * 32,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1},
            "customParameters": params,
        },
    }
    async with connect(live, url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps(start))
        # The server closes the stream (Twilio then runs <Hangup/>).
        await asyncio.wait_for(ws.wait_closed(), timeout=5)
    call = await wait_closed(live.db, params["call_id"])
    assert call.end_reason is not None
    assert call.end_reason.startswith("protocol error: start.mediaFormat")


async def test_too_many_rejections_end_the_call(live: LiveService) -> None:
    url, params = await open_call(live)
    peer = TwilioPeer(stream_sid="MZ" + "5" * 32, call_sid="CA" + "2" * 32, account_sid="AC" + "0" * 32)
    async with connect(live, url) as ws:
        await ws.send(peer.connected())
        await ws.send(peer.start(custom_parameters=params))
        for _ in range(live.settings.media.max_rejections):
            await ws.send("garbage")
        await asyncio.wait_for(ws.wait_closed(), timeout=5)
    call = await wait_closed(live.db, params["call_id"])
    assert call.end_reason == f"protocol error: {live.settings.media.max_rejections} rejected messages"


async def first_agent_audio(ws: websockets.ClientConnection) -> None:
    while True:
        message = json.loads(await ws.recv())
        if message.get("event") == "media":
            return


async def test_socket_dropped_without_stop_is_recorded(live: LiveService) -> None:
    url, params = await open_call(live)
    peer = TwilioPeer(stream_sid="MZ" + "6" * 32, call_sid="CA" + "2" * 32, account_sid="AC" + "0" * 32)
    async with connect(live, url) as ws:
        await ws.send(peer.connected())
        await ws.send(peer.start(custom_parameters=params))
        for _ in range(10):
            await ws.send(peer.media(SILENCE))
        # Drop only once the greeting is under way (its first audio has reached us): on a
        # busy machine its synthesis may take longer than sending ten frames.
        await asyncio.wait_for(first_agent_audio(ws), timeout=30)
    call = await wait_closed(live.db, params["call_id"])
    assert call.end_reason == "media stream disconnected before stop"
    async with make_sessionmaker(live.db)() as s:
        turns = (await s.execute(select(Turn).where(Turn.call_id == params["call_id"]))).scalars().all()
    # The greeting was under way: it is kept with what was confirmed heard.
    assert [t.speaker for t in turns] == ["agent"]
    assert isinstance(call, Call)
