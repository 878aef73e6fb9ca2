"""Transfer TwiML: cold <Dial>, warm with a whisper URL, queues; bad targets refused."""

from __future__ import annotations

import re

import pytest

from callagent.call.transfer import TransferError, transfer_twiml

HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def test_cold_transfer_to_a_number() -> None:
    assert transfer_twiml("+14155550100") == (
        HEAD + "<Response><Dial><Number>+14155550100</Number></Dial></Response>")


def test_warm_transfer_whispers_to_the_human_first() -> None:
    xml = transfer_twiml("+14155550100", warm=True, whisper_url="https://a.example/twilio/whisper",
                         announce="Order 45729, address change")
    assert ('<Number url="https://a.example/twilio/whisper?text=Order+45729%2C+address+change">'
            "+14155550100</Number>") in xml


def test_sip_client_and_queue_targets() -> None:
    assert "<Sip>sip:desk@pbx.example.com</Sip>" in transfer_twiml("sip:desk@pbx.example.com")
    assert "<Client>alice</Client>" in transfer_twiml("client:alice")
    assert transfer_twiml("queue:customer-service") == (
        HEAD + "<Response><Enqueue>customer-service</Enqueue></Response>")
    assert 'callerId="+15005550006"' in transfer_twiml("+14155550100", caller_id="+15005550006")


@pytest.mark.parametrize(
    ("target", "kw", "expected"),
    [
        ("4155550100", {}, "expected +E.164, sip:URI, client:NAME or queue:NAME"),
        ("", {}, "expected +E.164"),
        ("queue:bad name!", {}, "queue name"),
        ("queue:sales", {"warm": True, "whisper_url": "https://x/w"}, "warm transfer needs"),
        ("+14155550100", {"warm": True}, "needs a whisper URL"),
        ("<Hangup/>", {}, "expected +E.164"),
    ],
)
def test_bad_targets_are_refused(target: str, kw: dict[str, object], expected: str) -> None:
    with pytest.raises(TransferError, match=re.escape(expected)):
        transfer_twiml(target, **kw)  # type: ignore[arg-type]
