"""A phone caller that speaks to our service exactly as Twilio would.

It posts a signed voice webhook, opens the media WebSocket with a signed
upgrade, streams a WAV (or silence) as real-time 20 ms mu-law frames, plays
what it receives on a modelled playback buffer (marks echoed when the audio
before them has played, ``clear`` dropping unplayed audio), and finally posts
the completed status callback. What the caller heard is kept aligned with
what it said.
"""

from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import websockets

from callagent.audio.codec import pcm_to_ulaw
from callagent.audio.pcm import Pcm, Samples
from callagent.audio.resample import make_resampler
from callagent.audio.wavfile import read_wav, write_wav
from callagent.sim.playout import CallerPlayout
from callagent.sim.stream import FRAME, RATE, CallerStream, Frame
from callagent.telephony.twilio.peer import OutboundClear, PeerEvent, TwilioPeer
from callagent.telephony.twilio.protocol import Rejected
from callagent.telephony.twilio.signature import SignatureChecker


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


async def post_signed(
    http: httpx.AsyncClient, base_url: str, origin: str, token: str, path: str, form: dict[str, str]
) -> httpx.Response:
    """A webhook as Twilio sends it: to ``base_url`` (where the service listens), signed
    against ``origin`` (the public origin Twilio signs)."""
    signature = SignatureChecker(token, True).sign(origin.rstrip("/") + path, form)
    return await http.post(base_url.rstrip("/") + path, data=form, headers={"X-Twilio-Signature": signature})


def stream_socket(base_url: str, stream_url: str, token: str) -> tuple[str, dict[str, str]]:
    """The media WebSocket's address and its signed upgrade header: connect to where the
    service listens, but sign the public URL Twilio would use."""
    base = urlsplit(base_url)
    ws_url = f"{'wss' if base.scheme == 'https' else 'ws'}://{base.netloc}{urlsplit(stream_url).path}"
    return ws_url, {"X-Twilio-Signature": SignatureChecker(token, True).sign(stream_url)}


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
        resp = await post_signed(http, call.base_url, call.public_origin, call.auth_token, "/twilio/voice", form)
        if resp.status_code != 200:
            result.error = f"voice webhook answered {resp.status_code}: {resp.text[:200]}"
            return result
        stream_url, params = parse_stream_twiml(resp.text)
        result.call_id = params.get("call_id", "")
        ws_url, headers = stream_socket(call.base_url, stream_url, call.auth_token)
        started = time.monotonic()
        try:
            async with websockets.connect(
                ws_url,
                additional_headers=headers,
                open_timeout=call.connect_timeout_s,
                max_size=2**20,
            ) as ws:
                await _stream(ws, call, said, playout, timeline, result, stream_sid, call_sid, params)
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            result.error = f"media stream failed: {exc}"
            return result
        duration = int(time.monotonic() - started)
        await post_signed(
            http,
            call.base_url,
            call.public_origin,
            call.auth_token,
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


class _Recited:
    """The caller's voice: ``said`` as it stands, the keypad digits at ``lead_s``."""

    def __init__(self, said_ulaw: bytes, call: SimulatedCall, timeline: list[TimelineEntry]) -> None:
        self._ulaw = said_ulaw
        self._dtmf_at = call.lead_s if call.dtmf else None
        self._dtmf = call.dtmf
        self._timeline = timeline
        self._pos = 0

    @property
    def done(self) -> bool:
        return self._pos >= len(self._ulaw)

    def frame(self, at: float, now: float) -> Frame:
        ulaw = self._ulaw[self._pos : self._pos + FRAME]
        self._pos += FRAME
        if self._dtmf_at is not None and now >= self._dtmf_at:
            self._timeline.append(TimelineEntry(now, "dtmf", self._dtmf))
            self._dtmf_at = None
            return Frame(ulaw, self._dtmf)
        return Frame(ulaw)


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

    def observe(t: float, event: PeerEvent) -> None:
        if isinstance(event, OutboundClear):
            timeline.append(TimelineEntry(t, "clear", f"dropped so far {playout.dropped_ms:.0f} ms"))
        elif isinstance(event, Rejected):
            timeline.append(TimelineEntry(t, "bad message", str(event)))

    stream = CallerStream(ws, peer, playout, params, observe=observe)
    try:
        async with stream:
            timeline.append(TimelineEntry(stream.now(), "start", f"stream {stream_sid}"))
            if len(said):
                timeline.append(TimelineEntry(call.lead_s, "caller audio", f"{len(said) / RATE:.2f}s sent in all"))
            # mu-law is sample-wise: encoded once, slicing it is exact
            await stream.speak(_Recited(pcm_to_ulaw(said), call, timeline))
            if stream.server_closed:
                timeline.append(TimelineEntry(stream.now(), "server hung up"))
            else:
                timeline.append(TimelineEntry(stream.now(), "caller done", "sent stop"))
    finally:
        result.clears = len(stream.clears)
        result.marks_echoed = stream.marks_echoed
        result.server_closed = stream.server_closed
