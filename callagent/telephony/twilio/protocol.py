"""Twilio Media Streams, our (server) end, sans-I/O.

The only code that knows Twilio's JSON. Text frames go in through
`TwilioStreamProtocol.receive()` and come out as typed events; frames to send
come out of `media()`, `mark()` and `clear()` as JSON text. No socket, loop or
clock here: the shell only reads, feeds, drains and writes. The phone side that
plays Twilio in the simulator lives in `peer.py` and shares these rules.

Rules Twilio leaves open, chosen here:

* Order: `connected` then `start`, as Twilio sends. A stream whose first
  message is `start` is accepted too (some Twilio-compatible peers skip
  `connected`); it then yields no `Connected` event. All moves are in
  `_TRANSITIONS`.
* Frames: a media payload must decode to whole milliseconds of 8 kHz mu-law,
  i.e. a non-empty multiple of 8 bytes (Twilio sends 160 bytes = 20 ms).
* Fatal: only a rejected `start` (malformed, streamSid disagreeing, or a format
  other than audio/x-mulaw, 8000 Hz, mono). The state becomes STOPPED and the
  call must end. Any other bad message is dropped and the call goes on.
* Once STOPPED (by `stop` or a fatal rejection), every input is rejected
  unparsed as AFTER_STOP.
* `sequenceNumber` is required on all but `connected` and counts from "1"; a
  gap or regression is counted in `counters`, never rejected.
* Unknown extra fields are ignored; known fields are type-checked strictly.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NoReturn, TypeAlias

__all__ = [
    "Audio",
    "Connected",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DTMF_DIGITS",
    "Digit",
    "Event",
    "LocalProtocolError",
    "MarkEchoed",
    "ProtocolCounters",
    "RejectReason",
    "Rejected",
    "Started",
    "Stopped",
    "StreamState",
    "TwilioStreamProtocol",
]

DEFAULT_MAX_MESSAGE_BYTES: Final = 65536
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")
# 8 kHz mu-law is 1 byte per sample, so 8 bytes is one millisecond.
_BYTES_PER_MS: Final = 8
_ENCODING: Final = "audio/x-mulaw"
_SAMPLE_RATE: Final = 8000
_CHANNELS: Final = 1
# Enough for any real counter and far below int()'s 4300-digit limit.
_MAX_DIGITS: Final = 18


class LocalProtocolError(Exception):
    """Our own misuse of the protocol (e.g. sending media before `start`)."""


class StreamState(enum.Enum):
    AWAITING_CONNECTED = 1
    AWAITING_START = 2
    STREAMING = 3
    STOPPED = 4


# The one transition table: state -> {inbound event allowed there -> next state}.
# Outbound frames (media/mark/clear) are allowed in STREAMING only.
_TRANSITIONS: Final[Mapping[StreamState, Mapping[str, StreamState]]] = MappingProxyType(
    {
        StreamState.AWAITING_CONNECTED: MappingProxyType(
            {"connected": StreamState.AWAITING_START, "start": StreamState.STREAMING}
        ),
        StreamState.AWAITING_START: MappingProxyType({"start": StreamState.STREAMING}),
        StreamState.STREAMING: MappingProxyType(
            {
                "media": StreamState.STREAMING,
                "dtmf": StreamState.STREAMING,
                "mark": StreamState.STREAMING,
                "stop": StreamState.STOPPED,
            }
        ),
        StreamState.STOPPED: MappingProxyType({}),
    }
)
_INBOUND_EVENTS: Final = frozenset(name for moves in _TRANSITIONS.values() for name in moves)


class RejectReason(enum.Enum):
    TOO_LARGE = "too_large"
    BINARY_FRAME = "binary_frame"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    UNKNOWN_EVENT = "unknown_event"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_BASE64 = "bad_base64"
    BAD_FRAME_SIZE = "bad_frame_size"
    BAD_DIGIT = "bad_digit"
    OUT_OF_ORDER = "out_of_order"
    AFTER_STOP = "after_stop"
    STREAM_SID_MISMATCH = "stream_sid_mismatch"
    UNSUPPORTED_FORMAT = "unsupported_format"


# ---- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Started:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int
    custom_parameters: dict[str, str]


@dataclass(frozen=True, slots=True)
class Audio:
    ulaw: bytes
    chunk: int
    timestamp_ms: int  # media clock: ms since stream start, not wall clock
    track: str


@dataclass(frozen=True, slots=True)
class Digit:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkEchoed:
    # Twilio echoes a mark both when played and when cleared: the session
    # tells the two apart by whether a `clear` is pending.
    name: str


@dataclass(frozen=True, slots=True)
class Stopped:
    call_sid: str
    account_sid: str


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    detail: str
    fatal: bool
    # For a refused ``start``: its customParameters when they could be read,
    # so the call it belongs to can still be closed with its reason.
    start_parameters: dict[str, str] | None = None


Event: TypeAlias = Connected | Started | Audio | Digit | MarkEchoed | Stopped | Rejected


@dataclass(frozen=True, slots=True)
class ProtocolCounters:
    """A snapshot: rejections per reason (every reason present) and sequence faults."""

    rejected: Mapping[RejectReason, int]
    sequence_gaps: int = 0
    sequence_regressions: int = 0


# ---- validation helpers, shared with peer.py -----------------------------------------


class _Invalid(Exception):
    """Internal only: carries a rejection out of the field checks; never escapes."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.start_parameters: dict[str, str] | None = None


