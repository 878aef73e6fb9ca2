"""The caller's end of a media stream, over loopback against our own protocol core."""

from __future__ import annotations

import asyncio

import websockets
from websockets.asyncio.server import ServerConnection, serve

from callagent.sim.playout import CallerPlayout
from callagent.sim.stream import FRAME, CallerStream, Frame
from callagent.telephony.twilio.peer import PeerEvent, TwilioPeer
from callagent.telephony.twilio.protocol import (
    Audio,
    Connected,
    Digit,
    Event,
    MarkEchoed,
    Started,
    Stopped,
    TwilioStreamProtocol,
)

SILENCE = b"\xff"


class Voice:
    """Says ``frames`` frames of silence, keying ``digits`` with the third."""

    def __init__(self, frames: int, digits: str = "") -> None:
        self.frames, self.digits, self.asked = frames, digits, 0
        self.at: list[float] = []

    @property
    def done(self) -> bool:
        return self.asked >= self.frames

    def frame(self, at: float, now: float) -> Frame:
        assert now >= at - 0.001
        self.at.append(at)
        self.asked += 1
        return Frame(SILENCE * FRAME, self.digits if self.asked == 3 else "")


async def run(voice: Voice, *, hang_up_after: int | None = None) -> tuple[list[Event], CallerStream]:
    got: list[Event] = []

    async def handler(ws: ServerConnection) -> None:
        proto = TwilioStreamProtocol()
        async for text in ws:
            for event in proto.receive(str(text)):
                got.append(event)
                if isinstance(event, Started):
                    await ws.send(proto.media(SILENCE * 800))  # 100 ms to play
                    await ws.send(proto.mark("a1:1"))
                if hang_up_after is not None and sum(isinstance(e, Audio) for e in got) == hang_up_after:
                    await ws.close()

    seen: list[PeerEvent] = []
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}") as ws:
            peer = TwilioPeer(stream_sid="MZ" + "1" * 32, call_sid="CA" + "2" * 32, account_sid="AC" + "0" * 32)
            stream = CallerStream(ws, peer, CallerPlayout(), {"call_id": "c1"},
                                  observe=lambda t, event: seen.append(event))  # fmt: skip
            async with stream:
                await stream.speak(voice)
        await asyncio.sleep(0.05)  # the server has read the last message
    assert seen, "the observer saw the server's media and mark"
    return got, stream


async def test_frames_go_out_on_the_call_clock_and_stop_ends_the_call() -> None:
    voice = Voice(10, digits="12")
    got, stream = await run(voice)
    assert voice.at == [n * FRAME / 8000 for n in range(10)]
    assert isinstance(got[0], Connected) and isinstance(got[1], Started)
    assert got[1].custom_parameters == {"call_id": "c1"}
    assert sum(isinstance(e, Audio) for e in got) == stream.frames_sent == 10
    digits = [i for i, e in enumerate(got) if isinstance(e, Digit)]
    audio = [i for i, e in enumerate(got) if isinstance(e, Audio)]
    assert len(digits) == 2 and audio[1] < digits[0] < audio[2]  # keyed before the third frame
    assert isinstance(got[-1], Stopped) and not stream.server_closed


async def test_a_mark_is_echoed_once_the_audio_before_it_has_played() -> None:
    got, stream = await run(Voice(10))
    [mark] = [i for i, e in enumerate(got) if isinstance(e, MarkEchoed)]
    frames_before = sum(isinstance(e, Audio) for e in got[:mark])
    assert 5 <= frames_before <= 7  # 100 ms of agent audio: the mark comes back at about 100 ms
    assert stream.marks_echoed == 1


async def test_the_server_hanging_up_ends_the_caller_without_a_stop() -> None:
    voice = Voice(500)
    got, stream = await run(voice, hang_up_after=3)
    assert stream.server_closed and stream.closed and voice.asked < 10
    assert not any(isinstance(e, Stopped) for e in got)
