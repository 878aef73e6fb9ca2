"""The caller's end of one Media Stream over a WebSocket, paced in real time.

`CallerStream` plays Twilio on an open socket: it sends ``connected`` and
``start``, then one 20 ms mu-law frame per 20 ms of the call clock, echoes
each mark when the audio before it has played on the caller's `CallerPlayout`
(at once on ``clear``), and sends ``stop`` when the caller is done. What the
caller says is a `CallerVoice`'s choice, frame by frame: it may read the
playout (what the caller has heard so far) to react to the agent.

    async with CallerStream(ws, peer, playout, params) as stream:
        await stream.speak(voice)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import websockets

from callagent.audio.codec import ulaw_to_pcm
from callagent.sim.playout import CallerPlayout
from callagent.telephony.twilio.peer import (
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    PeerEvent,
    TwilioPeer,
)

__all__ = ["FRAME", "FRAME_S", "RATE", "CallerStream", "CallerVoice", "Frame"]

RATE = 8000
FRAME = 160  # samples in 20 ms
FRAME_S = FRAME / RATE


@dataclass(frozen=True, slots=True)
class Frame:
    """What the caller sends in one 20 ms slot: keypad digits first, then the audio."""

    ulaw: bytes  # FRAME mu-law bytes
    digits: str = ""


class CallerVoice(Protocol):
    """Chooses what the caller says, one frame at a time."""

    @property
    def done(self) -> bool:
        """Asked before each frame: True ends the call from the caller's side (``stop``)."""

    def frame(self, at: float, now: float) -> Frame:
        """The frame due at ``at`` on the call clock (s), asked at ``now`` (>= ``at``)."""


class CallerStream:
    """One call's stream; ``observe(t, event)`` sees each server event before it is played."""

    def __init__(
        self,
        ws: websockets.ClientConnection,
        peer: TwilioPeer,
        playout: CallerPlayout,
        params: dict[str, str],
        *,
        observe: Callable[[float, PeerEvent], None] | None = None,
    ) -> None:
        self.playout = playout
        self.clears: list[float] = []  # call-clock times of the server's clears
        self.marks_echoed = 0
        self.frames_sent = 0
        self.server_closed = False  # the server hung up while the caller was speaking
        self._ws, self._peer, self._params, self._observe = ws, peer, params, observe
        self._t0 = time.monotonic()
        self._closed = asyncio.Event()
        self._receiver: asyncio.Task[None] | None = None

    def now(self) -> float:
        """Seconds on the call clock (0 when ``connected`` was sent)."""
        return time.monotonic() - self._t0

    @property
    def closed(self) -> bool:
        """The socket is closed (the server hung up, or the caller is done)."""
        return self._closed.is_set()

    async def __aenter__(self) -> CallerStream:
        self._t0 = time.monotonic()
        await self._ws.send(self._peer.connected())
        await self._ws.send(self._peer.start(custom_parameters=self._params))
        self._receiver = asyncio.create_task(self._receive())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._closed.is_set():
            await self._ws.close()
        if self._receiver is not None:
            await self._receiver

    async def speak(self, voice: CallerVoice) -> None:
        """Send ``voice``'s frames in real time until it is done (then ``stop``) or the
        server hangs up. Each frame is sent at its slot on the call clock, after the marks
        whose audio has played by then are echoed."""
        try:
            await self._speak(voice)
        except websockets.exceptions.ConnectionClosedOK:
            # The server hung up (a normal close) while a frame was on its way:
            # the receiver had not seen the close yet. A hang-up, as below.
            self._closed.set()
            self.server_closed = True

    async def _speak(self, voice: CallerVoice) -> None:
        ws, peer, playout = self._ws, self._peer, self.playout
        n = 0
        while not voice.done:
            at = n * FRAME / RATE
            delay = at - self.now()
            if delay > 0:
                # A plain sleep (a hang-up is noticed within one frame): a
                # wait_for task per frame would cost as much CPU as the server.
                await asyncio.sleep(delay)
            if self._closed.is_set():
                self.server_closed = True
                return
            t = self.now()
            for name in playout.due_marks(t):
                await ws.send(peer.mark(name))
                self.marks_echoed += 1
            frame = voice.frame(at, t)
            for digit in frame.digits:
                await ws.send(peer.dtmf(digit))
            await ws.send(peer.media(frame.ulaw, timestamp_ms=int(1000 * at)))
            self.frames_sent += 1
            n += 1
        await ws.send(peer.stop())

    async def _receive(self) -> None:
        ws, peer, playout = self._ws, self._peer, self.playout
        try:
            async for message in ws:
                t = self.now()
                for event in peer.receive(message):
                    if self._observe is not None:
                        self._observe(t, event)
                    if isinstance(event, OutboundMedia):
                        playout.on_media(ulaw_to_pcm(event.ulaw), t)
                    elif isinstance(event, OutboundMark):
                        playout.on_mark(event.name, t)
                    elif isinstance(event, OutboundClear):
                        self.clears.append(t)
                        for name in playout.on_clear(t):
                            await ws.send(peer.mark(name))
                            self.marks_echoed += 1
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self._closed.set()
