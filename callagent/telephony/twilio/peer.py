"""Twilio's end of a Media Stream, sans-I/O, for the call simulator.

`TwilioPeer` builds the messages Twilio sends, in Twilio's shapes and order
(sequenceNumber as strings from "1"), and parses what our server sends back
(media/mark/clear) into events, rejecting bad frames the way Twilio would
(Twilio only warns, so no rejection here is fatal). It reuses the transition
table and field checks of `protocol.py`, so both ends agree on one set of rules.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from callagent.telephony.twilio.protocol import (
    _ENCODING,
    _SAMPLE_RATE,
    _TRANSITIONS,
    DTMF_DIGITS,
    LocalProtocolError,
    ProtocolCounters,
    Rejected,
    RejectReason,
    StreamState,
    _BYTES_PER_MS,
    _check_frames,
    _dump,
    _fail,
    _Invalid,
    _load,
    _obj,
    _payload,
    _short,
    _str,
    _Tally,
)

__all__ = ["OutboundClear", "OutboundMark", "OutboundMedia", "PeerEvent", "TwilioPeer"]

_OUTBOUND_EVENTS: Final = frozenset({"media", "mark", "clear"})


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class OutboundMark:
    name: str


@dataclass(frozen=True, slots=True)
class OutboundClear:
    pass


PeerEvent: TypeAlias = OutboundMedia | OutboundMark | OutboundClear | Rejected


class TwilioPeer:
    """Plays Twilio. Building out of order raises `LocalProtocolError` (the simulator's bug)."""

    def __init__(self, *, stream_sid: str = "", call_sid: str = "", account_sid: str = "") -> None:
        # SIDs given here are defaults for `start()`, so a simulator can name them up front.
        self._sids = (stream_sid, call_sid, account_sid)
        self._state = StreamState.AWAITING_CONNECTED
        self._sequence = 0
        self._stream_sid: str | None = None
        self._call_sid = ""
        self._account_sid = ""
        self._chunk = 0
        self._media_bytes = 0  # drives the default media-clock timestamp
        self._tally = _Tally()

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def stream_sid(self) -> str | None:
        return self._stream_sid

    @property
    def counters(self) -> ProtocolCounters:
        return self._tally.snapshot()

    # -- what Twilio sends --

    def connected(self) -> str:
        self._advance("connected")
        return _dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(
        self,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
    ) -> str:
        """Each SID left None comes from the constructor."""
        stream_sid = self._sids[0] if stream_sid is None else stream_sid
        call_sid = self._sids[1] if call_sid is None else call_sid
        account_sid = self._sids[2] if account_sid is None else account_sid
        if not (stream_sid and call_sid and account_sid):
            raise LocalProtocolError("start needs non-empty stream, call and account SIDs")
        self._advance("start")
        self._stream_sid, self._call_sid, self._account_sid = stream_sid, call_sid, account_sid
        body = {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],  # <Connect><Stream> carries the caller only
            "mediaFormat": {"encoding": _ENCODING, "sampleRate": _SAMPLE_RATE, "channels": 1},
            "customParameters": dict(custom_parameters or {}),
        }
        return self._envelope("start", body)

    def media(self, ulaw: bytes, chunk: int | None = None, timestamp_ms: int | None = None) -> str:
        """Caller audio. chunk defaults to the next one from 1; timestamp to the audio sent so far."""
        self._require_streaming("media")
        try:
            _check_frames(ulaw, "media.")
        except _Invalid as exc:
            raise LocalProtocolError(exc.detail) from None
        self._chunk = self._chunk + 1 if chunk is None else chunk
        timestamp = self._media_bytes // _BYTES_PER_MS if timestamp_ms is None else timestamp_ms
        self._media_bytes += len(ulaw)
        body = {
            "track": "inbound",
            "chunk": str(self._chunk),
            "timestamp": str(timestamp),
            "payload": base64.b64encode(ulaw).decode("ascii"),
        }
        return self._envelope("media", body)

    def dtmf(self, digit: str) -> str:
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise LocalProtocolError(f"{digit!r} is not a DTMF digit (0-9 * # A-D)")
        self._require_streaming("dtmf")
        # Twilio names the track "inbound_track" here but "inbound" in media.
        return self._envelope("dtmf", {"track": "inbound_track", "digit": digit})

    def mark(self, name: str) -> str:
        """Echo of one of our server's marks (played, or cleared: Twilio doesn't say)."""
        self._require_streaming("mark")
        return self._envelope("mark", {"name": name})

    def stop(self) -> str:
        self._advance("stop")
        return self._envelope("stop", {"accountSid": self._account_sid, "callSid": self._call_sid})

    def _advance(self, name: str) -> None:
        moves = _TRANSITIONS[self._state]
        if name not in moves:
            raise LocalProtocolError(f"Twilio does not send {name!r} in state {self._state.name}")
        self._state = moves[name]

    def _require_streaming(self, name: str) -> None:
        if self._state is not StreamState.STREAMING:
            raise LocalProtocolError(f"Twilio does not send {name!r} in state {self._state.name}")

    def _envelope(self, name: str, body: Mapping[str, object]) -> str:
        self._sequence += 1
        return _dump({"event": name, "sequenceNumber": str(self._sequence), "streamSid": self._stream_sid, name: body})

    # -- what our server sends --

    def receive(self, text: str | bytes) -> list[PeerEvent]:
        """Parse one message from our server; always exactly one event."""
        try:
            return [self._parse(text)]
        except _Invalid as exc:
            self._tally.rejected[exc.reason] += 1
            return [Rejected(exc.reason, exc.detail, False)]

    def _parse(self, text: str | bytes) -> PeerEvent:
        if self._state is StreamState.STOPPED:
            _fail(RejectReason.AFTER_STOP, "message received after the stream stopped")
        # Twilio documents no size limit on our frames ("any size").
        message, name = _load(text, _OUTBOUND_EVENTS, None)
        if self._state is not StreamState.STREAMING:
            _fail(RejectReason.OUT_OF_ORDER, f"event {name!r} not allowed in state {self._state.name} (before start)")
        sid = _str(message, "", "streamSid")
        if sid != self._stream_sid:
            _fail(RejectReason.STREAM_SID_MISMATCH, f"streamSid {_short(sid)} is not this stream's {self._stream_sid!r}")
        if name == "clear":
            return OutboundClear()
        body = _obj(message, "", name)
        if name == "mark":
            return OutboundMark(_str(body, "mark.", "name"))
        ulaw = _payload(body, "media.")
        if not ulaw:
            _fail(RejectReason.BAD_FRAME_SIZE, "media.payload: empty")
        return OutboundMedia(ulaw)
