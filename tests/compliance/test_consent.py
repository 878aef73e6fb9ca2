"""Recording consent: the rule from the parties' numbers, and the per-call state machine."""

from __future__ import annotations

import pytest

from callagent.compliance.consent import (
    ConsentState,
    Policy,
    RecordingConsent,
    asks_opt_out,
    is_refusal,
    policy_for,
    us_state,
)


@pytest.mark.parametrize(
    ("number", "state"),
    [("+14155550100", "CA"), ("+12125550100", "NY"), ("+13125550123", "IL"),
     ("+447700900123", None), ("not a number", None), ("+15005550006", None)],
)
def test_us_state_of_a_number(number: str, state: str | None) -> None:
    assert us_state(number) == state


def test_one_party_states_only_give_one_party() -> None:
    policy, reasons = policy_for(["+12125550100", "+12145550100"], Policy.ALL_PARTY)
    assert policy is Policy.ONE_PARTY and reasons == ("NY: one-party", "TX: one-party")


def test_the_stricter_rule_wins_across_state_lines() -> None:
    policy, reasons = policy_for(["+12125550100", "+14155550100"], Policy.ONE_PARTY)
    assert policy is Policy.ALL_PARTY and "CA: all-party" in reasons


def test_an_unknown_state_follows_the_configured_rule() -> None:
    assert policy_for(["+447700900123"], Policy.ALL_PARTY)[0] is Policy.ALL_PARTY
    assert policy_for(["+447700900123"], Policy.ONE_PARTY)[0] is Policy.ONE_PARTY
    assert policy_for(["", ""], Policy.ALL_PARTY) == (Policy.ALL_PARTY, ("no numbers: all-party",))


def test_one_party_records_from_the_start() -> None:
    c = RecordingConsent(Policy.ONE_PARTY, has_disclosure=True)
    [started] = c.start()
    assert started.action == "recording.started" and c.keeping and c.consented


def test_all_party_waits_for_the_disclosure_to_be_heard() -> None:
    c = RecordingConsent(Policy.ALL_PARTY, has_disclosure=True)
    assert c.start() == [] and not c.keeping and c.state is ConsentState.PENDING
    assert [e.action for e in c.disclosure_heard()] == ["consent.given", "recording.started"]
    assert c.keeping and c.disclosure_heard() == []


def test_all_party_without_a_recording_disclosure_never_records() -> None:
    c = RecordingConsent(Policy.ALL_PARTY, has_disclosure=False)
    assert c.start() == [] and c.disclosure_heard() == [] and not c.keeping


def test_a_refusal_stops_recording_and_under_all_party_discards() -> None:
    c = RecordingConsent(Policy.ALL_PARTY, has_disclosure=True)
    c.disclosure_heard()
    events = c.refused("spoken")
    assert [e.action for e in events] == ["consent.refused", "recording.stopped"]
    assert not c.keeping and c.discard and c.refused("spoken") == []
    one = RecordingConsent(Policy.ONE_PARTY, has_disclosure=False)
    one.refused("spoken")
    assert not one.keeping and not one.discard  # what was kept lawfully stays


@pytest.mark.parametrize(
    ("text", "refused"),
    [("Please don't record this call.", True), ("DO NOT RECORD me", True),
     ("record my order", False), ("I don't recorder", False)],
)
def test_refusal_phrases(text: str, refused: bool) -> None:
    assert is_refusal(text, ["don't record", "do not record"]) is refused


def test_opt_out_phrases_and_keywords() -> None:
    assert asks_opt_out("please stop calling me", ["stop calling me"], [])
    assert asks_opt_out("Unsubscribe!", [], ["unsubscribe"])
    assert not asks_opt_out("I want to subscribe", [], ["unsubscribe"])
    assert not asks_opt_out("", ["stop calling me"], [""])
