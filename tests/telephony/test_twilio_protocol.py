"""TwilioStreamProtocol alone: no socket, no loop. Tests are named for the rule they pin."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from callagent.telephony.twilio import protocol as protocol_module
from callagent.telephony.twilio.protocol import (
    _TRANSITIONS,
    Audio,
    Connected,
    Digit,
    Event,
    LocalProtocolError,
    MarkEchoed,
    Rejected,
    RejectReason,
    Started,
    Stopped,
    StreamState,
    TwilioStreamProtocol,
)

SID = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACCOUNT = "AC" + "3" * 32
FRAME = bytes(range(160))  # 20 ms of mu-law

CONNECTED: dict[str, Any] = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start_msg(seq: int = 1, **body_overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accountSid": ACCOUNT,
        "streamSid": SID,
        "callSid": CALL,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"call_id": "c_123"},
    }
    body.update(body_overrides)
    return {"event": "start", "sequenceNumber": str(seq), "start": body, "streamSid": SID}


def media_msg(seq: int, payload: bytes = FRAME, chunk: str = "1", timestamp: str = "0") -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(seq),
        "media": {"track": "inbound", "chunk": chunk, "timestamp": timestamp,
                  "payload": base64.b64encode(payload).decode()},
        "streamSid": SID,
    }


def dtmf_msg(seq: int, digit: Any = "1") -> dict[str, Any]:
    return {"event": "dtmf", "streamSid": SID, "sequenceNumber": str(seq),
            "dtmf": {"track": "inbound_track", "digit": digit}}


def mark_msg(seq: int, name: Any = "m1") -> dict[str, Any]:
    return {"event": "mark", "sequenceNumber": str(seq), "streamSid": SID, "mark": {"name": name}}


def stop_msg(seq: int) -> dict[str, Any]:
    return {"event": "stop", "sequenceNumber": str(seq), "stop": {"accountSid": ACCOUNT, "callSid": CALL},
            "streamSid": SID}


def feed(p: TwilioStreamProtocol, message: dict[str, Any] | str | bytes) -> Event:
    text = message if isinstance(message, (str, bytes)) else json.dumps(message)
    events = p.receive(text)
    assert len(events) == 1
    return events[0]


def rejected(p: TwilioStreamProtocol, message: dict[str, Any] | str | bytes) -> Rejected:
    event = feed(p, message)
    assert isinstance(event, Rejected), event
    return event


def streaming() -> TwilioStreamProtocol:
    p = TwilioStreamProtocol()
    feed(p, CONNECTED)
    assert isinstance(feed(p, start_msg()), Started)
    return p


# ---- the table and the surface ------------------------------------------------------


def test_public_names_are_pinned() -> None:
    assert sorted(protocol_module.__all__) == sorted([
        "Audio", "Connected", "DEFAULT_MAX_MESSAGE_BYTES", "DTMF_DIGITS", "Digit", "Event",
        "LocalProtocolError", "MarkEchoed", "ProtocolCounters", "RejectReason", "Rejected",
        "Started", "Stopped", "StreamState", "TwilioStreamProtocol",
    ])


def test_transition_table_allows_start_first_and_nothing_after_stop() -> None:
    assert {state: dict(moves) for state, moves in _TRANSITIONS.items()} == {
        StreamState.AWAITING_CONNECTED: {"connected": StreamState.AWAITING_START, "start": StreamState.STREAMING},
        StreamState.AWAITING_START: {"start": StreamState.STREAMING},
        StreamState.STREAMING: {"media": StreamState.STREAMING, "dtmf": StreamState.STREAMING,
                                "mark": StreamState.STREAMING, "stop": StreamState.STOPPED},
        StreamState.STOPPED: {},
    }


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Digit("1").digit = "2"  # type: ignore[misc]


def test_max_message_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TwilioStreamProtocol(max_message_bytes=0)


# ---- happy paths ------------------------------------------------------------------


def test_connected_then_start_begins_streaming() -> None:
    p = TwilioStreamProtocol()
    assert (p.state, p.stream_sid) == (StreamState.AWAITING_CONNECTED, None)
    assert feed(p, CONNECTED) == Connected("Call", "1.0.0")
    assert (p.state, p.stream_sid) == (StreamState.AWAITING_START, None)
    assert feed(p, start_msg()) == Started(SID, CALL, ACCOUNT, ("inbound",), "audio/x-mulaw", 8000, 1,
                                           {"call_id": "c_123"})
    assert (p.state, p.stream_sid) == (StreamState.STREAMING, SID)


def test_start_without_connected_is_tolerated() -> None:
    p = TwilioStreamProtocol()
    assert isinstance(feed(p, start_msg()), Started)
    assert p.state is StreamState.STREAMING


def test_custom_parameters_may_be_omitted() -> None:
    message = start_msg()
    del message["start"]["customParameters"]
    event = feed(TwilioStreamProtocol(), message)
    assert isinstance(event, Started) and event.custom_parameters == {}


def test_media_wire_strings_become_ints_and_payload_bytes() -> None:
    p = streaming()
    assert feed(p, media_msg(2, chunk="7", timestamp="120")) == Audio(FRAME, 7, 120, "inbound")


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_every_dtmf_key_is_a_digit(digit: str) -> None:
    assert feed(streaming(), dtmf_msg(2, digit)) == Digit(digit)


def test_mark_echo_carries_the_name() -> None:
    assert feed(streaming(), mark_msg(2, "resp_1:item_2:seq_7")) == MarkEchoed("resp_1:item_2:seq_7")


def test_stop_ends_the_stream() -> None:
    p = streaming()
    assert feed(p, stop_msg(2)) == Stopped(CALL, ACCOUNT)
    assert p.state is StreamState.STOPPED


def test_unknown_extra_fields_are_ignored() -> None:
    p = TwilioStreamProtocol()
    message = start_msg(extra={"x": 1})
    message["newEnvelopeField"] = [1, 2]
    assert isinstance(feed(p, message), Started)
    media = media_msg(2)
    media["media"]["futureField"] = None
    assert isinstance(feed(p, media), Audio)


def test_a_clean_stream_counts_nothing() -> None:
    p = streaming()
    for seq in range(2, 6):
        feed(p, media_msg(seq))
    counters = p.counters
    assert set(counters.rejected) == set(RejectReason) and not any(counters.rejected.values())
    assert counters.sequence_gaps == counters.sequence_regressions == 0


# ---- envelope rejections (never raise, never fatal) -----------------------------------


def test_message_over_size_limit_is_rejected_before_json_parsing() -> None:
    p = TwilioStreamProtocol(max_message_bytes=100)
    event = rejected(p, "{" * 101)  # also not JSON: size wins
    assert event.reason is RejectReason.TOO_LARGE and not event.fatal
    assert event.detail == "message is 101 bytes, over the 100-byte limit"


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    message = json.dumps(start_msg(customParameters={"n": "é" * 20}), ensure_ascii=False)
    limit = len(message) + 10  # enough characters, too few bytes
    assert rejected(TwilioStreamProtocol(max_message_bytes=limit), message).reason is RejectReason.TOO_LARGE
    assert isinstance(feed(TwilioStreamProtocol(max_message_bytes=len(message.encode())), message), Started)


def test_lone_surrogate_is_measured_not_raised() -> None:
    event = feed(TwilioStreamProtocol(), '{"event":"connected","protocol":"\ud800","version":"1"}')
    assert event == Connected("\ud800", "1")


def test_binary_frame_is_rejected() -> None:
    event = rejected(TwilioStreamProtocol(), json.dumps(CONNECTED).encode())
    assert event.reason is RejectReason.BINARY_FRAME and not event.fatal


@pytest.mark.parametrize("text", ["", "not json", '{"event":', "{'event': 'connected'}"])
def test_text_that_is_not_json_is_rejected(text: str) -> None:
    event = rejected(TwilioStreamProtocol(), text)
    assert event.reason is RejectReason.NOT_JSON and event.detail.startswith("not JSON: ")


def test_nan_and_infinity_are_not_json() -> None:
    event = rejected(TwilioStreamProtocol(), '{"event":"connected","protocol":NaN,"version":"1"}')
    assert event.reason is RejectReason.NOT_JSON


def test_deep_nesting_is_rejected_not_raised() -> None:
    event = rejected(TwilioStreamProtocol(), "[" * 60_000)
    assert event.reason is RejectReason.NOT_JSON


def test_huge_json_integer_is_rejected_not_raised() -> None:
    assert rejected(TwilioStreamProtocol(), "9" * 5000).reason is RejectReason.NOT_JSON


@pytest.mark.parametrize("text", ["[]", '"connected"', "1", "null", "true"])
def test_json_that_is_not_an_object_is_rejected(text: str) -> None:
    assert rejected(TwilioStreamProtocol(), text).reason is RejectReason.NOT_OBJECT


def test_missing_event_name_is_a_missing_field() -> None:
    event = rejected(TwilioStreamProtocol(), '{"protocol":"Call"}')
    assert (event.reason, event.detail) == (RejectReason.MISSING_FIELD, "event: missing")


def test_event_name_must_be_a_string() -> None:
    assert rejected(TwilioStreamProtocol(), '{"event":1}').reason is RejectReason.WRONG_TYPE


@pytest.mark.parametrize("name", ["hello", "clear", "Media", ""])
def test_unknown_event_name_is_rejected(name: str) -> None:
    event = rejected(streaming(), {"event": name, "streamSid": SID, "sequenceNumber": "2"})
    assert event.reason is RejectReason.UNKNOWN_EVENT and not event.fatal


# ---- field rejections ------------------------------------------------------------------


def _without(message: dict[str, Any], *path: str) -> dict[str, Any]:
    target = message
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return message


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (_without(media_msg(2), "streamSid"), "streamSid: missing"),
        (_without(media_msg(2), "sequenceNumber"), "sequenceNumber: missing"),
        (_without(media_msg(2), "media"), "media: missing"),
        (_without(media_msg(2), "media", "payload"), "media.payload: missing"),
        (_without(media_msg(2), "media", "chunk"), "media.chunk: missing"),
        (_without(media_msg(2), "media", "timestamp"), "media.timestamp: missing"),
        (_without(media_msg(2), "media", "track"), "media.track: missing"),
        (_without(dtmf_msg(2), "dtmf", "digit"), "dtmf.digit: missing"),
        (_without(mark_msg(2), "mark", "name"), "mark.name: missing"),
        (_without(stop_msg(2), "stop", "callSid"), "stop.callSid: missing"),
    ],
)
def test_missing_field_is_rejected_non_fatally(message: dict[str, Any], detail: str) -> None:
    p = streaming()
    event = rejected(p, message)
    assert (event.reason, event.detail, event.fatal) == (RejectReason.MISSING_FIELD, detail, False)
    assert p.state is StreamState.STREAMING


def _with(message: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    target = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return message


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (_with(media_msg(2), 2, "sequenceNumber"),
         "sequenceNumber: expected a string of 1-18 decimal digits, got number 2"),
        (_with(media_msg(2), 3, "media", "chunk"), "media.chunk: expected a string of 1-18 decimal digits, got number 3"),
        (_with(media_msg(2), "5ms", "media", "timestamp"),
         "media.timestamp: expected a string of 1-18 decimal digits, got string '5ms'"),
        (_with(media_msg(2), "-1", "media", "chunk"), "media.chunk: expected a string of 1-18 decimal digits, got string '-1'"),
        (_with(media_msg(2), "١", "media", "chunk"), "media.chunk: expected a string of 1-18 decimal digits, got string '١'"),
        (_with(media_msg(2), "1" * 19, "media", "chunk"),
         "media.chunk: expected a string of 1-18 decimal digits, got string '1111111111111111111'"),
        (_with(media_msg(2), None, "media", "payload"), "media.payload: expected a string, got null None"),
        (_with(media_msg(2), "AAAA", "media"), "media: expected an object, got string 'AAAA'"),
        (_with(media_msg(2), 1, "media", "track"), "media.track: expected a string, got number 1"),
        (_with(mark_msg(2), ["m"], "mark", "name"), "mark.name: expected a string, got array ['m']"),
        (_with(dtmf_msg(2), 1, "dtmf", "digit"), "dtmf.digit: expected a string, got number 1"),
        (_with(stop_msg(2), True, "stop", "accountSid"), "stop.accountSid: expected a string, got boolean True"),
        (_with(media_msg(2), 1, "streamSid"), "streamSid: expected a string, got number 1"),
    ],
)
def test_wrong_typed_field_is_rejected_non_fatally(message: dict[str, Any], detail: str) -> None:
    p = streaming()
    event = rejected(p, message)
    assert (event.reason, event.detail, event.fatal) == (RejectReason.WRONG_TYPE, detail, False)
    assert p.state is StreamState.STREAMING


def test_connected_with_wrong_typed_field_is_dropped_and_start_still_works() -> None:
    p = TwilioStreamProtocol()
    assert rejected(p, {"event": "connected", "protocol": 1, "version": "1"}).reason is RejectReason.WRONG_TYPE
    assert p.state is StreamState.AWAITING_CONNECTED
    assert isinstance(feed(p, start_msg()), Started)


@pytest.mark.parametrize("payload", ["!!!!", "AAE", "AA=A", "é", "AA AA"])
def test_payload_that_is_not_base64_is_rejected(payload: str) -> None:
    message = _with(media_msg(2), payload, "media", "payload")
    event = rejected(streaming(), message)
    assert event.reason is RejectReason.BAD_BASE64 and not event.fatal
    assert event.detail.startswith("media.payload: not base64")


@pytest.mark.parametrize("size", [0, 1, 7, 159, 161])
def test_payload_must_be_whole_milliseconds_of_mulaw(size: int) -> None:
    event = rejected(streaming(), media_msg(2, payload=bytes(size)))
    assert event.reason is RejectReason.BAD_FRAME_SIZE and not event.fatal
    assert event.detail.startswith(f"media.payload: {size} bytes is not a whole number of ms")


@pytest.mark.parametrize("size", [8, 160, 320, 8000])
def test_payload_of_whole_milliseconds_is_accepted(size: int) -> None:
    event = feed(streaming(), media_msg(2, payload=bytes(size)))
    assert isinstance(event, Audio) and len(event.ulaw) == size


@pytest.mark.parametrize("digit", ["E", "a", "12", "", "١", " "])
def test_dtmf_digit_outside_0_9_star_hash_a_d_is_rejected(digit: str) -> None:
    event = rejected(streaming(), dtmf_msg(2, digit))
    assert event.reason is RejectReason.BAD_DIGIT and not event.fatal


def test_stream_sid_other_than_start_is_rejected_non_fatally() -> None:
    p = streaming()
    event = rejected(p, _with(media_msg(2), "MZother", "streamSid"))
    assert event.reason is RejectReason.STREAM_SID_MISMATCH and not event.fatal
    assert p.state is StreamState.STREAMING
    assert isinstance(feed(p, media_msg(3)), Audio)


# ---- order --------------------------------------------------------------------------


def test_media_before_start_is_rejected_non_fatally() -> None:
    p = TwilioStreamProtocol()
    feed(p, CONNECTED)
    event = rejected(p, media_msg(1))
    assert (event.reason, event.fatal) == (RejectReason.OUT_OF_ORDER, False)
    assert event.detail == "event 'media' not allowed in state AWAITING_START (allowed: start)"
    assert p.state is StreamState.AWAITING_START


@pytest.mark.parametrize("message", [dtmf_msg(1), mark_msg(1), stop_msg(1)])
def test_stream_events_before_start_are_out_of_order(message: dict[str, Any]) -> None:
    assert rejected(TwilioStreamProtocol(), message).reason is RejectReason.OUT_OF_ORDER


def test_second_start_is_dropped_and_the_first_stream_kept() -> None:
    p = streaming()
    event = rejected(p, _with(start_msg(2), "MZ2", "streamSid"))
    assert (event.reason, event.fatal) == (RejectReason.OUT_OF_ORDER, False)
    assert p.stream_sid == SID


def test_second_connected_is_out_of_order() -> None:
    p = TwilioStreamProtocol()
    feed(p, CONNECTED)
    assert rejected(p, CONNECTED).reason is RejectReason.OUT_OF_ORDER


@pytest.mark.parametrize("message", [media_msg(3), stop_msg(3), "garbage", b"\x00", CONNECTED])
def test_anything_after_stop_is_rejected(message: dict[str, Any] | str | bytes) -> None:
    p = streaming()
    feed(p, stop_msg(2))
    event = rejected(p, message)
    assert (event.reason, event.fatal) == (RejectReason.AFTER_STOP, False)
    assert p.state is StreamState.STOPPED


# ---- fatal: a start we cannot use -------------------------------------------------------


@pytest.mark.parametrize(
    "media_format",
    [
        {"encoding": "audio/l16", "sampleRate": 8000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
    ],
)
def test_unsupported_media_format_is_fatal(media_format: dict[str, Any]) -> None:
    p = TwilioStreamProtocol()
    event = rejected(p, start_msg(mediaFormat=media_format))
    assert (event.reason, event.fatal) == (RejectReason.UNSUPPORTED_FORMAT, True)
    assert event.detail.startswith("start.mediaFormat: ")
    assert p.state is StreamState.STOPPED and p.stream_sid is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"callSid": None}, RejectReason.WRONG_TYPE),
        ({"accountSid": ""}, RejectReason.WRONG_TYPE),
        ({"tracks": "inbound"}, RejectReason.WRONG_TYPE),
        ({"tracks": [1]}, RejectReason.WRONG_TYPE),
        ({"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000.0, "channels": 1}}, RejectReason.WRONG_TYPE),
        ({"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": 1}}, RejectReason.WRONG_TYPE),
        ({"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": True}}, RejectReason.WRONG_TYPE),
        ({"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}, RejectReason.MISSING_FIELD),
        ({"customParameters": {"call_id": 5}}, RejectReason.WRONG_TYPE),
        ({"customParameters": ["call_id"]}, RejectReason.WRONG_TYPE),
        ({"streamSid": "MZ" + "9" * 32}, RejectReason.STREAM_SID_MISMATCH),
    ],
)
def test_malformed_start_is_fatal(overrides: dict[str, Any], reason: RejectReason) -> None:
    p = TwilioStreamProtocol()
    event = rejected(p, start_msg(**overrides))
    assert (event.reason, event.fatal) == (reason, True)
    assert p.state is StreamState.STOPPED


def test_start_missing_its_body_is_fatal() -> None:
    event = rejected(TwilioStreamProtocol(), _without(start_msg(), "start"))
    assert (event.reason, event.detail, event.fatal) == (RejectReason.MISSING_FIELD, "start: missing", True)


def test_after_a_fatal_rejection_everything_is_after_stop() -> None:
    p = TwilioStreamProtocol()
    rejected(p, start_msg(mediaFormat={"encoding": "audio/l16", "sampleRate": 8000, "channels": 1}))
    assert rejected(p, start_msg()).reason is RejectReason.AFTER_STOP


def test_start_that_is_not_json_is_not_fatal() -> None:
    # Nothing says it was a start; the shell's start timeout ends a silent stream.
    p = TwilioStreamProtocol()
    assert not rejected(p, '{"event":"start"').fatal
    assert p.state is StreamState.AWAITING_CONNECTED


# ---- sequence numbers and counters ---------------------------------------------------


def test_sequence_gap_is_counted_not_rejected() -> None:
    p = streaming()
    assert isinstance(feed(p, media_msg(5)), Audio)
    assert isinstance(feed(p, media_msg(6)), Audio)
    assert p.counters.sequence_gaps == 1 and p.counters.sequence_regressions == 0


def test_sequence_regression_is_counted_not_rejected() -> None:
    p = streaming()
    feed(p, media_msg(2))
    assert isinstance(feed(p, media_msg(2)), Audio)
    assert isinstance(feed(p, media_msg(3)), Audio)  # the high-water mark was kept
    assert p.counters.sequence_regressions == 1 and p.counters.sequence_gaps == 0


def test_first_sequence_number_is_one() -> None:
    p = TwilioStreamProtocol()
    feed(p, start_msg(seq=3))
    assert p.counters.sequence_gaps == 1


def test_a_dropped_bad_message_still_advances_the_sequence() -> None:
    p = streaming()
    rejected(p, media_msg(2, payload=b"\x00"))
    feed(p, media_msg(3))
    assert p.counters.sequence_gaps == 0


def test_rejections_are_counted_per_reason() -> None:
    p = streaming()
    rejected(p, b"\x00")
    rejected(p, b"\x01")
    rejected(p, "nope")
    rejected(p, dtmf_msg(2, "Z"))
    counts = p.counters.rejected
    assert counts[RejectReason.BINARY_FRAME] == 2
    assert counts[RejectReason.NOT_JSON] == counts[RejectReason.BAD_DIGIT] == 1
    assert sum(counts.values()) == 4


def test_counters_are_a_snapshot() -> None:
    p = streaming()
    before = p.counters
    rejected(p, "nope")
    assert before.rejected[RejectReason.NOT_JSON] == 0
    assert p.counters.rejected[RejectReason.NOT_JSON] == 1


def test_mutated_messages_never_raise() -> None:
    # Cheap fuzz: damage valid frames at random; every result is one event.
    rng = random.Random(1234)
    seeds = [json.dumps(m) for m in (CONNECTED, start_msg(), media_msg(2), dtmf_msg(3), mark_msg(4), stop_msg(5))]
    junk = ['"', "{", "}", "[", "]", ",", ":", "0", "null", "\\", "\x00", "é", "\ud800", "1e999", "-"]
    for _ in range(3000):
        p = streaming() if rng.random() < 0.7 else TwilioStreamProtocol()
        text = rng.choice(seeds)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text) + 1)
            if rng.random() < 0.5:
                text = text[:i] + text[i + rng.randint(1, 8):]
            else:
                text = text[:i] + rng.choice(junk) + text[i:]
        assert len(p.receive(text)) == 1


# ---- outbound ----------------------------------------------------------------------


def test_media_frame_matches_twilio_shape_byte_for_byte() -> None:
    assert streaming().media(b"\x00\x01\xff") == '{"event":"media","streamSid":"%s","media":{"payload":"AAH/"}}' % SID


def test_mark_frame_matches_twilio_shape_byte_for_byte() -> None:
    assert streaming().mark("resp_1:item_2:seq_7") == (
        '{"event":"mark","streamSid":"%s","mark":{"name":"resp_1:item_2:seq_7"}}' % SID
    )


def test_clear_frame_matches_twilio_shape_byte_for_byte() -> None:
    assert streaming().clear() == '{"event":"clear","streamSid":"%s"}' % SID


def _builders(p: TwilioStreamProtocol) -> list[Any]:
    return [lambda: p.media(FRAME), lambda: p.mark("m"), p.clear]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_sending_before_start_is_our_error(which: int) -> None:
    p = TwilioStreamProtocol()
    feed(p, CONNECTED)
    with pytest.raises(LocalProtocolError, match="in state AWAITING_START"):
        _builders(p)[which]()


@pytest.mark.parametrize("which", [0, 1, 2])
def test_sending_after_stop_is_our_error(which: int) -> None:
    p = streaming()
    feed(p, stop_msg(2))
    with pytest.raises(LocalProtocolError, match="in state STOPPED"):
        _builders(p)[which]()


def test_sending_empty_media_or_unnamed_mark_is_our_error() -> None:
    p = streaming()
    with pytest.raises(LocalProtocolError):
        p.media(b"")
    with pytest.raises(LocalProtocolError):
        p.mark("")


# ---- the fast paths say exactly what the general ones do ------------------------------


def _general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TwilioStreamProtocol, "_media_fast", lambda self, text: None)


def _run(texts: list[str]) -> tuple[list[Event], Any, StreamState]:
    p = TwilioStreamProtocol(max_message_bytes=1500)
    feed(p, CONNECTED)
    feed(p, start_msg())
    events = [event for text in texts for event in p.receive(text)]
    return events, p.counters, p.state


def _compact(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _twilio_order(message: dict[str, Any]) -> dict[str, Any]:
    """Twilio's own key order: streamSid last (our peer writes it before the body)."""
    return {k: v for k, v in message.items() if k != "streamSid"} | (
        {"streamSid": message["streamSid"]} if "streamSid" in message else {}
    )


