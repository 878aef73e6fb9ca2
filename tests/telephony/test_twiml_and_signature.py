import xml.etree.ElementTree as ET

import pytest

from callagent.call.session import heard_words
from callagent.telephony.twilio.signature import SignatureChecker, SignatureVerdict, public_request_url
from callagent.telephony.twilio.twiml import StreamTarget, connect_stream_twiml


def test_connect_stream_carries_parameters_and_hangs_up_after() -> None:
    xml = connect_stream_twiml(
        StreamTarget("wss://calls.example.com/twilio/media", "https://calls.example.com/s",
                     {"call_id": "c1", "agent": "support", "direction": "inbound"})
    )
    root = ET.fromstring(xml)
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://calls.example.com/twilio/media"
    assert stream.get("statusCallback") == "https://calls.example.com/s"
    assert {p.get("name"): p.get("value") for p in stream} == {
        "call_id": "c1", "agent": "support", "direction": "inbound"}
    assert [child.tag for child in root] == ["Connect", "Hangup"]


def test_stream_url_with_query_string_is_refused() -> None:
    with pytest.raises(ValueError, match="query string"):
        connect_stream_twiml(StreamTarget("wss://x/twilio/media?call=1", "https://x/s"))


def test_signature_round_trip_and_verdicts() -> None:
    checker = SignatureChecker("token", enabled=True)
    url = public_request_url("https://calls.example.com", "/twilio/voice", "a=1")
    assert url == "https://calls.example.com/twilio/voice?a=1"
    params = {"CallSid": "CA1", "From": "+1"}
    good = checker.sign(url, params)
    assert checker.check(url, params, {"x-twilio-signature": good}) is SignatureVerdict.VALID
    assert checker.check(url, params, {}) is SignatureVerdict.MISSING
    assert checker.check(url, {**params, "From": "+2"}, {"x-twilio-signature": good}) is SignatureVerdict.INVALID
    off = SignatureChecker("", enabled=False)
    assert off.check(url, params, {}) is SignatureVerdict.SKIPPED


def test_heard_words_cut_in_proportion_to_audio_heard() -> None:
    text = "one two three four five six seven eight"
    assert heard_words(text, 500, 1000) == "one two three four"
    assert heard_words(text, 0, 1000) == ""
    assert heard_words(text, 1000, 1000) == text