class _Tally:
    """Mutable counts behind `ProtocolCounters`, one per protocol instance."""

    def __init__(self) -> None:
        self.rejected: Counter[RejectReason] = Counter()
        self.sequence_gaps = 0
        self.sequence_regressions = 0

    def snapshot(self) -> ProtocolCounters:
        return ProtocolCounters(
            MappingProxyType({reason: self.rejected[reason] for reason in RejectReason}),
            self.sequence_gaps,
            self.sequence_regressions,
        )


def _fail(reason: RejectReason, detail: str) -> NoReturn:
    raise _Invalid(reason, detail)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(value: object) -> str:
    # Keeps hostile input from flooding the logs through `detail`.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(obj: Mapping[str, object], path: str, key: str) -> object:
    if key not in obj:
        _fail(RejectReason.MISSING_FIELD, f"{path}{key}: missing")
    return obj[key]


def _wrong(path: str, key: str, expected: str, value: object) -> NoReturn:
    _fail(RejectReason.WRONG_TYPE, f"{path}{key}: expected {expected}, got {_json_type(value)} {_short(value)}")


def _str(obj: Mapping[str, object], path: str, key: str, *, nonempty: bool = False) -> str:
    value = _field(obj, path, key)
    if not isinstance(value, str) or (nonempty and not value):
        _wrong(path, key, "a non-empty string" if nonempty else "a string", value)
    return value


def _obj(obj: Mapping[str, object], path: str, key: str) -> dict[str, object]:
    value = _field(obj, path, key)
    if not isinstance(value, dict):
        _wrong(path, key, "an object", value)
    return value


def _number(obj: Mapping[str, object], path: str, key: str) -> int:
    value = _field(obj, path, key)
    if not isinstance(value, int) or isinstance(value, bool):
        _wrong(path, key, "an integer number", value)
    return value


def _int_str(obj: Mapping[str, object], path: str, key: str) -> int:
    """Twilio's counters are decimal strings on the wire ("sequenceNumber":"3")."""
    value = _field(obj, path, key)
    if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS):
        _wrong(path, key, f"a string of 1-{_MAX_DIGITS} decimal digits", value)
    return int(value)


