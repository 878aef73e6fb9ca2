"""What to do when asynchronous answering-machine detection (AMD) gives its verdict.

Twilio's async AMD starts our TwiML (the agent) at once and later POSTs ``CallSid``,
``AccountSid``, ``AnsweredBy`` and ``MachineDetectionDuration`` (ms) to the
``AsyncAmdStatusCallback`` URL; the call is then changed through the REST API (a call
update), not by answering the callback with TwiML.

The dialer asks for ``MachineDetection=DetectMessageEnd`` under both policies: its machine
verdicts (``machine_end_beep``, ``machine_end_silence``, ``machine_end_other``) come once
the greeting has ended, so a message starts after the beep; ``machine_start`` (the early
verdict of ``Enable``) reportedly fires on people who pause before speaking, so it is never
acted on (twilio.md section 10). ``decide()`` is the whole policy, pure:

============================  ==========  ==================================
AnsweredBy                    hang_up     leave_message
============================  ==========  ==================================
human, unknown, machine_start (none)      (none): the agent goes on
machine_end_*                 hang up     ``<Say>`` the message, then hang up
fax                           hang up     hang up
============================  ==========  ==================================

The campaign's policy and message travel in the query of the AMD callback URL the dialer
gives Twilio (``amd_callback_query``); Twilio signs that URL with the rest of the request,
so the webhook can trust them without a database read. ``CampaignSpec`` bounds the message
so the URL stays far below Twilio's 4000-character limit.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

from callagent.campaigns.settings import VoicemailPolicy
from callagent.telephony.twilio.rest import TwilioRest

__all__ = [
    "ANSWERED_BY",
    "AmdAction",
    "AmdQuery",
    "AmdQueryError",
    "VoicemailRest",
    "amd_callback_query",
    "decide",
    "parse_amd_query",
    "voicemail_twiml",
]

ANSWERED_BY: Final = frozenset({
    "human", "unknown", "fax", "machine_start",
    "machine_end_beep", "machine_end_silence", "machine_end_other",
})
_MESSAGE_END: Final = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})


class AmdAction(enum.Enum):
    HANG_UP = "hang_up"
    LEAVE_MESSAGE = "leave_message"


def decide(answered_by: str, policy: VoicemailPolicy) -> AmdAction | None:
    """The call update for this verdict under this policy (None: leave the call alone)."""
    if answered_by not in ANSWERED_BY:
        raise ValueError(f"unknown AnsweredBy {answered_by!r}")
    if answered_by == "fax":
        return AmdAction.HANG_UP
    if answered_by not in _MESSAGE_END:
        return None
    if policy is VoicemailPolicy.LEAVE_MESSAGE:
        return AmdAction.LEAVE_MESSAGE
    return AmdAction.HANG_UP


def voicemail_twiml(message: str) -> str:
    """Say the message (the beep has just ended), then hang up."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


@dataclass(frozen=True, slots=True)
class AmdQuery:
    """What the dialer put in the AMD callback URL."""

    campaign_id: int
    attempt: str            # the attempt's idempotency key, "<contact id>:<attempt no>"
    policy: VoicemailPolicy
    message: str


class AmdQueryError(ValueError):
    """The AMD callback URL's query is not one the dialer builds."""


def amd_callback_query(query: AmdQuery) -> str:
    return urlencode({"campaign": query.campaign_id, "attempt": query.attempt,
                      "voicemail": query.policy.value, "message": query.message})


def parse_amd_query(params: Mapping[str, str]) -> AmdQuery | None:
    """None for a call we did not place from a campaign (no ``campaign`` parameter)."""
    campaign = params.get("campaign")
    if campaign is None:
        return None
    if not campaign.isdigit():
        raise AmdQueryError(f"campaign must be a campaign id, got {campaign!r}")
    try:
        policy = VoicemailPolicy(params.get("voicemail", ""))
    except ValueError:
        expected = ", ".join(p.value for p in VoicemailPolicy)
        raise AmdQueryError(
            f"voicemail must be one of {expected}, got {params.get('voicemail', '')!r}"
        ) from None
    message = params.get("message", "")
    if policy is VoicemailPolicy.LEAVE_MESSAGE and not message.strip():
        raise AmdQueryError("voicemail=leave_message needs a message")
    return AmdQuery(int(campaign), params.get("attempt", ""), policy, message)


class VoicemailRest(TwilioRest):
    """``TwilioRest`` plus the one update a voicemail drop needs."""

    async def say_and_hang_up(self, call_sid: str, message: str) -> None:
        """Replace the call's TwiML (this ends the media stream) with the message."""
        twiml = voicemail_twiml(message)
        await self._run(lambda: self._client.calls(call_sid).update(twiml=twiml))
