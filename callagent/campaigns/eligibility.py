"""Pre-dial eligibility: may we place this call now? One pure function, one rule per function.

``check_eligibility()`` never reads a clock, a DB or the network: ``now_utc``, the attempt
counts and an in-memory ``DncLookup`` are passed in. Every rule is evaluated (no short cut),
so a skip stores all its reasons, in ``_RULES`` order. Rules (compliance reference,
TCPA/TSR part; not legal advice):

1. ``campaign_not_running``: the campaign state is ``running``.
2. consent (47 CFR 64.1200(a)(1)-(3); FCC 24-17: AI voices are "artificial"): an
   informational campaign needs PEC (or PEWC), telemarketing needs PEWC, dated at or before
   ``now`` ("prior").
3. ``internal_dnc`` (64.1200(d)), every purpose; ``national_dnc`` (64.1200(c)(2)) unless an
   informational campaign opted out (``CampaignSpec.honor_national_dnc``).
4. calling days and hours in the callee's local time (64.1200(c)(1); 16 CFR 310.4(c)): the
   campaign window, narrowed by a state rule, must hold in *every* zone of the contact
   (a number spanning zones is callable only in their intersection); a contact with no
   zone or a name ``zoneinfo`` does not know is ``unknown_timezone``.
5. attempt caps: the contact's total (``max_attempts``), the number's attempts today
   (``max_attempts_per_day``; the caller counts the local day of the contact's first zone,
   across campaigns), and a state's rolling 24 h cap over ``recent_attempts``.

State overrides are data: ``StateRule`` rows in ``DEFAULT_STATE_RULES``, matched on the NANP
area code of the number (a ported or mobile number may live elsewhere: counsel may want the
service address instead). To add a state, add a row. Holidays are not modelled.

``Eligibility.next_window_start`` is for scheduling: ``now`` when callable, the earliest later
instant when only time rules failed (days, hours, daily cap, 24 h cap, assuming no other
call is placed meanwhile), ``None`` when a permanent rule failed or no window opens within
15 days. The candidate is re-checked against the wall clock in every zone, so it is never a
time that is not callable; should a DST change fall inside the window hours (changes are
normally at night) it may be a later window than the earliest.
"""

from __future__ import annotations

import enum
import functools
import zoneinfo
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Final, Protocol

from callagent.campaigns.importer import ConsentType
from callagent.campaigns.settings import (
    CallingWindow,
    CampaignSpec,
    CampaignState,
    Purpose,
    Weekday,
)

__all__ = [
    "DEFAULT_STATE_RULES",
    "FLORIDA",
    "OKLAHOMA",
    "Callee",
    "DncList",
    "DncLookup",
    "Eligibility",
    "InMemoryDnc",
    "SkipReason",
    "StateRule",
    "StateRules",
    "check_eligibility",
]

_DAY: Final = timedelta(days=1)
_HORIZON: Final = timedelta(days=15)


class Callee(Protocol):
    """What the gate needs from a contact (``importer.ContactRow`` or a stored contact)."""

    @property
    def e164(self) -> str: ...
    @property
    def timezones(self) -> tuple[str, ...]: ...
    @property
    def consent_type(self) -> ConsentType | None: ...
    @property
    def consent_at(self) -> datetime | None: ...


class DncList(enum.Enum):
    INTERNAL = "internal"   # our own opt-outs, all campaigns
    NATIONAL = "national"   # the imported National DNC Registry copy


class DncLookup(Protocol):
    """In-memory membership (load the lists before the dialing pass: the gate does no I/O)."""

    def lists_containing(self, e164: str) -> Collection[DncList]: ...


@dataclass(frozen=True, slots=True)
class InMemoryDnc:
    internal: frozenset[str] = frozenset()
    national: frozenset[str] = frozenset()

    def lists_containing(self, e164: str) -> frozenset[DncList]:
        found = set()
        if e164 in self.internal:
            found.add(DncList.INTERNAL)
        if e164 in self.national:
            found.add(DncList.NATIONAL)
        return frozenset(found)


