"""Play one sample against a running service over Twilio's protocol, live.

Like ``callagent.sim.caller.run_simulated_call`` (signed webhook, signed
WebSocket upgrade, then the simulator's ``CallerStream``: real-time 20 ms
mu-law frames, marks echoed when played, ``clear`` dropping unplayed audio),
but the caller's audio comes from a ``CallerScript`` frame by frame, so it can
be timed against what the caller hears, and speakerphone echo can be mixed
back in. Returns what the caller
said and heard on the playout clock, the ``clear`` times, and which agent
turn (from the session's mark names) each heard stretch belonged to.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import websockets

from callagent.audio.codec import pcm_to_ulaw
from callagent.audio.pcm import Samples
from callagent.bench.phone.script import FRAME, RATE, CallerScript
from callagent.sim.caller import parse_stream_twiml, post_signed, stream_socket
from callagent.sim.playout import CallerPlayout
from callagent.sim.stream import CallerStream, Frame
from callagent.telephony.twilio.peer import TwilioPeer

__all__ = ["Recording", "heard_between", "run_call"]

ACCOUNT = "AC" + "0" * 32


@dataclass
class Recording:
    call_id: str
    said: Samples
    heard: Samples
    clears: list[float] = field(default_factory=list)
    labels: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, turn id)
    cue_at: float | None = None
    anchor_missed: bool = False
    server_closed: bool = False
    error: str = ""


def heard_between(playout: CallerPlayout, t0: float, t1: float) -> Samples:
    """The agent audio that played in [t0, t1), silence where none did."""
    n = int(round((t1 - t0) * RATE))
    out = np.zeros(max(0, n), np.int16)
    for seg in reversed(playout.segments):
        if seg.end <= t0:
            break
        a = int(round((seg.start - t0) * RATE))
        lo, hi = max(0, a), min(n, a + len(seg.samples))
        if hi > lo:
            out[lo:hi] = seg.samples[lo - a : hi - a]
    return out


class _Labels:
    """Which turn each queued stretch of audio belongs to: the next mark names it."""

    def __init__(self) -> None:
        self.done: list[tuple[float, float, str]] = []
        self._pending: list[tuple[float, float]] = []

    def media(self, start: float, end: float) -> None:
        self._pending.append((start, end))

    def mark(self, name: str) -> None:
        turn = name.split(":", 1)[0]
        self.done += [(s, e, turn) for s, e in self._pending]
        self._pending = []

    def clear(self, now: float) -> None:
        """Unplayed audio is dropped. Audio cut off before its mark came is named after
        the turn that played just before it when it follows on, else left unnamed."""
        self.done = [(s, min(e, now), t) for s, e, t in self.done if s < now]
        cut = [(s, min(e, now)) for s, e in self._pending if s < now]
        turn = self.done[-1][2] if self.done and cut and cut[0][0] <= self.done[-1][1] + 0.03 else ""
        self.done += [(s, e, turn) for s, e in cut]
        self._pending = []


async def run_call(base_url: str, origin: str, token: str, script: CallerScript, *,
                   echo_delay_s: float = 0.0, agent: str = "") -> Recording:  # fmt: skip
    call_sid, stream_sid = "CA" + secrets.token_hex(16), "MZ" + secrets.token_hex(16)
    rec = Recording("", np.zeros(0, np.int16), np.zeros(0, np.int16))
    form = {"CallSid": call_sid, "AccountSid": ACCOUNT, "From": "+15005550006", "To": "+15005550001",
            "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}  # fmt: skip
    path = "/twilio/voice" + (f"?agent={agent}" if agent else "")
    async with httpx.AsyncClient(timeout=10.0) as http:
        resp = await post_signed(http, base_url, origin, token, path, form)
        if resp.status_code != 200:
            rec.error = f"voice webhook answered {resp.status_code}: {resp.text[:200]}"
            return rec
        stream_url, params = parse_stream_twiml(resp.text)
        rec.call_id = params.get("call_id", "")
        ws_url, headers = stream_socket(base_url, stream_url, token)
        started = time.monotonic()
        try:
            async with websockets.connect(ws_url, additional_headers=headers,
                                          open_timeout=10.0, max_size=2**20) as ws:  # fmt: skip
                await _stream(ws, script, rec, stream_sid, call_sid, params, echo_delay_s)
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            rec.error = f"media stream failed: {exc}"
            return rec
        await post_signed(http, base_url, origin, token, "/twilio/status",
                    {**form, "CallStatus": "completed", "CallDuration": str(int(time.monotonic() - started)),
                     "SequenceNumber": "3"})  # fmt: skip
    return rec


@dataclass
class _LabelledPlayout(CallerPlayout):
    """The caller's playout, naming each stretch of audio after its turn (``_Labels``)."""

    labels: _Labels = field(default_factory=_Labels)

    def on_media(self, samples: Samples, now: float) -> float:
        start = super().on_media(samples, now)
        self.labels.media(start, start + len(samples) / RATE)
        return start

    def on_mark(self, name: str, now: float) -> None:
        super().on_mark(name, now)
        self.labels.mark(name)

    def on_clear(self, now: float) -> list[str]:
        self.labels.clear(now)
        return super().on_clear(now)


class _Voice:
    """The script's frames, given what the caller heard in the last 20 ms (and the echo)."""

    def __init__(self, script: CallerScript, playout: CallerPlayout, echo_delay_s: float) -> None:
        self._script, self._playout, self._echo_delay_s = script, playout, echo_delay_s
        self.said: list[Samples] = []

    @property
    def done(self) -> bool:
        return self._script.done

    def frame(self, at: float, now: float) -> Frame:
        heard = heard_between(self._playout, at - FRAME / RATE, at)
        echo = None
        if self._echo_delay_s > 0:
            echo = heard_between(self._playout, at - self._echo_delay_s, at - self._echo_delay_s + FRAME / RATE)
        frame = self._script.frame(at, heard, echo)
        self.said.append(frame)
        return Frame(pcm_to_ulaw(frame))


async def _stream(ws: websockets.ClientConnection, script: CallerScript, rec: Recording, stream_sid: str,
                  call_sid: str, params: dict[str, str], echo_delay_s: float) -> None:  # fmt: skip
    peer = TwilioPeer(stream_sid=stream_sid, call_sid=call_sid, account_sid=ACCOUNT)
    playout = _LabelledPlayout()
    voice = _Voice(script, playout, echo_delay_s)
    stream = CallerStream(ws, peer, playout, params)
    rec.clears = stream.clears
    async with stream:
        await stream.speak(voice)
    rec.server_closed = stream.server_closed
    end = len(voice.said) * FRAME / RATE
    if playout.segments:
        end = max(end, playout.segments[-1].end)
    rec.heard = playout.heard(end)
    sent = np.concatenate(voice.said) if voice.said else np.zeros(0, np.int16)
    rec.said = np.concatenate([sent, np.zeros(max(0, len(rec.heard) - len(sent)), np.int16)])
    rec.labels = playout.labels.done
    rec.cue_at, rec.anchor_missed = script.cue_at, script.anchor_missed
