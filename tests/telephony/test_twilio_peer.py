"""TwilioPeer alone, then paired with TwilioStreamProtocol in memory (our ConnectionPair)."""

from __future__ import annotations

import json

import pytest

from callagent.telephony.twilio import peer as peer_module
from callagent.telephony.twilio.peer import OutboundClear, OutboundMark, OutboundMedia, TwilioPeer
from callagent.telephony.twilio.protocol import (
    Audio,
    Connected,
    Digit,
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
FRAME = bytes(range(160))


def started_peer() -> TwilioPeer:
    peer = TwilioPeer()
    peer.connected()
    peer.start(SID, CALL, ACCOUNT)
    return peer


def pair() -> tuple[TwilioPeer, TwilioStreamProtocol]:
    peer, ours = TwilioPeer(), TwilioStreamProtocol()
    assert isinstance(ours.receive(peer.connected())[0], Connected)
    assert isinstance(ours.receive(peer.start(SID, CALL, ACCOUNT, {"call_id": "c_1"}))[0], Started)
    return peer, ours


def test_public_names_are_pinned() -> None:
    assert sorted(peer_module.__all__) == ["OutboundClear", "OutboundMark", "OutboundMedia", "PeerEvent", "TwilioPeer"]


# ---- builders: Twilio's shapes -----------------------------------------------------


def test_connected_is_twilios_first_message() -> None:
    assert TwilioPeer().connected() == '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def test_start_has_twilios_shape_and_sequence_one() -> None:
    text = TwilioPeer().start(SID, CALL, ACCOUNT, {"call_id": "c_1"})
    assert text == (
        '{"event":"start","sequenceNumber":"1","streamSid":"%s","start":{"accountSid":"%s","streamSid":"%s",'
        '"callSid":"%s","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,'
        '"channels":1},"customParameters":{"call_id":"c_1"}}}' % (SID, ACCOUNT, SID, CALL)
    )


def test_start_takes_sids_from_the_constructor() -> None:
    peer = TwilioPeer(stream_sid=SID, call_sid=CALL, account_sid=ACCOUNT)
    body = json.loads(peer.start(custom_parameters={"a": "b"}))["start"]
    assert (body["streamSid"], body["callSid"], body["accountSid"]) == (SID, CALL, ACCOUNT)
    assert peer.stream_sid == SID


def test_start_without_sids_is_our_error() -> None:
    with pytest.raises(LocalProtocolError):
        TwilioPeer().start()


def test_sequence_numbers_are_strings_counting_from_one() -> None:
    peer = TwilioPeer()
    assert "sequenceNumber" not in json.loads(peer.connected())
    numbers = [json.loads(text)["sequenceNumber"] for text in (
        peer.start(SID, CALL, ACCOUNT), peer.media(FRAME), peer.dtmf("5"), peer.mark("m"), peer.stop())]
    assert numbers == ["1", "2", "3", "4", "5"]


def test_media_defaults_chunk_from_one_and_timestamp_to_audio_sent() -> None:
    peer = started_peer()
    first, second = (json.loads(peer.media(FRAME))["media"] for _ in range(2))
    assert (first["chunk"], first["timestamp"], first["track"]) == ("1", "0", "inbound")
    assert (second["chunk"], second["timestamp"]) == ("2", "20")


def test_media_takes_explicit_chunk_and_timestamp_as_strings() -> None:
    body = json.loads(started_peer().media(FRAME, chunk=9, timestamp_ms=1234))["media"]
    assert (body["chunk"], body["timestamp"]) == ("9", "1234")


@pytest.mark.parametrize("size", [0, 7, 161])
def test_media_of_partial_milliseconds_is_our_error(size: int) -> None:
    with pytest.raises(LocalProtocolError, match="not a whole number of ms"):
        started_peer().media(bytes(size))


def test_dtmf_uses_twilios_inbound_track_name() -> None:
    assert json.loads(started_peer().dtmf("#"))["dtmf"] == {"track": "inbound_track", "digit": "#"}


@pytest.mark.parametrize("digit", ["E", "12", ""])
def test_dtmf_outside_0_9_star_hash_a_d_is_our_error(digit: str) -> None:
    with pytest.raises(LocalProtocolError):
        started_peer().dtmf(digit)


def test_stop_carries_the_call_and_account() -> None:
    peer = started_peer()
    assert json.loads(peer.stop())["stop"] == {"accountSid": ACCOUNT, "callSid": CALL}
    assert peer.state is StreamState.STOPPED


@pytest.mark.parametrize("build", ["media", "dtmf", "mark", "stop"])
def test_stream_messages_before_start_are_our_error(build: str) -> None:
    peer = TwilioPeer()
    calls = {"media": lambda: peer.media(FRAME), "dtmf": lambda: peer.dtmf("1"),
             "mark": lambda: peer.mark("m"), "stop": peer.stop}
    with pytest.raises(LocalProtocolError, match="in state AWAITING_CONNECTED"):
        calls[build]()


def test_nothing_is_built_after_stop() -> None:
    peer = started_peer()
    peer.stop()
    with pytest.raises(LocalProtocolError):
        peer.media(FRAME)
    with pytest.raises(LocalProtocolError):
        peer.start(SID, CALL, ACCOUNT)


# ---- parsing our server's frames ---------------------------------------------------


def test_peer_parses_media_mark_and_clear() -> None:
    peer = started_peer()
    assert peer.receive('{"event":"media","streamSid":"%s","media":{"payload":"AAH/"}}' % SID) == [
        OutboundMedia(b"\x00\x01\xff")]
    assert peer.receive('{"event":"mark","streamSid":"%s","mark":{"name":"n"}}' % SID) == [OutboundMark("n")]
    assert peer.receive('{"event":"clear","streamSid":"%s"}' % SID) == [OutboundClear()]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"event":"clear"}', RejectReason.BINARY_FRAME),
        ("nope", RejectReason.NOT_JSON),
        ("[]", RejectReason.NOT_OBJECT),
        ('{"event":"start","streamSid":"%s"}' % SID, RejectReason.UNKNOWN_EVENT),
        ('{"event":"clear"}', RejectReason.MISSING_FIELD),
        ('{"event":"mark","streamSid":"%s","mark":{}}' % SID, RejectReason.MISSING_FIELD),
        ('{"event":"mark","streamSid":"%s","mark":{"name":7}}' % SID, RejectReason.WRONG_TYPE),
        ('{"event":"media","streamSid":"%s","media":{"payload":"@@"}}' % SID, RejectReason.BAD_BASE64),
        ('{"event":"media","streamSid":"%s","media":{"payload":""}}' % SID, RejectReason.BAD_FRAME_SIZE),
        ('{"event":"clear","streamSid":"MZother"}', RejectReason.STREAM_SID_MISMATCH),
    ],
)
def test_peer_rejects_bad_frames_from_our_server(text: str | bytes, reason: RejectReason) -> None:
    peer = started_peer()
    [event] = peer.receive(text)
    assert isinstance(event, Rejected) and (event.reason, event.fatal) == (reason, False)
    assert peer.counters.rejected[reason] == 1 and peer.state is StreamState.STREAMING


