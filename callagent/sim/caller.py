"""A phone caller that speaks to our service exactly as Twilio would.

It posts a signed voice webhook, opens the media WebSocket with a signed
upgrade, streams a WAV (or silence) as real-time 20 ms mu-law frames, plays
what it receives on a modelled playback buffer (marks echoed when the audio
before them has played, ``clear`` dropping unplayed audio), and finally posts
the completed status callback. What the caller heard is kept aligned with
what it said.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import websockets

from callagent.audio.codec import pcm_to_ulaw, ulaw_to_pcm
from callagent.audio.pcm import Pcm, Samples
from callagent.audio.resample import make_resampler
from callagent.audio.wavfile import read_wav, write_wav
from callagent.sim.playout import CallerPlayout
from callagent.telephony.twilio.peer import (
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    TwilioPeer,
)
from callagent.telephony.twilio.signature import SignatureChecker

RATE = 8000
FRAME = 160


@dataclass(frozen=True, slots=True)
class SimulatedCall:
    base_url: str  # where the service listens (http://127.0.0.1:8080)
    public_origin: str  # what Twilio signs against (settings.server.public_origin)
    auth_token: str
    wav: Path | None = None
    audio: Pcm | None = None  # alternative to wav
    silence_s: float = 0.0
    lead_s: float = 1.0
    tail_s: float = 4.0
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    heard_wav: Path | None = None
    dtmf: str = ""
    account_sid: str = "AC" + "0" * 32
    # Stop early once the server closes the socket (agent hung up).
    connect_timeout_s: float = 10.0


@dataclass
class TimelineEntry:
    t: float
    what: str
    detail: str = ""


@dataclass
class CallResult:
    call_sid: str
    call_id: str
    completed: bool
    said: Samples
    heard: Samples
    playout: CallerPlayout
    timeline: list[TimelineEntry] = field(default_factory=list)
    marks_echoed: int = 0
    clears: int = 0
    server_closed: bool = False
    error: str = ""

    def timeline_text(self) -> str:
        lines = [f"call {self.call_sid} (call_id {self.call_id})"]
        for e in self.timeline:
            lines.append(f"{e.t:8.3f}s  {e.what:<14} {e.detail}")
        for start, end in self.playout.speech_intervals():
            lines.append(f"  agent audio heard {start:7.3f}s - {end:7.3f}s")
        lines.append(
            f"marks echoed {self.marks_echoed}, clears {self.clears}, "
            f"dropped {self.playout.dropped_ms:.0f} ms, "
            f"{'completed' if self.completed else 'FAILED: ' + self.error}"
        )
        return "\n".join(lines)


def _caller_audio(call: SimulatedCall) -> Samples:
    parts: list[Samples] = [np.zeros(int(call.lead_s * RATE), dtype=np.int16)]
    speech = call.audio if call.audio is not None else (read_wav(call.wav) if call.wav else None)
    if speech is not None:
        if speech.rate != RATE:
            rs = make_resampler(speech.rate, RATE)
            speech = Pcm(np.concatenate([rs.process(speech.samples), rs.flush()]), RATE)
        parts.append(speech.samples)
    parts.append(np.zeros(int((call.silence_s + call.tail_s) * RATE), dtype=np.int16))
    audio = np.concatenate(parts)
    pad = (-len(audio)) % FRAME
    return np.concatenate([audio, np.zeros(pad, dtype=np.int16)])


def parse_stream_twiml(xml: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(xml)
    stream = root.find("./Connect/Stream")
    if stream is None:
        raise ValueError(f"TwiML has no <Connect><Stream>: {xml}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


async def _post_signed(
    http: httpx.AsyncClient, call: SimulatedCall, path: str, form: dict[str, str]
) -> httpx.Response:
    signer = SignatureChecker(call.auth_token, True)
    signature = signer.sign(call.public_origin.rstrip("/") + path, form)
    return await http.post(
        call.base_url.rstrip("/") + path, data=form, headers={"X-Twilio-Signature": signature}
    )


async def run_simulated_call(call: SimulatedCall) -> CallResult:
    call_sid = "CA" + secrets.token_hex(16)
    stream_sid = "MZ" + secrets.token_hex(16)
    said = _caller_audio(call)
    playout = CallerPlayout()
    timeline: list[TimelineEntry] = []
    result = CallResult(call_sid, "", False, said, np.zeros(0, np.int16), playout, timeline)

    async with httpx.AsyncClient(timeout=call.connect_timeout_s) as http:
        form = {
            "CallSid": call_sid,
            "AccountSid": call.account_sid,
            "From": call.from_number,
            "To": call.to_number,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        resp = await _post_signed(http, call, "/twilio/voice", form)
        if resp.status_code != 200:
            result.error = f"voice webhook answered {resp.status_code}: {resp.text[:200]}"
            return result
        stream_url, params = parse_stream_twiml(resp.text)
        result.call_id = params.get("call_id", "")
        signature = SignatureChecker(call.auth_token, True).sign(stream_url)
        # Connect to where the service listens, but sign the public URL Twilio would use.
        base = urlsplit(call.base_url)
        ws_url = f"{'wss' if base.scheme == 'https' else 'ws'}://{base.netloc}{urlsplit(stream_url).path}"
        started = time.monotonic()
        try:
            async with websockets.connect(
                ws_url,
                additional_headers={"X-Twilio-Signature": signature},
                open_timeout=call.connect_timeout_s,
                max_size=2**20,
            ) as ws:
                await _stream(ws, call, said, playout, timeline, result, stream_sid, call_sid, params)
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            result.error = f"media stream failed: {exc}"
            return result
        duration = int(time.monotonic() - started)
        await _post_signed(
            http,
            call,
            "/twilio/status",
            {
                **form,
                "CallStatus": "completed",
                "CallDuration": str(duration),
                "SequenceNumber": "3",
                "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            },
        )
    end = len(said) / RATE
    if playout.segments:
        end = max(end, playout.segments[-1].end)
    result.heard = playout.heard(end)
    result.said = np.concatenate([said, np.zeros(max(0, len(result.heard) - len(said)), np.int16)])
    if call.heard_wav:
        write_wav(call.heard_wav, [Pcm(result.said, RATE), Pcm(result.heard, RATE)])
    result.completed = not result.error
    return result


async def _stream(
    ws: websockets.ClientConnection,
    call: SimulatedCall,
    said: Samples,
    playout: CallerPlayout,
    timeline: list[TimelineEntry],
    result: CallResult,
    stream_sid: str,
    call_sid: str,
    params: dict[str, str],
) -> None:
    peer = TwilioPeer(stream_sid=stream_sid, call_sid=call_sid, account_sid=call.account_sid)
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    await ws.send(peer.connected())
    await ws.send(peer.start(custom_parameters=params))
    timeline.append(TimelineEntry(now(), "start", f"stream {stream_sid}"))
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
                        result.clears += 1
                        timeline.append(TimelineEntry(t, "clear", f"dropped so far {playout.dropped_ms:.0f} ms"))
                        for name in playout.on_clear(t):
                            await ws.send(peer.mark(name))
                            result.marks_echoed += 1
                    else:
                        timeline.append(TimelineEntry(t, "bad message", str(event)))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            closed.set()

    receiver = asyncio.create_task(receive())
    dtmf_at = call.lead_s if call.dtmf else None
    try:
        if len(said):
            timeline.append(TimelineEntry(call.lead_s, "caller audio", f"{len(said) / RATE:.2f}s sent in all"))
        said_ulaw = pcm_to_ulaw(said)  # once: mu-law is sample-wise, slicing it is exact
        for i in range(0, len(said), FRAME):
            target = i / RATE
            delay = target - now()
            if delay > 0:
                # A plain sleep (a hang-up is noticed within one frame): a
                # wait_for task per frame would cost as much CPU as the server.
                await asyncio.sleep(delay)
            if closed.is_set():
                result.server_closed = True
                timeline.append(TimelineEntry(now(), "server hung up"))
                break
            t = now()
            for name in playout.due_marks(t):
                await ws.send(peer.mark(name))
                result.marks_echoed += 1
            if dtmf_at is not None and t >= dtmf_at:
                for digit in call.dtmf:
                    await ws.send(peer.dtmf(digit))
                timeline.append(TimelineEntry(t, "dtmf", call.dtmf))
                dtmf_at = None
            await ws.send(peer.media(said_ulaw[i : i + FRAME], timestamp_ms=int(1000 * target)))
        else:
            timeline.append(TimelineEntry(now(), "caller done", "sending stop"))
            await ws.send(peer.stop())
    finally:
        if not closed.is_set():
            await ws.close()
        await receiver