class SkipReason(enum.Enum):
    """Stable codes (store ``value``); ``text`` is for people."""

    CAMPAIGN_NOT_RUNNING = "campaign_not_running"
    NO_CONSENT = "no_consent"
    CONSENT_NOT_WRITTEN = "consent_not_written"
    CONSENT_NOT_PRIOR = "consent_not_prior"
    INTERNAL_DNC = "internal_dnc"
    NATIONAL_DNC = "national_dnc"
    UNKNOWN_TIMEZONE = "unknown_timezone"
    DAY_NOT_ALLOWED = "day_not_allowed"
    OUTSIDE_HOURS = "outside_hours"
    MAX_ATTEMPTS = "max_attempts"
    DAILY_CAP = "daily_cap"
    STATE_24H_CAP = "state_24h_cap"

    @property
    def text(self) -> str:
        return _TEXT[self]

    @property
    def waits(self) -> bool:
        """True if time alone cures it (the contact is rescheduled, not dropped)."""
        return self in _WAITS


_TEXT: Final = {
    SkipReason.CAMPAIGN_NOT_RUNNING: "the campaign is not running",
    SkipReason.NO_CONSENT: "no prior express consent on file for an artificial-voice call",
    SkipReason.CONSENT_NOT_WRITTEN: "telemarketing needs prior express written consent (PEWC)",
    SkipReason.CONSENT_NOT_PRIOR: "the consent is dated after now",
    SkipReason.INTERNAL_DNC: "on the internal do-not-call list",
    SkipReason.NATIONAL_DNC: "on the national do-not-call list",
    SkipReason.UNKNOWN_TIMEZONE: "the callee's time zone is unknown",
    SkipReason.DAY_NOT_ALLOWED: "not a calling day in the callee's local time",
    SkipReason.OUTSIDE_HOURS: "outside the calling hours in the callee's local time",
    SkipReason.MAX_ATTEMPTS: "the campaign's maximum attempts for this contact are used",
    SkipReason.DAILY_CAP: "the daily attempt cap for this number is reached",
    SkipReason.STATE_24H_CAP: "the state's cap on calls per 24 hours is reached",
}
_WAITS: Final = frozenset({
    SkipReason.DAY_NOT_ALLOWED, SkipReason.OUTSIDE_HOURS,
    SkipReason.DAILY_CAP, SkipReason.STATE_24H_CAP,
})


@dataclass(frozen=True, slots=True)
class StateRule:
    """A state's stricter rules, matched on the NANP area code of the number."""

    state: str                                  # USPS code
    area_codes: frozenset[str]
    source: str                                 # citation and its status (reported/unverified)
    window: CallingWindow | None = None         # intersected with the campaign window
    closed_days: frozenset[Weekday] = frozenset()
    max_calls_per_24h: int | None = None        # rolling, per number, all campaigns
    purposes: frozenset[Purpose] = frozenset(Purpose)


class StateRules:
    """Area code -> rule; overlapping area codes are a table error."""

    __slots__ = ("_by_area_code",)

    def __init__(self, rules: Iterable[StateRule]) -> None:
        self._by_area_code: dict[str, StateRule] = {}
        for rule in rules:
            for code in rule.area_codes:
                if code in self._by_area_code:
                    raise ValueError(f"area code {code} in two state rules")
                self._by_area_code[code] = rule

    def for_number(self, e164: str) -> StateRule | None:
        if not (e164.startswith("+1") and len(e164) == 12):
            return None
        return self._by_area_code.get(e164[2:5])


# The FTSA targets telephone *sales* calls; the rows apply to every purpose (conservative):
# counsel may narrow ``purposes`` to telemarketing.
FLORIDA: Final = StateRule(
    state="FL",
    area_codes=frozenset(
        ["239", "305", "321", "324", "352", "386", "407", "448", "561", "645", "656", "689",
         "727", "728", "754", "772", "786", "813", "850", "863", "904", "941", "954"]
    ),
    source="Fla. Stat. §501.059 (FTSA): 08:00-20:00, <= 3 calls / 24 h per subject "
    "(compliance reference: reported)",
    window=CallingWindow(time(8, 0), time(20, 0)),
    max_calls_per_24h=3,
)
OKLAHOMA: Final = StateRule(
    state="OK",
    area_codes=frozenset(["405", "539", "572", "580", "918"]),
    source="Oklahoma Telephone Solicitation Act, 'similar' to Florida (compliance reference: "
    "reported); only the 3 / 24 h cap is applied, stricter hours unverified",
    max_calls_per_24h=3,
)
# Sunday/holiday restrictions in some states: unverified, not encoded (``closed_days`` is ready).
DEFAULT_STATE_RULES: Final = StateRules((FLORIDA, OKLAHOMA))


