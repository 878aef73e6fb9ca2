"""Engine fallback: a duplex backend that fails mid-call hands the call to the pipeline.

`FallbackEngine` wraps the primary engine. If the primary fails to start or
its event stream raises (a provider connection lost, a session limit), it:

1. emits `Metric("engine_fallback", 1)` (the session records it; audit it);
2. emits `Interrupt` for the turn in progress (no half-sentence keeps playing);
3. says a short apology (synthesised by the fallback's own TTS);
4. starts the fallback engine (the modular pipeline) on the same call, and
   routes caller audio, digits and playback progress to it from then on.

`Metric("engine.<name>", 1)` marks which engine served the call (and, after a
fallback, which took over).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from callagent.audio.pcm import Pcm
from callagent.engines.base import (
    AgentAudio,
    AgentTurnDone,
    CallContext,
    Engine,
    EngineEvent,
    Interrupt,
    Metric,
    PlaybackProgress,
)

__all__ = ["FallbackEngine"]

log = logging.getLogger(__name__)


class FallbackEngine:
    input_rate = 8000

    def __init__(
        self,
        primary: Engine,
        fallback: Callable[[], Engine],
        apology: Callable[[], Awaitable[Pcm]] | None = None,
        apology_text: str = "",
    ) -> None:
        if primary.input_rate != self.input_rate:
            raise ValueError(f"fallback wraps 8 kHz engines, not {primary.input_rate}")
        self.name = primary.name
        self._current: Engine = primary
        self._primary = primary
        self._make_fallback = fallback
        self._apology = apology
        self._apology_text = apology_text
        self._call: CallContext | None = None
        self._switched = False
        self._started_ok = True
        self._speaking = ""  # the primary's turn in progress

    @property
    def switched(self) -> bool:
        return self._switched

    async def start(self, call: CallContext) -> None:
        self._call = call
        try:
            await self._primary.start(call)
        except Exception:
            log.exception("call %s: %s failed to start", call.call_id, self._primary.name)
            self._started_ok = False

    def feed(self, chunk: Pcm) -> None:
        self._current.feed(chunk)

    def dtmf(self, digit: str) -> None:
        self._current.dtmf(digit)

    def played(self, progress: PlaybackProgress) -> None:
        self._current.played(progress)

    async def events(self) -> AsyncIterator[EngineEvent]:
        yield Metric(f"engine.{self._primary.name}", 1.0)
        if self._started_ok:
            try:
                async for event in self._primary.events():
                    if isinstance(event, AgentAudio):
                        self._speaking = event.turn_id
                    elif isinstance(event, AgentTurnDone) and event.turn_id == self._speaking:
                        self._speaking = ""
                    yield event
                return
            except Exception as exc:
                assert self._call is not None
                log.warning("call %s: %s failed mid-call (%s); falling back to the pipeline",
                            self._call.call_id, self._primary.name, exc)  # fmt: skip
        async for event in self._switch():
            yield event

    async def _switch(self) -> AsyncIterator[EngineEvent]:
        assert self._call is not None
        self._switched = True
        yield Metric("engine_fallback", 1.0)
        if self._speaking:
            yield Interrupt(self._speaking)
        primary = self._primary
        await primary.close()
        fallback = self._make_fallback()
        self.name = f"{primary.name}->{fallback.name}"
        if self._apology is not None:
            try:
                audio = await self._apology()
            except Exception:
                log.exception("call %s: the apology could not be synthesised", self._call.call_id)
            else:
                yield AgentAudio("fallback-apology", audio, segment_end=True, interruptible=False)
                yield AgentTurnDone("fallback-apology", self._apology_text)
        self._current = fallback
        yield Metric(f"engine.{fallback.name}", 1.0)
        await fallback.start(self._call)
        async for event in fallback.events():
            yield event

    async def close(self) -> None:
        await self._current.close()
        if self._current is not self._primary:
            await self._primary.close()
