"""A local server speaking the Gemini Live API's BidiGenerateContent WebSocket protocol.

It stands in for Google's service (unreachable from tests) on 127.0.0.1. The
wire is the real one (callagent.engines.providers.gemini_live_wire, JSON
per the Live API reference); the "model" is a small script:

- it validates every client message (a protocol error closes with 1007);
- after `setup` it answers `setupComplete`, then speaks the opening the
  system instruction asks for ("Begin by saying exactly: ..."), synthesised
  by piper and streamed as 24 kHz PCM16 `serverContent.modelTurn` parts with
  `outputTranscription`, paced at `speed` x real time;
- it detects caller speech with an energy gate on the 16 kHz input; speech
  over its own audio stops the audio and sends `interrupted: true`;
- after caller utterance N it calls the tool `script[N]` names (a
  `toolCall`), and speaks a sentence built from the `toolResponse`;
- it sends a resumable `sessionResumptionUpdate` after every turn; with
  `go_away_after_turns` it sends `goAway` and closes, and accepts the
  handle on the next connection (conversation state is kept per handle).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

from callagent.audio.resample import make_resampler
from callagent.engines.providers.gemini_live_wire import (
    ClientAudio,
    GeminiWireError,
    Setup,
    ToolResponse,
    audio_part,
    parse_client_message,
    server_message,
)
from callagent.speech.tts_piper import PiperTts

CHUNK_MS = 100


@dataclass
class Conversation:
    opening_said: bool = False
    utterances: int = 0
    turns: int = 0
    handle: str = ""


@dataclass
class GeminiLiveServer:
    tts: PiperTts
    script: Mapping[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    speed: float = 4.0
    go_away_after_turns: int = 0
    speech_rms: float = 300.0
    connections: int = 0
    setups: list[Setup] = field(default_factory=list)
    tool_responses: list[ToolResponse] = field(default_factory=list)
    interruptions: int = 0
    # ms of 24 kHz audio synthesised for each turn, in order: Piper's durations
    # vary between runs, so tests compare against what was really sent
    turn_audio_ms: list[float] = field(default_factory=list)
    _states: dict[str, Conversation] = field(default_factory=dict)
    _server: Server | None = None

    async def __aenter__(self) -> GeminiLiveServer:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}"

    # ---- one connection -------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            setup = parse_client_message(await ws.recv())
        except GeminiWireError as exc:
            await ws.close(1007, str(exc)[:100])
            return
        if not isinstance(setup, Setup):
            await ws.close(1007, "the first message must be setup")
            return
        if setup.resume_handle and setup.resume_handle not in self._states:
            await ws.close(1007, "unknown session resumption handle")
            return
        self.setups.append(setup)
        conv = self._states.get(setup.resume_handle) or Conversation()
        await ws.send(server_message("setupComplete", {}))
        session = _Session(self, ws, setup, conv)
        await session.run()

    def remember(self, conv: Conversation) -> str:
        conv.handle = f"handle-{len(self._states) + 1}"
        self._states[conv.handle] = conv
        return conv.handle


class _Session:
    def __init__(self, server: GeminiLiveServer, ws: ServerConnection, setup: Setup,
                 conv: Conversation) -> None:  # fmt: skip
        self.server, self.ws, self.setup, self.conv = server, ws, setup, conv
        self.speaking: asyncio.Task[None] | None = None
        self.loud = 0
        self.quiet_ms = 0.0
        self.in_speech = False
        self.pending_tools: set[str] = set()

    async def run(self) -> None:
        if not self.conv.opening_said:
            match = re.search(r"Begin by saying exactly: (.+)$", self.setup.instructions, re.S)
            if match:
                self.conv.opening_said = True
                text = match.group(1).strip()
                self.speaking = asyncio.get_running_loop().create_task(
                    self._stream(text, await self._synthesize(text)))
        try:
            async for message in self.ws:
                try:
                    msg = parse_client_message(message)
                except GeminiWireError as exc:
                    await self.ws.close(1007, str(exc)[:100])
                    return
                if isinstance(msg, ClientAudio):
                    await self.hear(np.frombuffer(msg.pcm16k, dtype="<i2"))
                elif isinstance(msg, ToolResponse):
                    await self.tool_response(msg)
                elif isinstance(msg, Setup):
                    await self.ws.close(1007, "setup may be sent only once")
                    return
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.speaking is not None:
                self.speaking.cancel()

    # ---- listening ----------------------------------------------------------------

    async def hear(self, pcm: np.ndarray) -> None:
        for i in range(0, len(pcm) - 319, 320):  # 20 ms at 16 kHz
            frame = pcm[i : i + 320].astype(np.float64)
            loud = float(np.sqrt(np.mean(frame * frame))) >= self.server.speech_rms
            self.loud = self.loud + 1 if loud else 0
            self.quiet_ms = 0.0 if loud else self.quiet_ms + 20.0
            if not self.in_speech and self.loud >= 3:
                self.in_speech = True
                if self.speaking is not None and not self.speaking.done():
                    self.speaking.cancel()
                    self.server.interruptions += 1
                    await self.ws.send(server_message("serverContent", {"interrupted": True}))
            elif self.in_speech and self.quiet_ms >= 600.0:
                self.in_speech = False
                await self.utterance_done()

    async def utterance_done(self) -> None:
        self.conv.utterances += 1
        tool = self.server.script.get(self.conv.utterances)
        if tool is None:
            return
        name, args = tool
        call_id = f"call-{self.conv.utterances}"
        self.pending_tools.add(call_id)
        await self.ws.send(server_message("toolCall", {"functionCalls": [
            {"id": call_id, "name": name, "args": args}]}))  # fmt: skip

    async def tool_response(self, msg: ToolResponse) -> None:
        self.server.tool_responses.append(msg)
        for call_id, _name, response in msg.responses:
            if call_id not in self.pending_tools:
                await self.ws.close(1007, f"no pending function call {call_id}")
                return
            self.pending_tools.discard(call_id)
            fields = " ".join(str(v) for k, v in response.items() if k in ("order_number",
                                                                            "status_text"))  # fmt: skip
            self.say(f"Order {fields}." if fields else json.dumps(response))

    # ---- speaking -----------------------------------------------------------------

    def say(self, text: str) -> None:
        self.speaking = asyncio.get_running_loop().create_task(self._speak(text))

    async def _synthesize(self, text: str) -> np.ndarray:
        parts = await asyncio.to_thread(lambda: list(self.server.tts.synthesize(text)))
        up = make_resampler(parts[0].rate, 24000) if parts else None
        return np.concatenate([up.process(p.samples) for p in parts]) if up else np.zeros(0)

    async def _speak(self, text: str) -> None:
        await self._stream(text, await self._synthesize(text))

    async def _stream(self, text: str, audio: np.ndarray) -> None:
        self.server.turn_audio_ms.append(len(audio) / 24.0)
        step = 24 * CHUNK_MS
        for i in range(0, len(audio), step):
            chunk = audio[i : i + step].astype("<i2").tobytes()
            await self.ws.send(server_message("serverContent",
                                              {"modelTurn": {"parts": [audio_part(chunk)]}}))  # fmt: skip
            if i == 0:
                await self.ws.send(server_message("serverContent",
                                                  {"outputTranscription": {"text": text}}))  # fmt: skip
            await asyncio.sleep(CHUNK_MS / 1000.0 / self.server.speed)
        await self.ws.send(server_message("serverContent", {"turnComplete": True}))
        self.conv.turns += 1
        handle = self.server.remember(self.conv)
        await self.ws.send(server_message("sessionResumptionUpdate",
                                          {"newHandle": handle, "resumable": True}))  # fmt: skip
        if self.server.go_away_after_turns and self.conv.turns == self.server.go_away_after_turns:
            await self.ws.send(server_message("goAway", {"timeLeft": "1s"}))
            await self.ws.close(1000, "session limit")