@dataclass(frozen=True, slots=True)
class Eligibility:
    ok: bool
    reasons: tuple[SkipReason, ...]
    next_window_start: datetime | None          # UTC; see the module docstring
    state_rule: str | None = None               # e.g. "FL" when a state override applied
    local_times: tuple[datetime, ...] = ()      # the callee's wall clock(s), for the call record


@dataclass(frozen=True, slots=True)
class _Context:
    contact: Callee
    campaign: CampaignSpec
    state: CampaignState
    now: datetime
    dnc: frozenset[DncList]
    zones: tuple[zoneinfo.ZoneInfo, ...] | None     # None: a zone name is unknown
    window: CallingWindow | None                    # None: the state rule leaves no hours
    days: frozenset[Weekday]
    cap_24h: int | None
    recent: tuple[datetime, ...]                    # attempts in (now - 24 h, now], sorted
    attempts_today: int
    attempts_total: int


def check_eligibility(
    contact: Callee,
    campaign: CampaignSpec,
    now_utc: datetime,
    *,
    state: CampaignState,
    dnc: DncLookup,
    attempts_today: int,
    attempts_total: int,
    recent_attempts: Sequence[datetime],
    state_rules: StateRules = DEFAULT_STATE_RULES,
) -> Eligibility:
    """Decide one pre-dial check. ``recent_attempts``: start times of calls to this number in
    the last 24 h, all campaigns (older ones are ignored)."""
    now = _aware_utc(now_utc, "now_utc")
    rule = state_rules.for_number(contact.e164)
    if rule is not None and campaign.purpose not in rule.purposes:
        rule = None
    window: CallingWindow | None = campaign.window
    if rule is not None and rule.window is not None:
        window = campaign.window.intersect(rule.window)
    since = now - _DAY
    recent = sorted(t for t in (_aware_utc(t, "recent_attempts") for t in recent_attempts)
                    if since < t <= now)
    ctx = _Context(
        contact=contact,
        campaign=campaign,
        state=state,
        now=now,
        dnc=frozenset(dnc.lists_containing(contact.e164)),
        zones=_zones(contact.timezones),
        window=window,
        days=campaign.allowed_days - (rule.closed_days if rule else frozenset()),
        cap_24h=rule.max_calls_per_24h if rule else None,
        recent=tuple(recent),
        attempts_today=attempts_today,
        attempts_total=attempts_total,
    )
    reasons = tuple(reason for check in _RULES if (reason := check(ctx)) is not None)
    if not reasons:
        next_start: datetime | None = now
    elif all(reason.waits for reason in reasons):
        next_start = _next_start(ctx, reasons)
    else:
        next_start = None
    local_times = tuple(now.astimezone(zone) for zone in ctx.zones or ())
    return Eligibility(
        ok=not reasons,
        reasons=reasons,
        next_window_start=next_start,
        state_rule=rule.state if rule else None,
        local_times=local_times,
    )


# --- the rules, in order -------------------------------------------------------------------

def _campaign_running(ctx: _Context) -> SkipReason | None:
    return None if ctx.state is CampaignState.RUNNING else SkipReason.CAMPAIGN_NOT_RUNNING


def _consent(ctx: _Context) -> SkipReason | None:
    held, at = ctx.contact.consent_type, ctx.contact.consent_at
    if held is None or at is None:
        return SkipReason.NO_CONSENT
    needed = (ConsentType.PEWC if ctx.campaign.purpose is Purpose.TELEMARKETING
              else ConsentType.PEC)
    if not held.satisfies(needed):
        return SkipReason.CONSENT_NOT_WRITTEN
    if _aware_utc(at, "consent_at") > ctx.now:
        return SkipReason.CONSENT_NOT_PRIOR
    return None


def _internal_dnc(ctx: _Context) -> SkipReason | None:
    return SkipReason.INTERNAL_DNC if DncList.INTERNAL in ctx.dnc else None


def _national_dnc(ctx: _Context) -> SkipReason | None:
    listed = DncList.NATIONAL in ctx.dnc and ctx.campaign.honor_national_dnc
    return SkipReason.NATIONAL_DNC if listed else None


def _timezone_known(ctx: _Context) -> SkipReason | None:
    return SkipReason.UNKNOWN_TIMEZONE if ctx.zones is None else None


def _calling_day(ctx: _Context) -> SkipReason | None:
    if ctx.zones is None:
        return None
    ok = all(ctx.now.astimezone(z).weekday() in ctx.days for z in ctx.zones)
    return None if ok else SkipReason.DAY_NOT_ALLOWED


