"""Campaign definition rules (47 CFR 64.1200(c)(1) window, (a)(7) ring time); lifecycle table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, time, timedelta
from typing import Any

import pytest

from callagent.campaigns import settings as settings_module
from callagent.campaigns.settings import (
    FEDERAL_WINDOW,
    WEEKDAYS,
    CallingWindow,
    CallOutcome,
    CampaignMove,
    CampaignSpec,
    CampaignSpecError,
    CampaignState,
    IllegalTransition,
    Purpose,
    RetryDelays,
    VoicemailPolicy,
    Weekday,
    transition,
)


def spec(**changes: Any) -> CampaignSpec:
    fields: dict[str, Any] = {
        "name": "spring renewals",
        "agent_profile": "renewals-v2",
        "caller_id": "+12125550100",
        "purpose": Purpose.INFORMATIONAL,
    }
    fields.update(changes)
    return CampaignSpec(**fields)


def test_exported_names_are_pinned() -> None:
    assert sorted(settings_module.__all__) == sorted([
        "FEDERAL_WINDOW", "CallOutcome", "CallingWindow", "CampaignMove", "CampaignSpec",
        "CampaignSpecError", "CampaignState", "IllegalTransition", "Purpose", "RetryDelays",
        "VoicemailPolicy", "Weekday", "WEEKDAYS", "transition",
    ])


class TestDefaults:
    def test_default_window_is_9_to_20_on_weekdays(self) -> None:
        s = spec()
        assert s.window == CallingWindow(time(9), time(20))
        assert s.allowed_days == WEEKDAYS and Weekday.SATURDAY not in s.allowed_days
        assert s.voicemail is VoicemailPolicy.HANG_UP and s.honor_national_dnc

    def test_spec_is_frozen(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec().name = "other"  # type: ignore[misc]

    def test_errors_are_value_errors(self) -> None:
        assert issubclass(CampaignSpecError, ValueError)


class TestCallingWindow:
    def test_federal_bounds_are_accepted_exactly(self) -> None:
        assert spec(window=CallingWindow(time(8), time(21))).window == FEDERAL_WINDOW

    @pytest.mark.parametrize(("start", "end"), [
        (time(7, 59, 59), time(20)),
        (time(9), time(21, 0, 1)),
        (time(6), time(22)),
    ])
    def test_window_outside_8_to_21_is_refused(self, start: time, end: time) -> None:
        with pytest.raises(CampaignSpecError, match="08:00-21:00"):
            spec(window=CallingWindow(start, end))

    @pytest.mark.parametrize(("start", "end"), [(time(12), time(12)), (time(20), time(9))])
    def test_start_must_precede_end(self, start: time, end: time) -> None:
        with pytest.raises(CampaignSpecError, match="before end"):
            CallingWindow(start, end)

    def test_window_times_are_wall_clock_without_tzinfo(self) -> None:
        with pytest.raises(CampaignSpecError, match="tzinfo"):
            CallingWindow(time(9, tzinfo=UTC), time(20))

    def test_window_is_half_open(self) -> None:
        w = CallingWindow(time(8), time(21))
        assert w.contains(time(8)) and w.contains(time(20, 59, 59, 999999))
        assert not w.contains(time(21)) and not w.contains(time(7, 59, 59, 999999))

    def test_intersection(self) -> None:
        w = CallingWindow(time(9), time(21))
        assert w.intersect(CallingWindow(time(8), time(20))) == CallingWindow(time(9), time(20))
        assert CallingWindow(time(20), time(21)).intersect(CallingWindow(time(8), time(20))) is None


class TestDaysAndCaps:
    def test_no_allowed_day_is_refused(self) -> None:
        with pytest.raises(CampaignSpecError, match="no allowed"):
            spec(allowed_days=frozenset())

    def test_days_must_be_weekday_members(self) -> None:
        with pytest.raises(CampaignSpecError, match="Weekday"):
            spec(allowed_days=frozenset({0, 1}))

    @pytest.mark.parametrize(("field", "value"), [
        ("max_concurrent_calls", 0),
        ("max_concurrent_calls", 1001),
        ("max_concurrent_calls", True),
        ("max_attempts", 0),
        ("max_attempts_per_day", 0),
        ("max_attempts_per_day", 4),     # more than max_attempts (3)
        ("ring_timeout_s", 14),          # abandonment rule: ring >= 15 s
        ("ring_timeout_s", 601),         # Twilio max
        ("max_attempts", 2.5),
    ])
    def test_caps_out_of_range_are_refused(self, field: str, value: object) -> None:
        with pytest.raises(CampaignSpecError, match=field):
            spec(**{field: value})

    def test_caps_in_range(self) -> None:
        s = spec(max_concurrent_calls=20, max_attempts=5, max_attempts_per_day=5, ring_timeout_s=15)
        assert (s.max_concurrent_calls, s.max_attempts_per_day, s.ring_timeout_s) == (20, 5, 15)


class TestRetryDelays:
    def test_delay_by_outcome(self) -> None:
        delays = RetryDelays(no_answer=timedelta(hours=2), busy=timedelta(minutes=10),
                             failed=timedelta(minutes=45), voicemail=timedelta(days=2))
        s = spec(retry_delays=delays)
        assert s.retry_delay(CallOutcome.NO_ANSWER) == timedelta(hours=2)
        assert s.retry_delay(CallOutcome.BUSY) == timedelta(minutes=10)
        assert s.retry_delay(CallOutcome.FAILED) == timedelta(minutes=45)
        assert s.retry_delay(CallOutcome.VOICEMAIL) == timedelta(days=2)

    @pytest.mark.parametrize("delay", [timedelta(0), timedelta(seconds=-1), timedelta(days=31)])
    def test_delay_must_be_positive_and_at_most_30_days(self, delay: timedelta) -> None:
        with pytest.raises(CampaignSpecError, match="busy"):
            RetryDelays(busy=delay)


class TestVoicemailAndPurpose:
    def test_leave_message_needs_a_message(self) -> None:
        with pytest.raises(CampaignSpecError, match="voicemail_message"):
            spec(voicemail=VoicemailPolicy.LEAVE_MESSAGE, voicemail_message="  ")
        s = spec(voicemail=VoicemailPolicy.LEAVE_MESSAGE, voicemail_message="Please call us back.")
        assert s.voicemail is VoicemailPolicy.LEAVE_MESSAGE

    def test_hang_up_forbids_a_message(self) -> None:
        with pytest.raises(CampaignSpecError, match="hang_up"):
            spec(voicemail_message="hello")

    def test_telemarketing_always_honours_the_national_dnc(self) -> None:
        with pytest.raises(CampaignSpecError, match="national do-not-call"):
            spec(purpose=Purpose.TELEMARKETING, honor_national_dnc=False)
        assert not spec(honor_national_dnc=False).honor_national_dnc

    @pytest.mark.parametrize("caller_id", ["2125550100", "+0212555010", "+1 212 555 0100", "+1234"])
    def test_caller_id_must_be_e164(self, caller_id: str) -> None:
        with pytest.raises(CampaignSpecError, match="E.164"):
            spec(caller_id=caller_id)

    @pytest.mark.parametrize("field", ["name", "agent_profile"])
    def test_names_must_not_be_empty(self, field: str) -> None:
        with pytest.raises(CampaignSpecError, match="empty"):
            spec(**{field: " "})


LEGAL = {
    (CampaignState.DRAFT, CampaignMove.START): CampaignState.RUNNING,
    (CampaignState.RUNNING, CampaignMove.PAUSE): CampaignState.PAUSED,
    (CampaignState.RUNNING, CampaignMove.FINISH): CampaignState.FINISHED,
    (CampaignState.PAUSED, CampaignMove.RESUME): CampaignState.RUNNING,
    (CampaignState.PAUSED, CampaignMove.FINISH): CampaignState.FINISHED,
}
ILLEGAL = [(s, m) for s in CampaignState for m in CampaignMove if (s, m) not in LEGAL]


class TestLifecycle:
    @pytest.mark.parametrize(("state", "move"), list(LEGAL))
    def test_legal_moves(self, state: CampaignState, move: CampaignMove) -> None:
        assert transition(state, move) is LEGAL[(state, move)]

    @pytest.mark.parametrize(("state", "move"), ILLEGAL)
    def test_illegal_move_names_state_and_move(
        self, state: CampaignState, move: CampaignMove
    ) -> None:
        with pytest.raises(IllegalTransition) as info:
            transition(state, move)
        assert (info.value.state, info.value.move) == (state, move)
        assert state.value in str(info.value) and move.value in str(info.value)

    def test_full_life(self) -> None:
        state = CampaignState.DRAFT
        for move in (CampaignMove.START, CampaignMove.PAUSE, CampaignMove.RESUME,
                     CampaignMove.PAUSE, CampaignMove.FINISH):
            state = transition(state, move)
        assert state is CampaignState.FINISHED

    def test_finished_is_terminal(self) -> None:
        assert all((CampaignState.FINISHED, m) in ILLEGAL for m in CampaignMove)