def _media_variants() -> list[str]:
    """Media messages good and bad in every field the fast path reads, then fuzzed."""
    good = media_msg(2)
    body = good["media"]
    variants: list[dict[str, Any]] = [good, media_msg(7, bytes(8)), media_msg(3, bytes(400)), media_msg(4, bytes(1200))]
    fields: dict[str, list[Any]] = {
        "streamSid": [None, 5, "", "MZ" + "9" * 32, ["x"]],
        "sequenceNumber": [None, 2, "", "x", "-1", "\uff11", "2.0", "9" * 19, "9" * 18, "0", "007"],
        "media": [None, [], "x", {}],
    }
    for key, values in fields.items():
        variants += [{**good, key: v} for v in values] + [{k: v for k, v in good.items() if k != key}]
    body_fields: dict[str, list[Any]] = {
        "payload": [None, 5, "", "AAH", "AAH/=", "A===", "////", "@@@@", "AAECAwQFBgc=\n", "\u00e9", "AAECAwQFBgc="],
        "chunk": [None, 1, "", "x", "1e3", "9" * 19, "\u0663"],
        "timestamp": [None, 20, "-5", "\u0663"],
        "track": [None, 1, "", "in\"bound", "in\\bound", "in\x01bound", "\u00e9\ud800", "\u2028"],
    }
    for key, values in body_fields.items():
        variants += [{**good, "media": {**body, key: v}} for v in values]
        variants.append({**good, "media": {k: v for k, v in body.items() if k != key}})
    variants.append({**good, "media": {**body, "extra": 1}})
    texts: list[str] = []
    for v in variants:
        texts += [json.dumps(v), _compact(v), _compact(_twilio_order(v))]
    seed = _compact(_twilio_order(good))
    texts += [
        '{"event":"media"}',
        "\ufeff" + seed,
        seed[:-1] + ',"streamSid":"%s"}' % SID,  # streamSid twice: JSON keeps the last
        seed[:-1] + ',"streamSid":"MZx"}',
        seed.replace('"%s"' % SID, '"MZ\\u0031%s"' % ("1" * 31)),  # an escape: the same SID to JSON
        seed.replace('"inbound"', '"inb\\u006fund"'),
        seed.replace('"inbound"', '"in\x1fbound"'),  # a raw control character: not JSON
        seed + " ",
        " " + seed,
    ]
    rng = random.Random(99)
    junk = ['"', "{", "}", ",", ":", "0", "9", "null", "\\", "\u00e9", "\ud800", "=", "A", "/", " "]
    for _ in range(3000):
        text = seed
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text) + 1)
            text = text[:i] + text[i + rng.randint(1, 4):] if rng.random() < 0.5 else text[:i] + rng.choice(junk) + text[i:]
        texts.append(text)
    return texts


