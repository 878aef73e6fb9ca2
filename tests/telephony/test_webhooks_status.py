"""``/twilio/status``: bad status callbacks are refused precisely (400 naming the field) and
record nothing; a good one is recorded. A real service on loopback, signed posts."""

from __future__ import annotations

import pytest

from tests.telephony.test_webhooks_amd import (  # noqa: F401  (fixtures)
    ACCOUNT,
    Rig,
    fake,
    rig,
    stored_statuses,
    until_stored,
)

SID = "CA" + "5" * 32


def callback(**fields: str) -> dict[str, str]:
    return {"CallSid": SID, "AccountSid": ACCOUNT, "CallStatus": "completed",
            "SequenceNumber": "3", "CallDuration": "12", "Direction": "outbound-api"} | fields


BAD: list[tuple[dict[str, str], str]] = [
    (callback(CallStatus="done"), "CallStatus: expected one of busy, canceled, completed"),
    (callback(SequenceNumber="three"), "SequenceNumber: expected a non-negative integer, "
                                       "got 'three'"),
    (callback(SequenceNumber="-2"), "SequenceNumber: expected a non-negative integer"),
    (callback(CallDuration="12.5"), "CallDuration: expected seconds, got '12.5'"),
    ({"CallSid": SID, "AccountSid": ACCOUNT}, "missing CallSid or CallStatus"),
]


@pytest.mark.parametrize(("params", "error"), BAD, ids=[e for _, e in BAD])
async def test_a_bad_status_callback_is_refused_precisely_and_records_nothing(
    rig: Rig, params: dict[str, str], error: str,
) -> None:
    resp = await rig.post("/twilio/status", params)
    assert resp.status_code == 400 and error in resp.text, resp.text
    good = await rig.post("/twilio/status", callback(CallSid="CA" + "6" * 32))
    assert good.status_code == 204
    await until_stored(rig, "CA" + "6" * 32)       # written after the bad one was refused
    assert await stored_statuses(rig.db, SID) == []
    assert await stored_statuses(rig.db, "CA" + "6" * 32) == [("completed", 3, None)]