def _calling_hours(ctx: _Context) -> SkipReason | None:
    if ctx.zones is None:
        return None
    window = ctx.window
    ok = window is not None and all(
        window.contains(ctx.now.astimezone(z).time()) for z in ctx.zones
    )
    return None if ok else SkipReason.OUTSIDE_HOURS


def _max_attempts(ctx: _Context) -> SkipReason | None:
    return SkipReason.MAX_ATTEMPTS if ctx.attempts_total >= ctx.campaign.max_attempts else None


def _daily_cap(ctx: _Context) -> SkipReason | None:
    capped = ctx.attempts_today >= ctx.campaign.max_attempts_per_day
    return SkipReason.DAILY_CAP if capped else None


def _state_cap(ctx: _Context) -> SkipReason | None:
    capped = ctx.cap_24h is not None and len(ctx.recent) >= ctx.cap_24h
    return SkipReason.STATE_24H_CAP if capped else None


_RULES: Final[tuple[Callable[[_Context], SkipReason | None], ...]] = (
    _campaign_running,
    _consent,
    _internal_dnc,
    _national_dnc,
    _timezone_known,
    _calling_day,
    _calling_hours,
    _max_attempts,
    _daily_cap,
    _state_cap,
)


# --- helpers ---------------------------------------------------------------------------------

def _aware_utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return moment.astimezone(UTC)


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def _zones(names: tuple[str, ...]) -> tuple[zoneinfo.ZoneInfo, ...] | None:
    zones = tuple(_zone(name) for name in names)
    if not zones or any(zone is None for zone in zones):
        return None
    return tuple(zone for zone in zones if zone is not None)


def _callable_at(
    moment: datetime,
    zones: tuple[zoneinfo.ZoneInfo, ...],
    window: CallingWindow,
    days: frozenset[Weekday],
) -> bool:
    """The wall-clock truth for days and hours, in every zone."""
    for zone in zones:
        local = moment.astimezone(zone)
        if local.weekday() not in days or not window.contains(local.time()):
            return False
    return True


def _next_start(ctx: _Context, reasons: tuple[SkipReason, ...]) -> datetime | None:
    zones, window, days = ctx.zones, ctx.window, ctx.days
    if zones is None or window is None or not days:
        return None
    not_before = ctx.now
    if SkipReason.DAILY_CAP in reasons:        # the next local day, in every zone
        not_before = max(not_before, *(_next_midnight(ctx.now, zone) for zone in zones))
    if SkipReason.STATE_24H_CAP in reasons and ctx.cap_24h is not None:
        # when enough attempts age out of the rolling 24 h
        oldest_to_expire = ctx.recent[len(ctx.recent) - ctx.cap_24h]
        not_before = max(not_before, oldest_to_expire + _DAY)
    per_zone = (_zone_intervals(zone, window, days, not_before) for zone in zones)
    for start, end in functools.reduce(_intersect, per_zone):
        if end <= not_before:
            continue
        candidate = max(start, not_before)
        if _callable_at(candidate, zones, window, days):
            return candidate
    return None


def _next_midnight(now: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    tomorrow = now.astimezone(zone).date() + _DAY
    return datetime.combine(tomorrow, time(0), tzinfo=zone).astimezone(UTC)


def _zone_intervals(
    zone: zoneinfo.ZoneInfo, window: CallingWindow, days: frozenset[Weekday], not_before: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """UTC ``[start, end)`` of the window on each allowed local day, from the day before
    ``not_before`` to the horizon. fold=0 maps a time in a DST gap later (safe for a start)."""
    first = not_before.astimezone(zone).date() - _DAY
    for offset in range(_HORIZON.days + 2):
        day = first + timedelta(days=offset)
        if day.weekday() in days:
            start = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
            end = datetime.combine(day, window.end, tzinfo=zone).astimezone(UTC)
            yield start, end


def _intersect(
    left: Iterable[tuple[datetime, datetime]], right: Iterable[tuple[datetime, datetime]]
) -> Iterator[tuple[datetime, datetime]]:
    """Lazy intersection of two sorted streams of disjoint half-open intervals."""
    lefts, rights = iter(left), iter(right)
    a, b = next(lefts, None), next(rights, None)
    while a is not None and b is not None:
        start, end = max(a[0], b[0]), min(a[1], b[1])
        if start < end:
            yield start, end
        if a[1] < b[1]:
            a = next(lefts, None)
        else:
            b = next(rights, None)