def test_media_fast_path_reads_twilios_own_text() -> None:
    p = streaming()
    for message in (media_msg(2), _twilio_order(media_msg(3))):
        audio = p._media_fast(_compact(message))
        assert audio == Audio(FRAME, 1, 0, "inbound")
    assert p._media_fast(json.dumps(media_msg(4))) is None  # not compact: the general path reads it


def test_media_fast_path_gives_the_general_paths_events_and_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _media_variants()
    read_fast: list[Audio] = []
    original = TwilioStreamProtocol._media_fast

    def counted(self: TwilioStreamProtocol, text: str) -> Audio | None:
        audio = original(self, text)
        if audio is not None:
            read_fast.append(audio)
        return audio

    monkeypatch.setattr(TwilioStreamProtocol, "_media_fast", counted)
    fast = _run(texts)
    _general_path(monkeypatch)
    general = _run(texts)
    assert fast == general
    assert len(read_fast) > 20
    assert sum(isinstance(e, Audio) for e in general[0]) > len(read_fast)
    assert sum(isinstance(e, Rejected) for e in general[0]) > 100


@pytest.mark.parametrize(
    "text",
    ["\ufeff{}", "", " ", "{", '{"a":NaN}', '{"a":-Infinity}', '{"a":1}x', '{"a":"\\ud800"}', "[" * 100000, "1" * 5000],
)
def test_json_decoding_matches_json_loads(text: str) -> None:
    def outcome(parse: Any) -> tuple[str, str]:
        try:
            return "ok", repr(parse(text))
        except (ValueError, RecursionError) as exc:
            return type(exc).__name__, str(exc)

    assert outcome(protocol_module._decode_json) == outcome(
        lambda t: json.loads(t, parse_constant=protocol_module._no_constant)
    )


@pytest.mark.parametrize("sid", [SID, 'MZ"quoted"\\', "MZé\u2028\x00", "MZ\ud800"])
def test_outbound_frames_are_the_json_of_the_whole_message(sid: str) -> None:
    p = TwilioStreamProtocol()
    feed(p, {**start_msg(), "streamSid": sid, "start": {**start_msg()["start"], "streamSid": sid}})
    dump = protocol_module._dump
    for size in (1, 2, 3, 159, 160, 161, 800):
        ulaw = bytes(random.Random(size).randrange(256) for _ in range(size))
        expected = dump({"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(ulaw).decode()}})
        assert p.media(ulaw) == expected
    for name in ("m", "resp_1:item_2:seq_7", 'a"b\\c', "é\n\ud800"):
        assert p.mark(name) == dump({"event": "mark", "streamSid": sid, "mark": {"name": name}})
    assert p.clear() == dump({"event": "clear", "streamSid": sid})
