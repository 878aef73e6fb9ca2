"""Recording consent: which rule a call follows, and whether audio may be kept now.

The rule comes from the two parties' numbers (compliance.md, call-recording
consent): a US number in an all-party-consent state, or a number whose state
is unknown when ``unknown_policy`` is all-party, makes the whole call
all-party (across state lines the stricter rule applies).

``RecordingConsent`` is the per-call state machine (pure, no clock):

- one-party: audio may be kept from the start;
- all-party: only once the recording disclosure was heard in full (mark echo)
  and the caller stayed on the line: that is the consent (``consent.given``);
- a refusal at any time stops keeping audio for the rest of the call; under
  all-party rules what was kept is discarded (``consent.refused``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import phonenumbers
from phonenumbers import geocoder

__all__ = [
    "ALL_PARTY_STATES",
    "ConsentState",
    "Policy",
    "RecordingConsent",
    "asks_opt_out",
    "is_refusal",
    "policy_for",
    "us_state",
]

# All-party consent states (reported), with the mixed/disputed ones treated as all-party.
ALL_PARTY_STATES: Final = frozenset(
    {"CA", "FL", "IL", "MD", "MA", "MT", "NV", "NH", "PA", "WA", "DE", "MI", "CT", "OR"}
)
_STATE_NAMES: Final = {
    "California": "CA", "Florida": "FL", "Illinois": "IL", "Maryland": "MD",
    "Massachusetts": "MA", "Montana": "MT", "Nevada": "NV", "New Hampshire": "NH",
    "Pennsylvania": "PA", "Washington": "WA", "Delaware": "DE", "Michigan": "MI",
    "Connecticut": "CT", "Oregon": "OR", "New York": "NY", "Texas": "TX", "Georgia": "GA",
    "Ohio": "OH", "New Jersey": "NJ", "Virginia": "VA", "North Carolina": "NC",
    "Arizona": "AZ", "Colorado": "CO", "Tennessee": "TN", "Indiana": "IN", "Missouri": "MO",
    "Minnesota": "MN", "Wisconsin": "WI", "Alabama": "AL", "Louisiana": "LA",
    "Kentucky": "KY", "South Carolina": "SC", "Oklahoma": "OK", "Utah": "UT", "Iowa": "IA",
    "Kansas": "KS", "Arkansas": "AR", "Mississippi": "MS", "Nebraska": "NE",
    "New Mexico": "NM", "Idaho": "ID", "West Virginia": "WV", "Hawaii": "HI", "Maine": "ME",
    "Rhode Island": "RI", "South Dakota": "SD", "North Dakota": "ND", "Alaska": "AK",
    "Vermont": "VT", "Wyoming": "WY", "Washington D.C.": "DC",
}  # fmt: skip
_CODE = re.compile(r",\s*([A-Z]{2})$")


class Policy(enum.StrEnum):
    ONE_PARTY = "one-party"
    ALL_PARTY = "all-party"


def us_state(number: str) -> str | None:
    """The US state (two letters) of an E.164 number's area, or None when unknown."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.region_code_for_number(parsed) != "US":
        return None
    place = geocoder.description_for_number(parsed, "en")
    if not place:
        return None
    match = _CODE.search(place)
    if match:
        return match.group(1)
    return _STATE_NAMES.get(place.strip())


def policy_for(numbers: Iterable[str], unknown_policy: Policy) -> tuple[Policy, tuple[str, ...]]:
    """The call's rule and the reasons (one per number: "+1415...: CA all-party")."""
    policy = Policy.ONE_PARTY
    reasons: list[str] = []
    for number in numbers:
        if not number:
            continue
        state = us_state(number)
        if state is None:
            rule = unknown_policy
            reasons.append(f"state unknown: {rule.value}")
        else:
            rule = Policy.ALL_PARTY if state in ALL_PARTY_STATES else Policy.ONE_PARTY
            reasons.append(f"{state}: {rule.value}")
        if rule is Policy.ALL_PARTY:
            policy = Policy.ALL_PARTY
    if not reasons:
        policy = unknown_policy
        reasons.append(f"no numbers: {policy.value}")
    return policy, tuple(reasons)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def is_refusal(text: str, phrases: Sequence[str]) -> bool:
    """The caller refuses recording (a configured phrase, case and punctuation aside)."""
    norm = f" {_norm(text)} "
    return any(_norm(p) and f" {_norm(p)} " in norm for p in phrases)


def asks_opt_out(text: str, phrases: Sequence[str], keywords: Sequence[str]) -> bool:
    """The caller asks not to be called again: one of the phrases, or a keyword as a word."""
    norm = f" {_norm(text)} "
    return any(_norm(p) and f" {_norm(p)} " in norm for p in (*phrases, *keywords))


class ConsentState(enum.Enum):
    PENDING = "pending"  # all-party: waiting for the disclosure to be heard
    RECORDING = "recording"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    action: str  # an audit action (compliance.events)
    details: dict[str, object]


class RecordingConsent:
    def __init__(self, policy: Policy, *, has_disclosure: bool) -> None:
        self.policy = policy
        self._has_disclosure = has_disclosure
        self.state = ConsentState.RECORDING if policy is Policy.ONE_PARTY else ConsentState.PENDING
        self.discard = False  # under all-party rules a refusal discards the audio kept
        self.consented = policy is Policy.ONE_PARTY

    @property
    def keeping(self) -> bool:
        return self.state is ConsentState.RECORDING

    def start(self) -> list[ConsentEvent]:
        if self.state is ConsentState.RECORDING:
            return [ConsentEvent("recording.started", {"policy": self.policy.value,
                                                       "basis": "one-party consent"})]
        return []  # all-party: nothing is kept until consent

    def disclosure_heard(self) -> list[ConsentEvent]:
        if self.state is not ConsentState.PENDING or not self._has_disclosure:
            return []
        self.state = ConsentState.RECORDING
        self.consented = True
        return [
            ConsentEvent("consent.given", {"policy": self.policy.value,
                                           "basis": "recording disclosure heard; caller stayed"}),
            ConsentEvent("recording.started", {"policy": self.policy.value}),
        ]

    def refused(self, how: str) -> list[ConsentEvent]:
        if self.state is ConsentState.REFUSED:
            return []
        was_recording = self.state is ConsentState.RECORDING
        self.state = ConsentState.REFUSED
        self.discard = self.policy is Policy.ALL_PARTY
        out = [ConsentEvent("consent.refused", {"policy": self.policy.value, "how": how})]
        if was_recording:
            out.append(ConsentEvent("recording.stopped", {"reason": "consent refused",
                                                          "discarded": self.discard}))
        return out
