"""Pre-dial gate, rule by rule.

47 CFR 64.1200(a)(1)-(3) consent, (c)(1) hours, (c)(2) national DNC, (d) internal DNC;
Fla. Stat. §501.059 (reported).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from phonenumbers import geocoder

from callagent.campaigns import eligibility as eligibility_module
from callagent.campaigns.eligibility import (
    DEFAULT_STATE_RULES,
    FLORIDA,
    OKLAHOMA,
    DncList,
    Eligibility,
    InMemoryDnc,
    SkipReason,
    StateRule,
    StateRules,
    check_eligibility,
)
from callagent.campaigns.importer import (
    ConsentType,
    ContactRow,
    TimezoneSource,
    parse_contacts,
)
from callagent.campaigns.settings import (
    CallingWindow,
    CampaignSpec,
    CampaignState,
    Purpose,
    Weekday,
)

NY = "+12125551234"          # America/New_York
FL = "+13055551234"          # Miami, America/New_York, Florida rules
LA = "+14155552671"          # America/Los_Angeles
AK = "+19072345678"          # America/Adak + America/Anchorage
EVERY_DAY = frozenset(Weekday)
LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)
WED_NOON_NY = datetime(2025, 3, 12, 16, 0, tzinfo=UTC)      # Wednesday 12:00 EDT


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def contact(
    e164: str = NY,
    zones: tuple[str, ...] = ("America/New_York",),
    consent: ConsentType | None = ConsentType.PEWC,
    consent_at: datetime | None = LONG_AGO,
) -> ContactRow:
    return ContactRow(line=2, campaign_key="c", e164=e164, name="A", timezones=zones,
                      timezone_source=TimezoneSource.NUMBER, consent_type=consent,
                      consent_at=consent_at)


def campaign(**changes: Any) -> CampaignSpec:
    fields: dict[str, Any] = {
        "name": "c", "agent_profile": "a", "caller_id": "+12125550100",
        "purpose": Purpose.TELEMARKETING, "window": CallingWindow(time(8), time(21)),
        "allowed_days": EVERY_DAY, "max_attempts": 5, "max_attempts_per_day": 2,
    }
    fields.update(changes)
    return CampaignSpec(**fields)


def check(
    who: ContactRow | None = None,
    now: datetime = WED_NOON_NY,
    spec: CampaignSpec | None = None,
    **kwargs: Any,
) -> Eligibility:
    options: dict[str, Any] = {
        "state": CampaignState.RUNNING, "dnc": InMemoryDnc(),
        "attempts_today": 0, "attempts_total": 0, "recent_attempts": (),
    }
    options.update(kwargs)
    return check_eligibility(who or contact(), spec or campaign(), now, **options)


def test_exported_names_are_pinned() -> None:
    assert sorted(eligibility_module.__all__) == sorted([
        "DEFAULT_STATE_RULES", "FLORIDA", "OKLAHOMA", "Callee", "DncList", "DncLookup",
        "Eligibility", "InMemoryDnc", "SkipReason", "StateRule", "StateRules", "check_eligibility",
    ])


def test_eligible_contact() -> None:
    result = check()
    assert result.ok and result.reasons == () and result.state_rule is None
    assert result.next_window_start == WED_NOON_NY
    assert [t.strftime("%H:%M %Z") for t in result.local_times] == ["12:00 EDT"]


def test_every_reason_has_text() -> None:
    assert all(reason.text for reason in SkipReason)


def test_naive_now_is_our_misuse() -> None:
    with pytest.raises(ValueError, match="now_utc"):
        check(now=datetime(2025, 3, 12, 16))


def test_all_failing_rules_are_reported_in_rule_order() -> None:
    result = check(contact(consent=None), state=CampaignState.PAUSED,
                   dnc=InMemoryDnc(internal=frozenset({NY}), national=frozenset({NY})),
                   now=utc(2025, 3, 12, 3), attempts_total=5, attempts_today=2)
    assert result.reasons == (
        SkipReason.CAMPAIGN_NOT_RUNNING, SkipReason.NO_CONSENT, SkipReason.INTERNAL_DNC,
        SkipReason.NATIONAL_DNC, SkipReason.OUTSIDE_HOURS, SkipReason.MAX_ATTEMPTS,
        SkipReason.DAILY_CAP,
    )
    assert not result.ok and result.next_window_start is None


class TestCampaignState:
    @pytest.mark.parametrize(
        "state", [CampaignState.DRAFT, CampaignState.PAUSED, CampaignState.FINISHED]
    )
    def test_only_a_running_campaign_dials(self, state: CampaignState) -> None:
        result = check(state=state)
        assert result.reasons == (SkipReason.CAMPAIGN_NOT_RUNNING,)
        assert result.next_window_start is None


class TestConsent:
    def test_no_consent(self) -> None:
        assert check(contact(consent=None, consent_at=None)).reasons == (SkipReason.NO_CONSENT,)

    def test_telemarketing_needs_written_consent(self) -> None:
        assert check(contact(consent=ConsentType.PEC)).reasons == (SkipReason.CONSENT_NOT_WRITTEN,)

    @pytest.mark.parametrize("kind", [ConsentType.PEC, ConsentType.PEWC])
    def test_informational_needs_express_consent(self, kind: ConsentType) -> None:
        assert check(contact(consent=kind), spec=campaign(purpose=Purpose.INFORMATIONAL)).ok

    def test_consent_must_be_prior(self) -> None:
        later = WED_NOON_NY + timedelta(seconds=1)
        assert check(contact(consent_at=later)).reasons == (SkipReason.CONSENT_NOT_PRIOR,)
        assert check(contact(consent_at=WED_NOON_NY)).ok


class TestDoNotCall:
    def test_internal_list_blocks_every_purpose(self) -> None:
        dnc = InMemoryDnc(internal=frozenset({NY}))
        for spec in (campaign(), campaign(purpose=Purpose.INFORMATIONAL, honor_national_dnc=False)):
            assert check(spec=spec, dnc=dnc).reasons == (SkipReason.INTERNAL_DNC,)

    def test_national_list(self) -> None:
        dnc = InMemoryDnc(national=frozenset({NY}))
        assert check(dnc=dnc).reasons == (SkipReason.NATIONAL_DNC,)
        assert check(spec=campaign(purpose=Purpose.INFORMATIONAL), dnc=dnc).reasons == (
            SkipReason.NATIONAL_DNC,)

    def test_informational_campaign_may_skip_the_national_scrub(self) -> None:
        dnc = InMemoryDnc(national=frozenset({NY}))
        spec = campaign(purpose=Purpose.INFORMATIONAL, honor_national_dnc=False)
        assert check(spec=spec, dnc=dnc).ok

    def test_lookup_is_a_protocol(self) -> None:
        class Everything:
            def lists_containing(self, e164: str) -> list[DncList]:
                return [DncList.NATIONAL]
        assert check(dnc=Everything()).reasons == (SkipReason.NATIONAL_DNC,)


class TestCallingHours:
    @pytest.mark.parametrize(("local", "ok"), [
        (time(7, 59, 59), False),
        (time(8, 0, 0), True),
        (time(20, 59, 59), True),
        (time(21, 0, 0), False),
    ])
    def test_window_edges_at_8_and_21(self, local: time, ok: bool) -> None:
        now = datetime.combine(WED_NOON_NY.date(), local, tzinfo=ZoneInfo("America/New_York"))
        result = check(now=now.astimezone(UTC))
        assert result.ok is ok
        assert result.reasons == (() if ok else (SkipReason.OUTSIDE_HOURS,))

    def test_default_campaign_window_is_9_to_20(self) -> None:
        spec = campaign(window=CallingWindow(time(9), time(20)))
        assert not check(now=utc(2025, 3, 12, 12, 30), spec=spec).ok      # 08:30 EDT
        assert check(now=utc(2025, 3, 12, 13, 0), spec=spec).ok           # 09:00 EDT
        assert not check(now=utc(2025, 3, 13, 0, 0), spec=spec).ok        # 20:00 EDT

    def test_time_is_the_callees_not_ours(self) -> None:
        now = utc(2025, 3, 12, 14, 0)            # 10:00 in New York, 07:00 in Los Angeles
        assert check(now=now).ok
        result = check(contact(LA, ("America/Los_Angeles",)), now=now)
        assert result.reasons == (SkipReason.OUTSIDE_HOURS,)
        assert result.next_window_start == utc(2025, 3, 12, 15, 0)       # 08:00 PDT

    def test_after_hours_waits_for_the_next_morning(self) -> None:
        result = check(now=utc(2025, 3, 13, 1, 0))                       # 21:00 EDT
        assert result.next_window_start == utc(2025, 3, 13, 12, 0)       # 08:00 EDT

    def test_unknown_zone(self) -> None:
        result = check(contact(zones=("Nowhere/Land",)))
        assert result.reasons == (SkipReason.UNKNOWN_TIMEZONE,) and result.next_window_start is None
        assert check(contact(zones=())).reasons == (SkipReason.UNKNOWN_TIMEZONE,)


class TestDaylightSaving:
    """America/New_York springs forward on Sunday 2025-03-09 02:00 (EST -5 -> EDT -4)."""

    def test_spring_forward_day_uses_the_new_offset(self) -> None:
        assert check(now=utc(2025, 3, 9, 12, 0)).ok                     # 08:00 EDT
        assert not check(now=utc(2025, 3, 9, 11, 59)).ok                # 07:59 EDT
        assert not check(now=utc(2025, 3, 8, 12, 30)).ok                # 07:30 EST the day before

    def test_next_window_across_the_spring_forward_night(self) -> None:
        result = check(now=utc(2025, 3, 9, 6, 0))                        # 01:00 EST
        assert result.next_window_start == utc(2025, 3, 9, 12, 0)        # 08:00 EDT, not 13:00

    def test_next_window_across_the_fall_back_night(self) -> None:
        result = check(now=utc(2025, 11, 2, 3, 0))                       # Sat 23:00 EDT
        assert result.next_window_start == utc(2025, 11, 2, 13, 0)       # Sun 08:00 EST

    def test_window_end_after_spring_forward(self) -> None:
        assert check(now=utc(2025, 3, 10, 0, 59)).ok                     # 20:59 EDT
        assert not check(now=utc(2025, 3, 10, 1, 0)).ok                  # 21:00 EDT


class TestSeveralZones:
    """A number spanning zones is callable only when every zone is inside the window."""

    alaska = contact(AK, ("America/Adak", "America/Anchorage"))

    def test_intersection_of_the_zones(self) -> None:
        # July: Anchorage AKDT (-8), Adak HDT (-9). 08:00 Anchorage = 16:00Z, 08:00 Adak = 17:00Z.
        result = check(self.alaska, now=utc(2025, 7, 16, 16, 30))
        assert result.reasons == (SkipReason.OUTSIDE_HOURS,)
        assert result.next_window_start == utc(2025, 7, 16, 17, 0)
        assert [t.strftime("%H:%M") for t in result.local_times] == ["07:30", "08:30"]
        assert check(self.alaska, now=utc(2025, 7, 16, 17, 0)).ok

    def test_evening_edge_is_set_by_the_eastern_zone(self) -> None:
        # 21:00 Anchorage = 05:00Z; Adak is still at 20:00.
        assert check(self.alaska, now=utc(2025, 7, 17, 4, 59)).ok
        result = check(self.alaska, now=utc(2025, 7, 17, 5, 0))
        assert result.reasons == (SkipReason.OUTSIDE_HOURS,)
        assert result.next_window_start == utc(2025, 7, 17, 17, 0)

    def test_zones_without_a_common_window_are_never_callable(self) -> None:
        apart = contact(zones=("Asia/Tokyo", "America/New_York"))          # 13 h apart
        result = check(apart, spec=campaign(window=CallingWindow(time(9), time(20))))
        assert result.reasons == (SkipReason.OUTSIDE_HOURS,) and result.next_window_start is None

    def test_days_must_be_allowed_in_every_zone(self) -> None:
        spec = campaign(allowed_days=frozenset({Weekday.MONDAY}))
        pair = contact(zones=("Pacific/Kiritimati", "Pacific/Honolulu"))   # same clock, a day apart
        result = check(pair, now=utc(2025, 3, 10, 20, 0), spec=spec)   # Mon HST, Tue Kiribati
        assert result.reasons == (SkipReason.DAY_NOT_ALLOWED,) and result.next_window_start is None


class TestDays:
    weekdays = campaign(allowed_days=frozenset(Weekday) - {Weekday.SATURDAY, Weekday.SUNDAY})

    def test_weekend_waits_for_monday(self) -> None:
        result = check(now=utc(2025, 3, 15, 16, 0), spec=self.weekdays)  # Saturday noon EDT
        assert result.reasons == (SkipReason.DAY_NOT_ALLOWED,)
        assert result.next_window_start == utc(2025, 3, 17, 12, 0)      # Monday 08:00 EDT

    def test_the_day_is_the_callees_local_day(self) -> None:
        result = check(now=utc(2025, 3, 15, 0, 30), spec=self.weekdays)  # Fri 20:30 EDT, Sat in UTC
        assert result.ok


class TestAttempts:
    def test_max_attempts_per_contact(self) -> None:
        result = check(attempts_total=5)
        assert result.reasons == (SkipReason.MAX_ATTEMPTS,) and result.next_window_start is None
        assert check(attempts_total=4).ok

    def test_daily_cap_waits_for_the_next_local_day(self) -> None:
        result = check(attempts_today=2)
        assert result.reasons == (SkipReason.DAILY_CAP,)
        assert result.next_window_start == utc(2025, 3, 13, 12, 0)      # Thursday 08:00 EDT
        assert check(attempts_today=1).ok


class TestStateRules:
    def test_florida_hours_end_at_20(self) -> None:
        now = utc(2025, 3, 13, 0, 30)                                    # 20:30 EDT
        assert check(now=now).ok
        result = check(contact(FL), now=now)
        assert result.reasons == (SkipReason.OUTSIDE_HOURS,) and result.state_rule == "FL"
        assert result.next_window_start == utc(2025, 3, 13, 12, 0)

    def test_florida_caps_three_calls_per_rolling_24h(self) -> None:
        calls = [WED_NOON_NY - timedelta(hours=h) for h in (23, 5, 1)]
        result = check(contact(FL), recent_attempts=calls)
        assert result.reasons == (SkipReason.STATE_24H_CAP,)
        assert result.next_window_start == WED_NOON_NY + timedelta(hours=1)   # oldest ages out
        assert check(contact(NY), recent_attempts=calls).ok

    def test_attempts_older_than_24h_or_in_the_future_do_not_count(self) -> None:
        calls = [WED_NOON_NY - timedelta(hours=24), WED_NOON_NY - timedelta(hours=30),
                 WED_NOON_NY - timedelta(hours=1), WED_NOON_NY + timedelta(hours=1)]
        assert check(contact(FL), recent_attempts=calls).ok

    def test_cap_expiry_at_night_waits_for_the_window(self) -> None:
        calls = [utc(2025, 3, 12, 1, 0), utc(2025, 3, 12, 20, 0), utc(2025, 3, 12, 22, 0)]
        result = check(contact(FL), now=utc(2025, 3, 12, 23, 0), recent_attempts=calls)
        assert result.next_window_start == utc(2025, 3, 13, 12, 0)       # 01:00Z + 24h is 21:00 EDT

    def test_oklahoma_cap_without_stricter_hours(self) -> None:
        ok_number = contact("+14055551234", ("America/Chicago",))
        assert check(ok_number, now=utc(2025, 3, 13, 1, 30)).state_rule == "OK"   # 20:30 CDT
        assert check(ok_number, now=utc(2025, 3, 13, 1, 30)).ok
        calls = [WED_NOON_NY - timedelta(hours=h) for h in (3, 2, 1)]
        assert check(ok_number, recent_attempts=calls).reasons == (SkipReason.STATE_24H_CAP,)

    def test_a_rule_limited_to_telemarketing_spares_informational_calls(self) -> None:
        narrow = StateRules([StateRule("FL", FLORIDA.area_codes, "test",
                                       window=FLORIDA.window, max_calls_per_24h=3,
                                       purposes=frozenset({Purpose.TELEMARKETING}))])
        now = utc(2025, 3, 13, 0, 30)                                    # 20:30 EDT
        info = campaign(purpose=Purpose.INFORMATIONAL)
        assert check(contact(FL), now=now, spec=info, state_rules=narrow).ok
        assert not check(contact(FL), now=now, state_rules=narrow).ok

    def test_closed_days_extend_the_table(self) -> None:
        no_sundays = StateRules([StateRule("XX", frozenset({"212"}), "test",
                                           closed_days=frozenset({Weekday.SUNDAY}))])
        sunday = utc(2025, 3, 16, 16, 0)
        result = check(now=sunday, state_rules=no_sundays)
        assert result.reasons == (SkipReason.DAY_NOT_ALLOWED,)
        assert result.next_window_start == utc(2025, 3, 17, 12, 0)

    def test_area_codes_may_not_overlap(self) -> None:
        with pytest.raises(ValueError, match="305"):
            StateRules([FLORIDA, StateRule("ZZ", frozenset({"305"}), "test")])

    def test_non_nanp_numbers_have_no_state_rule(self) -> None:
        assert DEFAULT_STATE_RULES.for_number("+442079460958") is None
        assert DEFAULT_STATE_RULES.for_number(FL) is FLORIDA

    @pytest.mark.parametrize(("rule", "names"), [(FLORIDA, ("Florida", ", FL")),
                                                 (OKLAHOMA, ("Oklahoma", ", OK"))])
    def test_area_code_table_matches_phonenumbers_geography(
        self, rule: StateRule, names: tuple[str, str]
    ) -> None:
        for code in sorted(rule.area_codes):
            number = phonenumbers.parse(f"+1{code}2345678")
            where = geocoder.description_for_number(number, "en")
            assert where == names[0] or where.endswith(names[1]), (code, where)


def test_an_imported_row_goes_through_the_gate() -> None:
    text = "phone,consent_type,consent_at\n(907) 234-5678,PEWC,2025-01-01T00:00:00Z\n"
    [row] = list(parse_contacts(io.StringIO(text, newline=""), campaign_key="c"))
    assert isinstance(row, ContactRow)
    assert check(row, now=utc(2025, 7, 16, 17, 0)).ok
    assert not check(row, now=utc(2025, 7, 16, 16, 59)).ok