def test_peer_rejects_frames_before_start_and_after_stop() -> None:
    peer = TwilioPeer()
    peer.connected()
    [before] = peer.receive('{"event":"clear","streamSid":"%s"}' % SID)
    assert isinstance(before, Rejected) and before.reason is RejectReason.OUT_OF_ORDER
    peer.start(SID, CALL, ACCOUNT)
    peer.stop()
    [after] = peer.receive('{"event":"clear","streamSid":"%s"}' % SID)
    assert isinstance(after, Rejected) and after.reason is RejectReason.AFTER_STOP


# ---- round trips ----------------------------------------------------------------------


def test_peer_built_call_parses_cleanly_on_our_side() -> None:
    peer, ours = pair()
    assert ours.receive(peer.media(FRAME)) == [Audio(FRAME, 1, 0, "inbound")]
    assert ours.receive(peer.media(FRAME[:80])) == [Audio(FRAME[:80], 2, 20, "inbound")]
    assert ours.receive(peer.dtmf("*")) == [Digit("*")]
    assert ours.receive(peer.mark("resp_1")) == [MarkEchoed("resp_1")]
    assert ours.receive(peer.stop()) == [Stopped(CALL, ACCOUNT)]
    counters = ours.counters
    assert not any(counters.rejected.values()) and counters.sequence_gaps == counters.sequence_regressions == 0


def test_start_first_peer_call_parses_on_our_side() -> None:
    peer, ours = TwilioPeer(), TwilioStreamProtocol()
    [event] = ours.receive(peer.start(SID, CALL, ACCOUNT))
    assert event == Started(SID, CALL, ACCOUNT, ("inbound",), "audio/x-mulaw", 8000, 1, {})
    assert ours.receive(peer.media(FRAME)) == [Audio(FRAME, 1, 0, "inbound")]


def test_our_frames_parse_cleanly_on_the_peer() -> None:
    peer, ours = pair()
    assert peer.receive(ours.media(b"\xff" * 3)) == [OutboundMedia(b"\xff" * 3)]
    assert peer.receive(ours.mark("resp_1:item_2:seq_7")) == [OutboundMark("resp_1:item_2:seq_7")]
    assert peer.receive(ours.clear()) == [OutboundClear()]
    assert not any(peer.counters.rejected.values())


def test_custom_parameters_survive_the_round_trip() -> None:
    peer, ours = TwilioPeer(), TwilioStreamProtocol()
    [event] = ours.receive(peer.start(SID, CALL, ACCOUNT, {"call_id": "c_9", "from": "+15005550006"}))
    assert isinstance(event, Started) and event.custom_parameters == {"call_id": "c_9", "from": "+15005550006"}
