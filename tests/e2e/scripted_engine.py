"""An engine that plays a fixed list of events: for tests of what the session records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from callagent.audio.pcm import Pcm
from callagent.config import Settings
from callagent.engines.base import CallContext, Engine, EngineEvent, PlaybackProgress


class ScriptedEngine:
    """Emits `script` once the call starts; ignores audio, keys and playback."""

    input_rate = 8000

    def __init__(self, name: str, script: Sequence[EngineEvent]) -> None:
        self.name = name
        self._script = list(script)
        self._events: asyncio.Queue[EngineEvent | None] = asyncio.Queue()

    async def start(self, call: CallContext) -> None:
        for event in self._script:
            self._events.put_nowait(event)

    def feed(self, chunk: Pcm) -> None:
        pass

    def dtmf(self, digit: str) -> None:
        pass

    def played(self, progress: PlaybackProgress) -> None:
        pass

    async def events(self) -> AsyncIterator[EngineEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        self._events.put_nowait(None)


def scripted_engines(name: str, script: Sequence[EngineEvent]) -> Callable[[Settings], Callable[[CallContext], Engine]]:
    """An `engines=` factory for `running_service`: every call gets the script."""
    return lambda settings: lambda call: ScriptedEngine(name, script)
