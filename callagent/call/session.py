"""CallSession: one call between Twilio's media stream and an engine.

Inbound: parsed Twilio events -> mu-law decode -> streaming resample -> engine.feed.
Outbound: engine events -> resample to 8 kHz -> mu-law -> 20 ms frames -> pacer,
with a mark after each agent speech segment; the playback tracker turns mark
echoes into what the caller has heard. Records go to the recorder's queue:
nothing on this path awaits the database or a model.

Compliance (``call.guard.CallGuard``): disclosures proven by mark echoes,
recording consent and the two-channel recording, secure keypad capture, the
opt-out's do-not-call entry, and transfers over Twilio's REST API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from callagent.audio.codec import pcm_to_ulaw, ulaw_to_pcm
from callagent.audio.frames import FrameSplitter
from callagent.audio.pacer import Frame, OutboundPacer
from callagent.audio.pcm import Pcm
from callagent.audio.resample import Resampler, make_resampler
from callagent.call.guard import CallGuard
from callagent.call.playback import PlaybackTracker
from callagent.call.records import (
    AuditRecord,
    CallEngineChosen,
    CallClosed,
    CallStreamStarted,
    MetricRecord,
    ToolCallRecord,
    TurnRecord,
)
from callagent.compliance.events import ENGINE_FALLBACK
from callagent.compliance.redact import (
    Finding,
    Released,
    StreamingRedactor,
    redact,
    redact_json,
)
from callagent.engines.base import (
    AgentAudio,
    AgentTextDelta,
    AgentTurnDone,
    CallContext,
    EndCall,
    Engine,
    EngineEvent,
    Interrupt,
    Metric,
    PlaybackProgress,
    ToolCallFinished,
    ToolCallStarted,
    Transfer,
    UserTranscript,
    split_heard,
)
from callagent.services import Services
from callagent.telephony.twilio.protocol import (
    Audio,
    Digit,
    MarkEchoed,
    Rejected,
    Started,
    Stopped,
    TwilioStreamProtocol,
)

log = logging.getLogger(__name__)

# Engine figures (`Metric` with a turn id) that the agent turn's own row keeps
# too (turns.stt_ms, brain_ms, tts_ms), beside its call_metrics rows.
TURN_STAGE_METRICS = ("stt_ms", "brain_ms", "tts_ms")

RATE = 8000
# How early the pump's timer may fire (uvloop rounds delays to whole
# milliseconds on a millisecond clock); the pacer sends a pass due that soon at once.
PUMP_TIMER_EARLY_MS = 2.0
Send = Callable[[str], Awaitable[None]]


def heard_words(text: str, heard_ms: float, total_ms: float) -> str:
    """The words of ``text`` the caller heard (see `split_heard`)."""
    return split_heard(text, heard_ms, total_ms)[0]


@dataclass
class AgentTurn:
    turn_id: str
    seq: int
    text: str = ""
    done: bool = False
    sent_ms: float = 0.0
    first_sent_at_ms: float | None = None  # call clock
    interrupted: bool = False
    heard_ms: float | None = None
    latency_ms: float | None = None
    recorded: bool = False
    segments: int = 0
    segment_text_from: int = 0  # where the text of the next segment starts in ``text``
    resampler: Resampler | None = None
    splitter: FrameSplitter = field(default_factory=FrameSplitter)


class CallSession:
    def __init__(
        self,
        services: Services,
        protocol: TwilioStreamProtocol,
        send: Send,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.services = services
        self.protocol = protocol
        self._send = send
        self._clock = clock
        media = services.settings.media
        batch_ms = min(media.send_batch_ms, max(20, media.playout_lead_ms / 2))
        self.pacer = OutboundPacer(
            lead_ms=media.playout_lead_ms, batch_ms=batch_ms, early_ms=PUMP_TIMER_EARLY_MS
        )
        self.playback = PlaybackTracker()
        self.call: CallContext | None = None
        self.engine: Engine | None = None
        self.guard: CallGuard | None = None
        self._transfer: asyncio.Task[None] | None = None
        self.end_reason: str | None = None
        self.ended = asyncio.Event()
        self._t0: float | None = None
        self._inbound: Resampler | None = None
        self._turns: dict[str, AgentTurn] = {}
        self._turn_stages: dict[str, dict[str, float]] = {}  # turn id -> TURN_STAGE_METRICS
        self._seq = 0
        self._last_caller_end_ms: float | None = None
        self._wake = asyncio.Event()
        self._urgent: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._rejections = 0
        self._refused_call_id = ""
        # Transcripts are redacted before they are recorded. The caller's redactor
        # may hold a turn that ends in digits until the next one (a card number
        # said over two turns), so caller turns wait here in feed order.
        self._caller_redactor = StreamingRedactor(services.redaction)
        self._held_caller_turns: list[TurnRecord] = []
        self._tool_started: dict[str, tuple[datetime, str]] = {}
        self._tool_calls = 0
        self.frames_in = 0
        self.frames_out = 0

    # ---- clock ---------------------------------------------------------------

    def call_ms(self) -> float:
        return 0.0 if self._t0 is None else 1000.0 * (self._clock() - self._t0)

    # ---- inbound: called by the transport shell for every message ------------

    def receive(self, message: str | bytes) -> None:
        for event in self.protocol.receive(message):
            self._on_transport_event(event)

    def _on_transport_event(self, event: object) -> None:
        if isinstance(event, Audio):
            self._on_audio(event.ulaw)
        elif isinstance(event, MarkEchoed):
            self._on_mark(event.name)
        elif isinstance(event, Digit):
            if self.guard is not None and self.guard.dtmf(event.digit):
                return  # kept by secure capture: never reaches the engine
            if self.engine is not None:
                self.engine.dtmf(event.digit)
        elif isinstance(event, Started):
            self._on_start(event)
        elif isinstance(event, Stopped):
            self.finish("caller hung up")
        elif isinstance(event, Rejected):
            self._on_rejected(event)

    def _on_start(self, event: Started) -> None:
        services = self.services
        params = event.custom_parameters
        call_id = params.get("call_id", "")
        if not call_id:
            self.finish("protocol error: start without a call_id parameter")
            return
        self._t0 = self._clock()
        self.call = CallContext(
            call_id=call_id,
            direction=params.get("direction", "inbound"),
            agent=params.get("agent", services.settings.agent.default_profile),
            from_number=params.get("from", ""),
            to_number=params.get("to", ""),
            call_sid=event.call_sid,
            parameters=dict(params),
        )
        services.live_calls.add(call_id)
        now = services.now()
        services.recorder.submit(CallStreamStarted(call_id, event.stream_sid, now))
        services.recorder.submit(
            AuditRecord("call.answered", "system", now, call_id, {"stream_sid": event.stream_sid})
        )
        self.guard = CallGuard(services, self.call, self.call_ms)
        self.engine = services.engines(self.call)
        # An engine at the line's rate takes the decoded frames as they are.
        self._inbound = (
            None if self.engine.input_rate == RATE else make_resampler(RATE, self.engine.input_rate)
        )
        self._tasks.append(asyncio.create_task(self._run_engine(self.engine, self.call)))
        self._tasks.append(asyncio.create_task(self._pump()))

    def _on_audio(self, ulaw: bytes) -> None:
        self.frames_in += 1
        engine = self.engine
        if engine is None:
            return
        pcm = ulaw_to_pcm(ulaw)
        if self.guard is not None:
            self.guard.caller_audio(pcm)
            if self.guard.secure:
                pcm = np.zeros_like(pcm)  # keyed or spoken card digits never reach the engine
        samples = pcm if self._inbound is None else self._inbound.process(pcm)
        if len(samples):
            engine.feed(Pcm(samples, engine.input_rate))

    def _on_mark(self, name: str) -> None:
        if self.guard is not None:
            self.guard.mark_echoed(name)
        progress = self.playback.on_mark_echo(name)
        if progress is None:
            return
        if self.engine is not None:
            self.engine.played(progress)
        turn = self._turns.get(progress.turn_id)
        if turn is not None and progress.complete:
            self._record_agent_turn(turn)

    def _on_rejected(self, event: Rejected) -> None:
        self._rejections += 1
        self.services.metrics.inc("callagent_media_rejections_total", reason=event.reason.value)
        call = self.call.call_id if self.call else "-"
        log.warning("call %s: rejected media message: %s", call, event.detail)
        if event.fatal:
            self.finish(f"protocol error: {event.detail}")
            if self.call is None and event.start_parameters:
                # The start was refused: still close the call it names, with the reason.
                self._refused_call_id = event.start_parameters.get("call_id", "")
        elif self._rejections >= self.services.settings.media.max_rejections:
            self.finish(f"protocol error: {self._rejections} rejected messages")

    # ---- engine events -------------------------------------------------------

    async def _run_engine(self, engine: Engine, call: CallContext) -> None:
        try:
            if self.guard is not None:
                await self.guard.load()
            await engine.start(call)
            async for event in engine.events():
                self._on_engine_event(event)
                if self.ended.is_set():
                    break
        except Exception:
            log.exception("call %s: engine %s failed", call.call_id, engine.name)
            self.finish("engine failure")

    def _on_engine_event(self, event: EngineEvent) -> None:
        if isinstance(event, AgentAudio):
            self._on_agent_audio(event)
        elif isinstance(event, AgentTurnDone):
            turn = self._turn(event.turn_id)
            turn.text, turn.done = event.text, True
            if not turn.interrupted:
                # A closing mark: its echo proves the whole turn was heard.
                self._mark(turn, f"{turn.turn_id}:end", final=True)
        elif isinstance(event, AgentTextDelta):
            self._turn(event.turn_id).text += event.text
        elif isinstance(event, Interrupt):
            self._interrupt(event.turn_id)
        elif isinstance(event, UserTranscript):
            if event.final:
                self._record_caller_turn(event)
        elif isinstance(event, EndCall):
            if event.reason == "opt_out" and self.guard is not None:
                self.guard.record_opt_out("agent")  # on the list before the call ends
            self._tasks.append(asyncio.create_task(self._end_after_playback(event.reason)))
        elif isinstance(event, Metric):
            if self.call:
                self._on_metric(self.call.call_id, event)
        elif isinstance(event, ToolCallStarted):
            self._tool_started[event.tool_call_id] = (self.services.now(), event.arguments)
            if event.name == "record_opt_out" and self.guard is not None:
                self.guard.record_opt_out("agent")  # the tool's effect is the session's
        elif isinstance(event, ToolCallFinished):
            self._record_tool_call(event)
        elif isinstance(event, Transfer):
            if self._transfer is None:
                self._transfer = asyncio.create_task(self._transfer_after_playback(event))
                self._tasks.append(self._transfer)

    def _on_metric(self, call_id: str, event: Metric) -> None:
        submit = self.services.recorder.submit
        if event.name.startswith("engine."):
            # Engines announce what serves the call ("engine.duplex:local"), so
            # operators can compare engines and backends call by call.
            submit(CallEngineChosen(call_id, event.name.removeprefix("engine.")))
            return
        if event.name == "engine_fallback":
            submit(AuditRecord(ENGINE_FALLBACK, "system", self.services.now(), call_id,
                               {"engine": getattr(self.engine, "name", "")}))  # fmt: skip
        submit(MetricRecord(call_id, event.name, event.value))
        if event.turn_id and event.name in TURN_STAGE_METRICS:
            self._turn_stages.setdefault(event.turn_id, {})[event.name] = event.value
        if event.turn_id:
            # The call-level row above stays the call's latest value (what call
            # readers want); the turn's own row keeps every turn's figure.
            submit(MetricRecord(call_id, event.name, event.value, turn_id=event.turn_id))

    def _turn(self, turn_id: str) -> AgentTurn:
        turn = self._turns.get(turn_id)
        if turn is None:
            self._seq += 1
            turn = AgentTurn(turn_id, self._seq)
            self._turns[turn_id] = turn
        return turn

    def _on_agent_audio(self, event: AgentAudio) -> None:
        turn = self._turn(event.turn_id)
        if turn.interrupted:
            return  # late audio of an interrupted turn is never played
        if turn.resampler is None:
            turn.resampler = make_resampler(event.audio.rate, RATE)
        samples = turn.resampler.process(event.audio.samples)
        if event.segment_end:
            samples = np.concatenate([samples, turn.resampler.flush()])
            turn.resampler = None
        self._queue_frames(turn, turn.splitter.push(pcm_to_ulaw(samples)))
        if event.segment_end:
            tail = turn.splitter.flush(pad=True)
            self._queue_frames(turn, [tail] if tail else [])
            turn.segments += 1
            name = f"{turn.turn_id}:{turn.segments}"
            self._mark(turn, name)
            if self.guard is not None:
                self.guard.agent_segment(name, turn.text[turn.segment_text_from :],
                                         event.interruptible)  # fmt: skip
            turn.segment_text_from = len(turn.text)

    def _mark(self, turn: AgentTurn, name: str, final: bool = False) -> None:
        self.playback.register_mark(name, turn.turn_id, turn.sent_ms, final=final)
        self.pacer.push_mark(name)
        self._wake.set()

    def _queue_frames(self, turn: AgentTurn, frames: list[bytes]) -> None:
        now = self._clock()
        for frame in frames:
            if turn.first_sent_at_ms is None:
                turn.first_sent_at_ms = self.call_ms()
                # Twilio plays it once everything queued ahead of it has played.
                ahead_s = (self.pacer.queued_ms(now) + self.pacer.pending_ms) / 1000.0
                self.playback.turn_playback_started(turn.turn_id, now + ahead_s)
                if self._last_caller_end_ms is not None:
                    turn.latency_ms = turn.first_sent_at_ms - self._last_caller_end_ms
                    self._last_caller_end_ms = None
            self.pacer.push_frame(frame, now)
            turn.sent_ms += 1000.0 * len(frame) / RATE
        if frames:
            self._wake.set()

    def _interrupt(self, turn_id: str) -> None:
        turn = self._turns.get(turn_id)
        now = self._clock()
        self.pacer.clear(now)
        self.playback.on_clear(now)
        self._urgent.append(self.protocol.clear())
        self._wake.set()
        self.services.metrics.inc("callagent_interruptions_total")
        if turn is None or turn.recorded:
            return
        turn.interrupted = True
        turn.heard_ms = self.playback.heard_ms_estimate(turn_id, now)
        if self.engine is not None:
            self.engine.played(PlaybackProgress(turn_id, turn.heard_ms, False))
        self._record_agent_turn(turn)

    async def _wait_playback(self) -> None:
        while not self.ended.is_set() and self.playback.outstanding_marks:
            await asyncio.sleep(0.05)

    async def _end_after_playback(self, reason: str) -> None:
        # Let the goodbye play: wait until every mark sent has come back.
        await self._wait_playback()
        if self._transfer is not None:
            # Closing the stream first would run the <Hangup/> after <Connect>.
            await asyncio.gather(self._transfer, return_exceptions=True)
        self.finish(reason)

    async def _transfer_after_playback(self, event: Transfer) -> None:
        await self._wait_playback()  # "let me transfer you" is heard in full
        if self.guard is None:
            return
        try:
            await self.guard.transfer(event.target, event.warm, "")
        except Exception as exc:  # audited by the guard; the call still ends in order
            log.warning("call %s: transfer failed: %s", self.call.call_id if self.call else "-", exc)

    # ---- records ---------------------------------------------------------------

    def _record_caller_turn(self, event: UserTranscript) -> None:
        if self.call is None:
            return
        if self.guard is not None:
            self.guard.caller_text(event.text)  # a refusal to be recorded (never stored)
        self._seq += 1
        self._last_caller_end_ms = event.end_ms
        self._held_caller_turns.append(
            TurnRecord(
                call_id=self.call.call_id,
                seq=self._seq,
                speaker="caller",
                text="",
                start_ms=event.start_ms,
                end_ms=event.end_ms,
            )
        )
        self._release_caller_turns(self._caller_redactor.feed(event.text))

    def _release_caller_turns(self, released: tuple[Released, ...]) -> None:
        for piece in released:
            turn = dataclasses.replace(self._held_caller_turns.pop(0), text=piece.text)
            self._audit_redactions(turn.seq, "text", piece.findings)
            self.services.recorder.submit(turn)

    def _redacted_json(self, text: str, seq: int, field_name: str) -> str:
        try:
            value = json.loads(text) if text else None
        except json.JSONDecodeError:
            red = redact(text, self.services.redaction)
            self._audit_redactions(seq, field_name, red.findings)
            return red.text
        clean, findings = redact_json(value, self.services.redaction)
        if findings and self.call is not None:
            for f in findings:
                self.services.recorder.submit(
                    AuditRecord("redaction.applied", "system", self.services.now(), self.call.call_id,
                                {"kind": f.kind, "tool_call": seq, "field": field_name, "path": f.path})
                )
        return json.dumps(clean)

    def _record_tool_call(self, event: ToolCallFinished) -> None:
        if self.call is None:
            return
        started_at, arguments = self._tool_started.pop(
            event.tool_call_id, (self.services.now(), "{}")
        )
        self._tool_calls += 1
        n = self._tool_calls
        self.services.recorder.submit(
            ToolCallRecord(
                call_id=self.call.call_id,
                tool_call_id=event.tool_call_id,
                name=event.name,
                arguments=self._redacted_json(arguments, n, "arguments"),
                result=self._redacted_json(event.result, n, "result"),
                status=event.status,
                started_at=started_at,
                duration_ms=event.duration_ms,
                error=redact(event.error, self.services.redaction).text,
            )
        )
        self.services.recorder.submit(
            AuditRecord("tool.called", "agent", self.services.now(), self.call.call_id,
                        {"tool": event.name, "status": event.status,
                         "duration_ms": round(event.duration_ms, 1)})
        )

    def _audit_redactions(self, seq: int, field_name: str, findings: tuple[Finding, ...]) -> None:
        if self.call is None:
            return
        for f in findings:  # the kind and where, never the value
            self.services.recorder.submit(
                AuditRecord(
                    "redaction.applied",
                    "system",
                    self.services.now(),
                    self.call.call_id,
                    {"kind": f.kind, "turn": seq, "field": field_name, "start": f.start, "end": f.end},
                )
            )

    def _record_agent_turn(self, turn: AgentTurn) -> None:
        if self.call is None or turn.recorded:
            return
        turn.recorded = True
        heard = turn.heard_ms if turn.heard_ms is not None else self.playback.heard_ms(turn.turn_id)
        start = turn.first_sent_at_ms or 0.0
        policy = self.services.redaction
        text = redact(turn.text, policy)
        heard_text = redact(heard_words(turn.text, heard, turn.sent_ms), policy)
        self._audit_redactions(turn.seq, "text", text.findings)
        self._audit_redactions(turn.seq, "heard_text", heard_text.findings)
        self._caller_redactor.observe(turn.text)  # context: "what is your card number?"
        stages = self._turn_stages.pop(turn.turn_id, {})
        self.services.recorder.submit(
            TurnRecord(
                call_id=self.call.call_id,
                seq=turn.seq,
                speaker="agent",
                text=text.text,
                start_ms=start,
                end_ms=start + heard,
                interrupted=turn.interrupted,
                heard_text=heard_text.text,
                heard_ms=heard,
                response_latency_ms=turn.latency_ms,
                stt_ms=stages.get("stt_ms"),
                brain_ms=stages.get("brain_ms"),
                tts_ms=stages.get("tts_ms"),
            )
        )
        if turn.latency_ms is not None:
            self.services.metrics.observe("callagent_turn_latency_seconds", turn.latency_ms / 1000)

    # ---- outbound pump ---------------------------------------------------------

    async def _pump(self) -> None:
        while not self.ended.is_set():
            while self._urgent:
                await self._send(self._urgent.pop(0))
            now = self._clock()
            for item in self.pacer.due(now):
                if isinstance(item, Frame):
                    if self.guard is not None and self._t0 is not None:
                        self.guard.agent_ulaw(1000.0 * (item.plays_at - self._t0), item.ulaw)
                    await self._send(self.protocol.media(item.ulaw))
                    self.frames_out += 1
                else:
                    await self._send(self.protocol.mark(item.name))
            wake_at = self.pacer.next_due_at(self._clock())
            self._wake.clear()
            if self._urgent:
                continue
            # One timer handle per wait (no wait_for task): the pump wakes when
            # the next frame is due or when new audio or a clear arrives.
            timer = None
            if wake_at is not None:
                delay = max(0.0, wake_at - self._clock())
                timer = asyncio.get_running_loop().call_later(delay, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    # ---- end -------------------------------------------------------------------

    def finish(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self.ended.set()
        self._wake.set()

    async def close(self, reason: str = "media stream closed") -> None:
        self.finish(reason)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.engine is not None:
            await self.engine.close()
        for turn in self._turns.values():
            if not turn.recorded and turn.segments:
                self._record_agent_turn(turn)
        self._release_caller_turns(self._caller_redactor.flush())
        if self.guard is not None:
            self.guard.end()
        services = self.services
        call_id = self.call.call_id if self.call else self._refused_call_id
        if not call_id:
            return
        now = services.now()
        for name, value in (
            ("frames_in", self.frames_in),
            ("frames_out", self.frames_out),
            ("late_frames", self.pacer.late_frames),
            ("max_late_ms", self.pacer.max_late_ms),
            ("rejected_messages", self._rejections),
        ):
            services.recorder.submit(MetricRecord(call_id, name, float(value)))
        services.recorder.submit(CallClosed(call_id, now, self.end_reason or reason))
        services.recorder.submit(
            AuditRecord("call.ended", "system", now, call_id, {"reason": self.end_reason or reason})
        )
        services.live_calls.discard(call_id)
        if self.guard is not None:
            try:  # the recording's file work runs in a thread, after the call's close
                await self.guard.close()
            except Exception:
                log.exception("call %s: finishing the recording failed", call_id)
