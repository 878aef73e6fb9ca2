"""FDB measures on hand-built timelines with known answers."""

from __future__ import annotations

import math

import pytest

from callagent.bench.phone.measures import (
    Behaviour,
    is_takeover,
    overlap_outcome,
    pause_takeover,
    percentile,
    rate,
    same_response,
    smooth_turn,
    v15_average,
)
from callagent.bench.phone.timeline import AgentSpeech, AgentTurnText, CallTimeline, Scenario, Span

GREETING = AgentSpeech(Span(0.0, 11.0), turn="a1")


def tl(scenario: Scenario, *agent: AgentSpeech, **kw: object) -> CallTimeline:
    return CallTimeline(scenario, tuple(agent), **kw)  # type: ignore[arg-type]


# ---- takeover -------------------------------------------------------------------


def test_takeover_needs_one_second_or_more_than_three_words() -> None:
    assert is_takeover(AgentSpeech(Span(0, 1.0)))
    assert not is_takeover(AgentSpeech(Span(0, 0.99), words=3))
    assert is_takeover(AgentSpeech(Span(0, 0.5), words=4))
    assert not is_takeover(AgentSpeech(Span(0, 0.5)))  # untranscribed short blip


# ---- smooth turn-taking -------------------------------------------------------------


def test_silent_agent_never_takes_the_turn() -> None:
    out = smooth_turn(tl(Scenario.SMOOTH, GREETING, caller_turn=Span(12.0, 14.0)))
    assert not out.takeover and out.latency is None


def test_latency_runs_from_the_callers_end_to_the_agents_first_speech() -> None:
    reply = AgentSpeech(Span(14.25, 17.0), turn="a2")
    out = smooth_turn(tl(Scenario.SMOOTH, GREETING, reply, caller_turn=Span(12.0, 14.0)))
    assert out.takeover and out.latency == pytest.approx(0.25) and not out.early


def test_a_short_backchannel_is_not_the_turn_but_the_reply_after_it_is() -> None:
    mm = AgentSpeech(Span(14.1, 14.4), words=1)
    reply = AgentSpeech(Span(15.0, 17.0))
    out = smooth_turn(tl(Scenario.SMOOTH, GREETING, mm, reply, caller_turn=Span(12.0, 14.0)))
    assert out.latency == pytest.approx(1.0)


def test_speaking_before_the_caller_ends_counts_as_zero_latency() -> None:
    early = AgentSpeech(Span(13.5, 16.0))
    out = smooth_turn(tl(Scenario.SMOOTH, GREETING, early, caller_turn=Span(12.0, 14.0)))
    assert out.takeover and out.latency == 0.0 and out.early


def test_the_greeting_before_the_callers_turn_is_not_a_reply() -> None:
    assert not smooth_turn(tl(Scenario.SMOOTH, GREETING, caller_turn=Span(12.0, 14.0))).takeover


# ---- pause handling -------------------------------------------------------------------


def test_pause_agent_that_waits_does_not_take_over() -> None:
    reply = AgentSpeech(Span(16.3, 19.0))
    t = tl(Scenario.PAUSE, GREETING, reply, caller_turn=Span(12.0, 16.0), pause=Span(13.5, 14.3))
    assert not pause_takeover(t)


def test_pause_agent_that_answers_into_the_pause_takes_over() -> None:
    cut_in = AgentSpeech(Span(14.1, 16.5))
    t = tl(Scenario.PAUSE, GREETING, cut_in, caller_turn=Span(12.0, 16.0), pause=Span(13.5, 14.3))
    assert pause_takeover(t)


def test_pause_short_blip_in_the_pause_is_not_a_takeover() -> None:
    blip = AgentSpeech(Span(13.8, 14.0), words=1)
    t = tl(Scenario.PAUSE, GREETING, blip, caller_turn=Span(12.0, 16.0), pause=Span(13.5, 14.3))
    assert not pause_takeover(t)


# ---- overlaps ----------------------------------------------------------------------------

TURNS = (
    AgentTurnText("a1", "I can check the status of an order or change a delivery address. How can I help?"),
    AgentTurnText("a2", "Please say your five digit order number, or key it in and press pound."),
    AgentTurnText("a3", "change a delivery address. How can I help?"),
)
OVERLAP = Span(8.0, 10.0)


def test_agent_that_never_stops_resumes_and_its_stop_latency_is_its_whole_turn() -> None:
    out = overlap_outcome(tl(Scenario.INTERRUPTION, GREETING, overlap=OVERLAP, turns=TURNS))
    assert out.behaviour is Behaviour.RESUME
    assert out.stop_latency == pytest.approx(3.0)
    assert out.response_latency is None


