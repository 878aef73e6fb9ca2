"""The in-call compliance guard: one per call, driven by the session.

It keeps the call's compliance promises without ever blocking the audio path:

- disclosures: the opening's non-interruptible segments are matched to the
  profile's AI and recording disclosures; the mark echo of a disclosure's last
  segment is the moment the caller heard it (``disclosure.heard`` with the call
  clock), or the call ended first (``disclosure.not_heard``);
- recording consent (``compliance.consent``) and the two-channel recording
  (``call.recording``), paused during secure capture;
- secure capture (``compliance.secure_capture``): keypad card entry, only the
  masked digits are stored (as a ``secure_capture`` tool call) and audited;
- opt-out (the caller says one of the profile's ``[opt_out]`` phrases or
  keywords; or the engine ends the call with reason ``opt_out``, e.g. after the
  opt-out key; or the agent calls ``record_opt_out``): the caller's number goes on the
  internal do-not-call list (a record written before the call's close) and the
  opt-out is audited; the agent's own flow confirms it;
- call control over Twilio's REST API (transfer by TwiML update, hang-up).

It implements ``tools.controls.CallControls`` for built-in tools. Records go
to the recorder's queue; REST calls and file work run in tasks and threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import phonenumbers

from callagent.audio.codec import ulaw_to_pcm
from callagent.agents.profile import AgentProfile, ProfileError, load_profile
from callagent.call.records import AuditRecord, DncAdded, RecordingSaved, ToolCallRecord
from callagent.call.recording import CallRecording
from callagent.call.transfer import TransferError, transfer_twiml
from callagent.compliance import events as ev
from callagent.compliance.consent import (
    ConsentEvent,
    Policy,
    RecordingConsent,
    asks_opt_out,
    is_refusal,
    policy_for,
)
from callagent.compliance.secure_capture import Captured, SecureCapture
from callagent.engines.base import CallContext
from callagent.services import Services
from callagent.telephony.twilio.rest import TwilioRest, TwilioRestError, TwilioUnavailable

__all__ = ["CallGuard", "agents_dir", "number_digest"]

log = logging.getLogger(__name__)
RATE = 8000


def agents_dir() -> Path:
    here = Path("config/agents")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "config" / "agents"


def number_digest(e164: str) -> str:
    """A stable, non-reversible reference to a phone number for the audit log."""
    return "sha256:" + hashlib.sha256(e164.encode()).hexdigest()[:16]


@dataclass
class _Segment:
    mark: str
    text: str
    heard_at_ms: float | None = None


@dataclass
class _Capture:
    machine: SecureCapture
    secure: bool
    started_at: datetime
    started_ms: float
    waiter: asyncio.Future[str] | None = None


class CallGuard:
    def __init__(self, services: Services, call: CallContext, call_ms: Callable[[], float]) -> None:
        self.services = services
        self.call = call
        self.call_ms = call_ms  # the call clock (ms since the media stream started)
        self.profile: AgentProfile | None = None
        self._segments: list[_Segment] = []  # the opening's non-interruptible segments
        self._opening = True
        self._disclosed: set[str] = set()  # kinds heard (or settled as not heard)
        self._consent: RecordingConsent | None = None
        self._recording: CallRecording | None = None
        self._capture: _Capture | None = None
        self._rest: TwilioRest | None = None
        self._opted_out = False
        self._caller_samples = 0

    # ---- start -----------------------------------------------------------------

    async def load(self) -> None:
        """Read the agent profile (a thread) and start recording per the consent policy."""
        settings = self.services.settings.recording
        # File reads and the number geography's data modules: off the event loop.
        self.profile, policy, reasons = await asyncio.to_thread(self._prepare)
        has_disclosure = bool(self.profile and self.profile.recording_disclosure)
        self._consent = RecordingConsent(policy, has_disclosure=has_disclosure)
        if settings.enabled:
            self._recording = CallRecording(
                Path(settings.directory), self.call.call_id, queue_chunks=settings.queue_chunks
            )
            self._recording.start()
        if not settings.enabled:
            self._audit(ev.RECORDING_STOPPED, {"reason": "recording is off (recording.enabled)"})
        for e in self._consent.start() if settings.enabled else []:
            self._audit(e.action, {**e.details, "reasons": list(reasons)})
        self._check_disclosures()

    def _prepare(self) -> tuple[AgentProfile | None, Policy, tuple[str, ...]]:
        profile = None
        try:
            profile = load_profile(agents_dir() / f"{self.call.agent}.toml")
        except ProfileError as exc:
            log.warning("call %s: no profile for the guard (%s)", self.call.call_id, exc)
        policy, reasons = policy_for((self.call.from_number, self.call.to_number),
                                     Policy(self.services.settings.recording.unknown_policy))
        return profile, policy, reasons

    # ---- audio -----------------------------------------------------------------

    @property
    def secure(self) -> bool:
        return self._capture is not None and self._capture.secure

    def caller_audio(self, pcm: np.ndarray) -> None:
        at = self._caller_samples
        self._caller_samples += len(pcm)
        if self._keeping():
            assert self._recording is not None
            self._recording.caller(at, pcm)

    def agent_ulaw(self, at_ms: float, ulaw: bytes) -> None:
        """An agent frame as sent, placed where it plays on the call clock."""
        if self._keeping():
            assert self._recording is not None
            self._recording.agent(int(at_ms * RATE / 1000), ulaw_to_pcm(ulaw))

    def _keeping(self) -> bool:
        return (self._recording is not None and self._consent is not None
                and self._consent.keeping and not self.secure)  # fmt: skip

    # ---- disclosures -------------------------------------------------------------

    def agent_segment(self, mark: str, text: str, interruptible: bool) -> None:
        """A segment of agent speech was sent with ``mark`` after it."""
        if not self._opening:
            return
        if interruptible:
            self._opening = False  # the disclosures come first; the rest is conversation
            return
        self._segments.append(_Segment(mark, text.strip()))

    def mark_echoed(self, mark: str) -> None:
        for seg in self._segments:
            if seg.mark == mark and seg.heard_at_ms is None:
                seg.heard_at_ms = self.call_ms()
                self._check_disclosures()

    def _disclosures(self) -> list[tuple[str, str]]:
        p = self.profile
        if p is None:
            return []
        return [(k, t) for k, t in (("ai", p.ai_disclosure), ("recording", p.recording_disclosure))
                if t.strip()]  # fmt: skip

    def _parts(self, text: str) -> list[_Segment]:
        norm = " ".join(text.split())
        return [s for s in self._segments if s.text and s.text in norm]

    def _check_disclosures(self) -> None:
        for kind, text in self._disclosures():
            parts = self._parts(text)
            if kind in self._disclosed or not parts:
                continue
            if " ".join(s.text for s in parts) != " ".join(text.split()):
                continue  # not all of it was sent yet
            if any(s.heard_at_ms is None for s in parts):
                continue
            self._disclosed.add(kind)
            heard = max(s.heard_at_ms or 0.0 for s in parts)
            self._audit(ev.DISCLOSURE_HEARD, {"kind": kind, "heard_at_ms": round(heard, 1),
                                              "marks": [s.mark for s in parts], "text": text})
            if kind == "recording" and self._consent is not None:
                self._consent_events(self._consent.disclosure_heard())

    # ---- caller words and keys ---------------------------------------------------

    def caller_text(self, text: str) -> None:
        phrases = [p.strip() for p in self.services.settings.recording.refusal_phrases.split(",")]
        if is_refusal(text, phrases):
            self.stop_recording("spoken")
        spec = self.profile.opt_out if self.profile is not None else None
        if spec is not None and asks_opt_out(text, spec.phrases, spec.keywords):
            self.record_opt_out("spoken")

    def dtmf(self, digit: str) -> bool:
        """Take a key; True when the guard kept it (secure capture), else the engine gets it."""
        sc = self.services.settings.secure_capture
        if self._capture is None:
            if sc.start_key and digit == sc.start_key:
                self.start_capture(secure=True, end_key=sc.end_key, max_digits=sc.max_digits)
                return True
            # The opt-out key is the engine's to interpret (in a digits prompt it is a
            # digit); the engine ends the call with reason "opt_out" when it means one.
            return False
        done = self._capture.machine.digit(digit)
        if done is not None:
            self._end_capture(done)
        return True

    def start_capture(self, *, secure: bool, end_key: str, max_digits: int) -> _Capture:
        if self._capture is not None:
            raise RuntimeError("a keypad capture is already running")
        machine = SecureCapture(end_key, max_digits, reveal=not secure)
        machine.start()
        self._capture = _Capture(machine, secure, self.services.now(), self.call_ms())
        if secure:
            self._audit(ev.SECURE_CAPTURE_STARTED, {"at_ms": round(self.call_ms(), 1)})
            if self._recording is not None and self._consent is not None and self._consent.keeping:
                self._audit(ev.RECORDING_PAUSED, {"reason": "secure capture"})
        return self._capture

    def _end_capture(self, done: Captured, digits: str = "") -> None:
        cap, self._capture = self._capture, None
        assert cap is not None
        if cap.secure:
            self._audit(ev.SECURE_CAPTURE_ENDED, {"masked": done.masked, "length": done.length,
                                                  "ended_by": done.ended_by})  # fmt: skip
            if self._recording is not None and self._consent is not None and self._consent.keeping:
                self._audit(ev.RECORDING_RESUMED, {"reason": "secure capture ended"})
            self.services.recorder.submit(ToolCallRecord(
                call_id=self.call.call_id, tool_call_id=f"secure-{uuid.uuid4().hex[:12]}",
                name="secure_capture", arguments="{}",
                result=f'{{"masked": "{done.masked}", "length": {done.length}}}',
                status="ok" if done.ended_by in ("end_key", "max_digits") else "cancelled",
                started_at=cap.started_at, duration_ms=self.call_ms() - cap.started_ms,
                error="" if done.ended_by in ("end_key", "max_digits") else done.ended_by,
            ))  # fmt: skip
        if cap.waiter is not None and not cap.waiter.done():
            cap.waiter.set_result(done.masked if cap.secure else done.digits)

    # ---- CallControls ------------------------------------------------------------

    async def collect_digits(self, max_len: int, terminator: str, secure: bool) -> str:
        cap = self.start_capture(secure=secure, end_key=terminator, max_digits=max_len)
        cap.waiter = asyncio.get_running_loop().create_future()
        return await cap.waiter

    def stop_recording(self, how: str) -> None:
        """The caller does not want to be recorded: stop keeping audio from now on."""
        if self._consent is not None:
            self._consent_events(self._consent.refused(how))

    def record_opt_out(self, channel: str) -> str:
        number = self.call.from_number if self.call.direction == "inbound" else self.call.to_number
        if self._opted_out:
            return number
        try:
            parsed = phonenumbers.parse(number, None)
            valid = phonenumbers.is_possible_number(parsed)
        except phonenumbers.NumberParseException:
            valid = False
        if not valid:
            self._audit(ev.OPT_OUT, {"channel": channel, "recorded": False,
                                     "error": "the caller's number is not an E.164 number"})
            return ""
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        self._opted_out = True
        self.services.recorder.submit(DncAdded(e164, self.services.now(), self.call.call_id))
        self._audit(ev.OPT_OUT, {"channel": channel, "recorded": True, "list": "internal",
                                 "number": number_digest(e164)})
        return e164

    def _client(self) -> TwilioRest:
        if self._rest is None:
            t = self.services.settings.twilio
            self._rest = TwilioRest(t.account_sid, t.auth_token, base_url=t.api_base_url)
        return self._rest

    async def transfer(self, target: str, warm: bool, announce: str) -> None:
        details: dict[str, Any] = {"target": target, "warm": warm}
        try:
            twiml = transfer_twiml(
                target, warm=warm, announce=announce,
                whisper_url=self.services.settings.public_url("/twilio/whisper"),
            )
            if not self.call.call_sid:
                raise TransferError("the call has no Twilio CallSid")
            await self._client().update_twiml(self.call.call_sid, twiml)
        except (TransferError, TwilioRestError, TwilioUnavailable) as exc:
            self._audit(ev.CALL_TRANSFER_FAILED, {**details, "error": str(exc)})
            raise
        self._audit(ev.CALL_TRANSFER, details)

    async def hang_up(self, reason: str) -> None:
        try:
            if self.call.call_sid:
                await self._client().hang_up(self.call.call_sid)
        except (TwilioRestError, TwilioUnavailable) as exc:
            self._audit(ev.CALL_HANGUP_FAILED, {"reason": reason, "error": str(exc)})
            raise

    # ---- end ---------------------------------------------------------------------

    def end(self) -> None:
        """The call is over: settle a capture and the disclosures (synchronous)."""
        if self._capture is not None:
            done = self._capture.machine.cancel("call ended")
            if done is not None:
                self._end_capture(done)
        for kind, _ in self._disclosures():
            if kind not in self._disclosed:
                self._disclosed.add(kind)
                self._audit(ev.DISCLOSURE_NOT_HEARD, {"kind": kind,
                                                      "reason": "the call ended before it was heard"})
        if self._rest is not None:
            self._rest.close()
            self._rest = None

    async def close(self) -> None:
        """Finish the recording: keep it (linked to the call row) or discard it."""
        self.end()
        if self._recording is None or self._consent is None:
            return
        rec, consent = self._recording, self._consent
        had_audio = consent.keeping or (consent.state.value == "refused" and not consent.discard)
        kept = consent.policy is Policy.ONE_PARTY or consent.consented
        keep = had_audio and kept and not consent.discard
        path = await rec.finish(keep=keep)
        if path is None:
            if consent.consented and rec.had_audio:  # audio was kept: say why it is gone
                why = "consent refused" if consent.discard else "the recording could not be written"
                self._audit(ev.RECORDING_DISCARDED, {"reason": why})
            return
        self.services.recorder.submit(RecordingSaved(self.call.call_id, str(path),
                                                     consent.policy.value))  # fmt: skip
        self._audit(ev.RECORDING_SAVED, {"channels": ["caller", "agent"], "dropped": rec.dropped})

    # ---- audit -------------------------------------------------------------------

    def _consent_events(self, events: list[ConsentEvent]) -> None:
        for e in events:
            self._audit(e.action, e.details)

    def _audit(self, action: str, details: dict[str, Any]) -> None:
        if action:
            self.services.recorder.submit(AuditRecord(action, "system", self.services.now(),
                                                      self.call.call_id, details))  # fmt: skip