# A media message exactly as Twilio sends it (compact, its key order; streamSid
# first or last), for `TwilioStreamProtocol._media_fast`. A string group takes
# no quote, backslash or control character, so its text is the JSON string's
# value (json.loads refuses raw control characters); a counter group is what
# `_int_str` accepts; the payload group has base64's alphabet, checked in full
# by the decoder.
_STRING = r'"([^"\\\x00-\x1f]*)"'
_COUNTER = r'"([0-9]{1,%d})"' % _MAX_DIGITS
_MEDIA_TEXT: Final = re.compile(
    r'\{"event":"media","sequenceNumber":' + _COUNTER
    + r',(?:"streamSid":' + _STRING + r',)?'
    + r'"media":\{"track":' + _STRING + r',"chunk":' + _COUNTER + r',"timestamp":' + _COUNTER
    + r',"payload":"([A-Za-z0-9+/]*={0,2})"\}'
    + r'(?:,"streamSid":' + _STRING + r')?\}'
)


def _payload(obj: Mapping[str, object], path: str) -> bytes:
    text = _str(obj, path, "payload")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        _fail(RejectReason.BAD_BASE64, f"{path}payload: not base64 ({exc})")


def _load(text: str | bytes, names: frozenset[str], max_bytes: int | None) -> tuple[dict[str, object], str]:
    """Envelope checks, cheapest first: frame kind, size, JSON, object, event name."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        _fail(RejectReason.BINARY_FRAME, f"binary frame of {len(text)} bytes; only JSON text frames are valid")
    # A code point is at most 4 bytes of UTF-8 (a lone surrogate 3): a short
    # message cannot be over the limit, so only a long one is measured.
    if max_bytes is not None and len(text) * 4 > max_bytes:
        # surrogatepass: a lone surrogate must be measured, not raise.
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            _fail(RejectReason.TOO_LARGE, f"message is {size} bytes, over the {max_bytes}-byte limit")
    try:
        value = _decode_json(text)
    except ValueError as exc:
        _fail(RejectReason.NOT_JSON, f"not JSON: {exc}")
    except RecursionError:
        _fail(RejectReason.NOT_JSON, "not JSON: nested too deeply")
    if not isinstance(value, dict):
        _fail(RejectReason.NOT_OBJECT, f"expected a JSON object, got {_json_type(value)}")
    name = _str(value, "", "event")
    if name not in names:
        _fail(RejectReason.UNKNOWN_EVENT, f"unknown event {_short(name)}")
    return value, name


def _no_constant(name: str) -> NoReturn:
    # NaN/Infinity are Python extensions, not JSON.
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every message: ``json.loads(text, parse_constant=...)``
# builds a new decoder and scanner per call, half the cost of a media message.
_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant)


def _decode_json(text: str) -> object:
    """``json.loads(text, parse_constant=_no_constant)``, same results and errors."""
    if text.startswith("\ufeff"):  # json.loads refuses a BOM before decoding
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


def _dump(message: Mapping[str, object]) -> str:
    # Compact, in Twilio's documented key order.
    return json.dumps(message, separators=(",", ":"))


def _check_frames(ulaw: bytes, path: str) -> None:
    if not ulaw or len(ulaw) % _BYTES_PER_MS:
        _fail(
            RejectReason.BAD_FRAME_SIZE,
            f"{path}payload: {len(ulaw)} bytes is not a whole number of ms of 8 kHz mu-law "
            f"(a non-empty multiple of {_BYTES_PER_MS})",
        )


# ---- our end -------------------------------------------------------------------------


class TwilioStreamProtocol:
    """One Media Stream, seen from our server. Bad input becomes `Rejected`, never raises."""

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self._max_bytes = max_message_bytes
        self._state = StreamState.AWAITING_CONNECTED
        self._stream_sid: str | None = None
        self._last_sequence = 0  # Twilio numbers from "1"
        self._tally = _Tally()
        # Outbound JSON around the parts that vary, built once the streamSid is
        # known: the same bytes as `_dump` of the whole message.
        self._media_head = ""
        self._mark_head = ""
        self._clear_text = ""

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def stream_sid(self) -> str | None:
        """None until `start` is accepted."""
        return self._stream_sid

    @property
    def counters(self) -> ProtocolCounters:
        return self._tally.snapshot()

    # -- inbound --

    def receive(self, text: str | bytes) -> list[Event]:
        """Parse one WebSocket message; always exactly one event today."""
        return [self._receive_one(text)]

    def _receive_one(self, text: str | bytes) -> Event:
        if self._state is StreamState.STREAMING and type(text) is str and len(text) * 4 <= self._max_bytes:
            audio = self._media_fast(text)
            if audio is not None:
                return audio
        if self._state is StreamState.STOPPED:
            return self._reject(_Invalid(RejectReason.AFTER_STOP, "message received after the stream stopped"))
        moves = _TRANSITIONS[self._state]
        try:
            message, name = _load(text, _INBOUND_EVENTS, self._max_bytes)
            if name not in moves:
                allowed = ", ".join(sorted(moves))
                _fail(
                    RejectReason.OUT_OF_ORDER,
                    f"event {name!r} not allowed in state {self._state.name} (allowed: {allowed})",
                )
        except _Invalid as exc:
            return self._reject(exc)
        try:
            event = self._parse(name, message)
        except _Invalid as exc:
            # Without a usable start there is no stream to carry on with.
            return self._reject(exc, fatal=name == "start")
        self._state = moves[name]
        return event

    def _media_fast(self, text: str) -> Audio | None:
        """A media message as Twilio writes it, read without a JSON parser.

        About 50 arrive per call-second. `_MEDIA_TEXT` matches only compact
        JSON, in Twilio's key order, whose strings need no unescaping: text
        that `json.loads` reads as the same fields. Anything else, and any
        check that fails here, returns None with nothing changed, and the
        general path reads the message and rejects it with its precise reason.
        """
        match = _MEDIA_TEXT.fullmatch(text)
        if match is None:
            return None
        sequence, sid_first, track, chunk, timestamp, payload, sid_last = match.groups()
        if (sid_first is None) == (sid_last is None):  # no streamSid, or two
            return None
        if (sid_first if sid_last is None else sid_last) != self._stream_sid:
            return None
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except ValueError:
            return None
        if not ulaw or len(ulaw) % _BYTES_PER_MS:
            return None
        self._count_sequence(int(sequence))
        return Audio(ulaw, int(chunk), int(timestamp), track)

    def _reject(self, exc: _Invalid, *, fatal: bool = False) -> Rejected:
        self._tally.rejected[exc.reason] += 1
        if fatal:
            self._state = StreamState.STOPPED
        return Rejected(exc.reason, exc.detail, fatal, exc.start_parameters)

    def _parse(self, name: str, message: dict[str, object]) -> Event:
        if name == "connected":
            return Connected(_str(message, "", "protocol"), _str(message, "", "version"))
        if name == "start":
            return self._parse_start(message)
        sid = _str(message, "", "streamSid")
        if sid != self._stream_sid:
            _fail(
                RejectReason.STREAM_SID_MISMATCH,
                f"streamSid {_short(sid)} is not this stream's {self._stream_sid!r}",
            )
        # Counted before the body is checked, so a dropped message is no false gap.
        self._count_sequence(_int_str(message, "", "sequenceNumber"))
        body = _obj(message, "", name)
        path = f"{name}."
        if name == "media":
            ulaw = _payload(body, path)
            _check_frames(ulaw, path)
            chunk = _int_str(body, path, "chunk")
            return Audio(ulaw, chunk, _int_str(body, path, "timestamp"), _str(body, path, "track"))
        if name == "dtmf":
            digit = _str(body, path, "digit")
            if len(digit) != 1 or digit not in DTMF_DIGITS:
                _fail(RejectReason.BAD_DIGIT, f"dtmf.digit: {_short(digit)} is not one of 0-9 * # A-D")
            return Digit(digit)
        if name == "mark":
            return MarkEchoed(_str(body, path, "name"))
        return Stopped(_str(body, path, "callSid"), _str(body, path, "accountSid"))

    def _parse_start(self, message: dict[str, object]) -> Started:
        try:
            return self._parse_start_body(message)
        except _Invalid as exc:
            body = message.get("start")
            params = body.get("customParameters") if isinstance(body, dict) else None
            if isinstance(params, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in params.items()
            ):
                exc.start_parameters = dict(params)
            raise

    def _parse_start_body(self, message: dict[str, object]) -> Started:
        sequence = _int_str(message, "", "sequenceNumber")
        envelope_sid = _str(message, "", "streamSid", nonempty=True)
        body = _obj(message, "", "start")
        p = "start."
        sid = _str(body, p, "streamSid", nonempty=True)
        if sid != envelope_sid:
            _fail(
                RejectReason.STREAM_SID_MISMATCH,
                f"start.streamSid {_short(sid)} differs from the envelope's {_short(envelope_sid)}",
            )
        call_sid = _str(body, p, "callSid", nonempty=True)
        account_sid = _str(body, p, "accountSid", nonempty=True)
        tracks = _field(body, p, "tracks")
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            _wrong(p, "tracks", "an array of strings", tracks)
        fmt = _obj(body, p, "mediaFormat")
        fp = "start.mediaFormat."
        encoding = _str(fmt, fp, "encoding")
        rate = _number(fmt, fp, "sampleRate")
        channels = _number(fmt, fp, "channels")
        if (encoding, rate, channels) != (_ENCODING, _SAMPLE_RATE, _CHANNELS):
            _fail(
                RejectReason.UNSUPPORTED_FORMAT,
                f"start.mediaFormat: {_short(encoding)} at {rate} Hz x {channels} channel(s); "
                f"only {_ENCODING} at {_SAMPLE_RATE} Hz x {_CHANNELS} is supported",
            )
        # Optional: Twilio sends {} without <Parameter>s, some compatible peers omit it.
        params = body.get("customParameters", {})
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            _wrong(p, "customParameters", "an object of strings", params)
        self._count_sequence(sequence)
        self._stream_sid = sid
        quoted = json.dumps(sid)  # as `_dump` writes it
        self._media_head = f'{{"event":"media","streamSid":{quoted},"media":{{"payload":"'
        self._mark_head = f'{{"event":"mark","streamSid":{quoted},"mark":{{"name":'
        self._clear_text = _dump({"event": "clear", "streamSid": sid})
        return Started(sid, call_sid, account_sid, tuple(tracks), encoding, rate, channels, dict(params))

    def _count_sequence(self, number: int) -> None:
        expected = self._last_sequence + 1
        if number > expected:
            self._tally.sequence_gaps += 1
        elif number < expected:
            self._tally.sequence_regressions += 1
            return  # keep the high-water mark, so one stray doesn't shift the rest
        self._last_sequence = number

    # -- outbound --

    def media(self, ulaw: bytes) -> str:
        """Audio to play: raw 8 kHz mu-law, any non-empty length, no header."""
        self._sending("media")
        if not ulaw:
            raise LocalProtocolError("media payload is empty")
        # Base64 needs no JSON escaping: the text is
        # _dump({"event": "media", "streamSid": sid, "media": {"payload": payload}}).
        return self._media_head + binascii.b2a_base64(ulaw, newline=False).decode("ascii") + '"}}'

    def mark(self, name: str) -> str:
        self._sending("mark")
        if not name:
            raise LocalProtocolError("mark name is empty: its echo could not be matched")
        # _dump({"event": "mark", "streamSid": sid, "mark": {"name": name}})
        return self._mark_head + json.dumps(name) + "}}"

    def clear(self) -> str:
        self._sending("clear")
        return self._clear_text  # _dump({"event": "clear", "streamSid": sid})

    def _sending(self, what: str) -> str:
        if self._state is not StreamState.STREAMING or self._stream_sid is None:
            raise LocalProtocolError(f"cannot send {what!r} in state {self._state.name}: only while STREAMING")
        return self._stream_sid