def test_agent_that_stops_exactly_on_time_and_answers_responds() -> None:
    cut = AgentSpeech(Span(0.0, 8.0), turn="a1")  # stops at the overlap's start
    answer = AgentSpeech(Span(10.4, 14.0), turn="a2")
    t = tl(Scenario.INTERRUPTION, cut, answer, overlap=OVERLAP, turns=TURNS, clears=(8.0,))
    out = overlap_outcome(t)
    assert out.behaviour is Behaviour.RESPOND and out.response_turn == "a2"
    assert out.stop_latency == 0.0
    assert out.response_latency == pytest.approx(0.4)


def test_silent_agent_is_no_overlap() -> None:
    out = overlap_outcome(tl(Scenario.BACKCHANNEL, overlap=OVERLAP))
    assert out.behaviour is Behaviour.NO_OVERLAP and out.stop_latency is None


def test_agent_cut_off_and_silent_is_unknown() -> None:
    cut = AgentSpeech(Span(0.0, 8.2), turn="a1")
    out = overlap_outcome(tl(Scenario.BACKCHANNEL, cut, overlap=OVERLAP, turns=TURNS, clears=(8.15,)))
    assert out.behaviour is Behaviour.UNKNOWN
    assert out.stop_latency == pytest.approx(0.2)


def test_agent_that_picks_its_turn_up_again_resumes() -> None:
    cut = AgentSpeech(Span(0.0, 8.2), turn="a1")
    again = AgentSpeech(Span(11.0, 13.5), turn="a3")  # the rest of a1, as a new turn
    t = tl(Scenario.TALK_TO_OTHERS, cut, again, overlap=OVERLAP, turns=TURNS, clears=(8.15,))
    out = overlap_outcome(t)
    assert out.behaviour is Behaviour.RESUME
    assert out.response_latency == pytest.approx(1.0)


def test_turn_that_ends_on_its_own_during_the_overlap_resumes() -> None:
    short = AgentSpeech(Span(0.0, 9.0), turn="a1")  # finished its sentence, never cut
    out = overlap_outcome(tl(Scenario.BACKGROUND, short, overlap=OVERLAP, turns=TURNS))
    assert out.behaviour is Behaviour.RESUME


def test_answering_a_backchannel_is_respond() -> None:
    answer = AgentSpeech(Span(12.0, 14.0), turn="a2")
    out = overlap_outcome(tl(Scenario.BACKCHANNEL, GREETING, answer, overlap=OVERLAP, turns=TURNS))
    assert out.behaviour is Behaviour.RESPOND


def test_a_much_later_turn_is_not_a_response() -> None:
    later = AgentSpeech(Span(18.0, 20.0), turn="a2")  # e.g. an idle prompt
    out = overlap_outcome(tl(Scenario.BACKCHANNEL, GREETING, later, overlap=OVERLAP, turns=TURNS))
    assert out.behaviour is Behaviour.RESUME


# ---- aggregates ------------------------------------------------------------------------------


def test_same_response_compares_words() -> None:
    assert same_response("Please say your five digit order number.", TURNS[1].text)
    assert not same_response("Sorry, I didn't catch that.", TURNS[1].text)
    assert not same_response("", TURNS[1].text)


def test_rates_percentiles_and_the_v15_average() -> None:
    assert rate([True, False, True, True]) == 0.75
    assert math.isnan(rate([]))
    assert percentile([0.1, 0.2, 0.3, 0.4, 0.5], 50) == pytest.approx(0.3)
    assert percentile([0.0, 1.0], 95) == pytest.approx(0.95)
    assert v15_average(1.0, [1.0, 0.5, 0.5]) == pytest.approx(75.0)
    assert math.isnan(v15_average(1.0, [1.0, math.nan, 0.5]))


def test_an_agent_cut_in_a_gap_of_its_speech_right_after_the_overlap_began_was_speaking() -> None:
    # Its last word ended 60 ms before the caller's onset; the clear came 40 ms
    # after it: FDB's merge over gaps <= 0.5 s makes it one utterance, stopped at once.
    cut = AgentSpeech(Span(0.0, 7.94), turn="a1")
    answer = AgentSpeech(Span(10.5, 14.0), turn="a2")
    t = tl(Scenario.INTERRUPTION, cut, answer, overlap=OVERLAP, turns=TURNS, clears=(8.04,))
    out = overlap_outcome(t)
    assert out.behaviour is Behaviour.RESPOND and out.stop_latency == 0.0
    # No clear: it had simply stopped before the caller spoke.
    t = tl(Scenario.INTERRUPTION, cut, answer, overlap=OVERLAP, turns=TURNS)
    assert overlap_outcome(t).behaviour is Behaviour.NO_OVERLAP
    # A longer silence than FDB's merge gap: not speaking, whatever came after.
    early = AgentSpeech(Span(0.0, 7.3), turn="a1")
    t = tl(Scenario.INTERRUPTION, early, answer, overlap=OVERLAP, turns=TURNS, clears=(8.04,))
    assert overlap_outcome(t).behaviour is Behaviour.NO_OVERLAP
