"""Campaign definition and lifecycle: a frozen, validated ``CampaignSpec`` and one state table.

Pure: no I/O, no clock. A spec that breaks a rule raises ``CampaignSpecError`` when it is
built, so an invalid campaign never reaches the dialer. Rules (from the compliance
reference, TCPA/TSR part; not legal advice):

* Calling window: default 09:00-20:00 in the callee's local time; it must lie inside the
  federal 08:00-21:00 (47 CFR 64.1200(c)(1); 16 CFR 310.4(c)). The window is half-open,
  ``[start, end)``: a call may start at ``start`` exactly, never at ``end``. Per-state
  stricter hours (Florida) are applied on top, in ``eligibility.py``.
* Ring timeout: at least 15 s (abandonment rule, 47 CFR 64.1200(a)(7); Twilio ``timeout``
  max 600 s).
* Telemarketing campaigns always honour the national do-not-call list (47 CFR
  64.1200(c)(2)); an informational campaign may opt out of that scrub (never of the
  internal list).

Lifecycle: ``draft -> running <-> paused``, ``running|paused -> finished``; every legal move
is in ``_TRANSITIONS`` and nowhere else. ``transition()`` raises ``IllegalTransition`` naming
the state and the move.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Final
from urllib.parse import quote

__all__ = [
    "FEDERAL_WINDOW",
    "WEEKDAYS",
    "CallOutcome",
    "CallingWindow",
    "CampaignMove",
    "CampaignSpec",
    "CampaignSpecError",
    "CampaignState",
    "IllegalTransition",
    "Purpose",
    "RetryDelays",
    "VoicemailPolicy",
    "Weekday",
    "transition",
]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_MAX_RETRY_DELAY = timedelta(days=30)
# The message travels (URL-encoded) in the signed AMD callback URL: Twilio takes URLs of at
# most 4000 characters (see ``voicemail.py``).
_MAX_MESSAGE_ENCODED = 3000


class CampaignSpecError(ValueError):
    """A campaign definition breaks a rule (our misuse: raised at construction)."""


class IllegalTransition(Exception):
    """A lifecycle move that the transition table does not allow from the current state."""

    def __init__(self, state: CampaignState, move: CampaignMove) -> None:
        super().__init__(f"cannot {move.value} a campaign in state {state.value!r}")
        self.state = state
        self.move = move


class Purpose(enum.Enum):
    """Why we call: decides the consent needed (47 CFR 64.1200(a)(1)-(3))."""

    INFORMATIONAL = "informational"   # needs prior express consent (PEC) or better
    TELEMARKETING = "telemarketing"   # needs prior express written consent (PEWC)


class VoicemailPolicy(enum.Enum):
    HANG_UP = "hang_up"
    LEAVE_MESSAGE = "leave_message"   # after the beep (Twilio AMD ``DetectMessageEnd``)


class CallOutcome(enum.Enum):
    """Unsuccessful outcomes that schedule a retry."""

    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"
    VOICEMAIL = "voicemail"


class Weekday(enum.IntEnum):
    """Same numbering as ``datetime.weekday()``."""

    MONDAY = 0
    TUESDAY = 1
    WEDNESDAY = 2
    THURSDAY = 3
    FRIDAY = 4
    SATURDAY = 5
    SUNDAY = 6


WEEKDAYS: Final = frozenset(
    {Weekday.MONDAY, Weekday.TUESDAY, Weekday.WEDNESDAY, Weekday.THURSDAY, Weekday.FRIDAY}
)


@dataclass(frozen=True, slots=True)
class CallingWindow:
    """Local wall-clock hours ``[start, end)``, the same on every allowed day."""

    start: time
    end: time

    def __post_init__(self) -> None:
        for bound in (self.start, self.end):
            if bound.tzinfo is not None:
                raise CampaignSpecError("calling window times are local wall-clock: no tzinfo")
        if not self.start < self.end:
            raise CampaignSpecError(
                f"calling window start {self.start:%H:%M} must be before end {self.end:%H:%M}"
            )

    def contains(self, local: time) -> bool:
        return self.start <= local < self.end

    def within(self, outer: CallingWindow) -> bool:
        return outer.start <= self.start and self.end <= outer.end

    def intersect(self, other: CallingWindow) -> CallingWindow | None:
        start, end = max(self.start, other.start), min(self.end, other.end)
        return CallingWindow(start, end) if start < end else None

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


FEDERAL_WINDOW: Final = CallingWindow(time(8, 0), time(21, 0))


@dataclass(frozen=True, slots=True)
class RetryDelays:
    """How long to wait before the next attempt, by the previous attempt's outcome."""

    no_answer: timedelta = timedelta(hours=4)
    busy: timedelta = timedelta(minutes=30)
    failed: timedelta = timedelta(hours=1)
    voicemail: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        for outcome in CallOutcome:
            delay = self.after(outcome)
            if not timedelta(0) < delay <= _MAX_RETRY_DELAY:
                raise CampaignSpecError(
                    f"retry delay after {outcome.value} must be > 0 and <= 30 days, got {delay}"
                )

    def after(self, outcome: CallOutcome) -> timedelta:
        delay: timedelta = getattr(self, outcome.value)
        return delay


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """What a campaign is allowed to do. Frozen: a change is a new spec."""

    name: str
    agent_profile: str
    caller_id: str                         # E.164, a number we own or verified (not checked here)
    purpose: Purpose
    window: CallingWindow = CallingWindow(time(9, 0), time(20, 0))
    allowed_days: frozenset[Weekday] = WEEKDAYS
    max_concurrent_calls: int = 1
    max_attempts: int = 3                  # per contact, over the campaign's life
    max_attempts_per_day: int = 1          # per number, per local day
    retry_delays: RetryDelays = field(default_factory=RetryDelays)
    voicemail: VoicemailPolicy = VoicemailPolicy.HANG_UP
    voicemail_message: str = ""            # required with LEAVE_MESSAGE, forbidden otherwise
    ring_timeout_s: int = 30               # Twilio ``timeout``
    honor_national_dnc: bool = True        # forced True for telemarketing

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise CampaignSpecError("campaign name is empty")
        if not self.agent_profile.strip():
            raise CampaignSpecError("agent profile is empty")
        if not _E164.fullmatch(self.caller_id):
            raise CampaignSpecError(f"caller ID {self.caller_id!r} is not an E.164 number")
        if not self.window.within(FEDERAL_WINDOW):
            raise CampaignSpecError(
                f"calling window {self.window} must lie inside {FEDERAL_WINDOW}"
                " (47 CFR 64.1200(c)(1))"
            )
        if not self.allowed_days:
            raise CampaignSpecError("no allowed calling day")
        if not all(isinstance(day, Weekday) for day in self.allowed_days):
            raise CampaignSpecError("allowed days must be Weekday members")
        _check_range("max_concurrent_calls", self.max_concurrent_calls, 1, 1000)
        _check_range("max_attempts", self.max_attempts, 1, 100)
        _check_range("max_attempts_per_day", self.max_attempts_per_day, 1, self.max_attempts)
        _check_range("ring_timeout_s", self.ring_timeout_s, 15, 600)
        leaves_message = self.voicemail is VoicemailPolicy.LEAVE_MESSAGE
        if leaves_message and not self.voicemail_message.strip():
            raise CampaignSpecError("voicemail policy leave_message needs a voicemail_message")
        if not leaves_message and self.voicemail_message:
            raise CampaignSpecError("voicemail_message is set but the policy is hang_up")
        encoded = len(quote(self.voicemail_message, safe=""))
        if encoded > _MAX_MESSAGE_ENCODED:
            raise CampaignSpecError(
                f"voicemail_message is too long: {encoded} characters URL-encoded, at most "
                f"{_MAX_MESSAGE_ENCODED} (it travels in the AMD callback URL)"
            )
        if self.purpose is Purpose.TELEMARKETING and not self.honor_national_dnc:
            raise CampaignSpecError("telemarketing must honour the national do-not-call list")

    def retry_delay(self, outcome: CallOutcome) -> timedelta:
        return self.retry_delays.after(outcome)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CampaignSpecError(f"{name} must be an integer in {low}..{high}, got {value!r}")


class CampaignState(enum.Enum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


class CampaignMove(enum.Enum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    FINISH = "finish"


_TRANSITIONS: Final[dict[CampaignState, dict[CampaignMove, CampaignState]]] = {
    CampaignState.DRAFT: {CampaignMove.START: CampaignState.RUNNING},
    CampaignState.RUNNING: {
        CampaignMove.PAUSE: CampaignState.PAUSED,
        CampaignMove.FINISH: CampaignState.FINISHED,
    },
    CampaignState.PAUSED: {
        CampaignMove.RESUME: CampaignState.RUNNING,
        CampaignMove.FINISH: CampaignState.FINISHED,
    },
    CampaignState.FINISHED: {},
}


def transition(state: CampaignState, move: CampaignMove) -> CampaignState:
    """The state after ``move``; ``IllegalTransition`` if the table has no such move."""
    try:
        return _TRANSITIONS[state][move]
    except KeyError:
        raise IllegalTransition(state, move) from None
