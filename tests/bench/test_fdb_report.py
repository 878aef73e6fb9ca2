"""The phone benchmark's summary and table, from hand-made per-sample results."""

from __future__ import annotations

import math

import pytest

from callagent.bench.phone.report import SampleResult, markdown, summarize
from callagent.bench.phone.timeline import Scenario


def r(scenario: Scenario, **kw: object) -> SampleResult:
    return SampleResult(id="x", scenario=scenario.value, text="t", **kw)  # type: ignore[arg-type]


RESULTS = [
    r(Scenario.SMOOTH, takeover=True, latency_s=0.3, early=False),
    r(Scenario.SMOOTH, takeover=True, latency_s=0.0, early=True),
    r(Scenario.SMOOTH, takeover=False),
    r(Scenario.PAUSE, takeover=True),
    r(Scenario.PAUSE, takeover=False),
    r(Scenario.INTERRUPTION, behaviour="respond", stop_latency_s=0.2, response_latency_s=0.7,
      same_as_clean=True, clears=1),
    r(Scenario.INTERRUPTION, behaviour="resume", stop_latency_s=3.0),
    r(Scenario.INTERRUPTION, behaviour="no_overlap"),  # missed its target: not in the rates
    r(Scenario.BACKCHANNEL, behaviour="resume", stop_latency_s=3.0),
    r(Scenario.TALK_TO_OTHERS, behaviour="respond", stop_latency_s=0.4, response_latency_s=1.0, clears=1),
    r(Scenario.TALK_TO_OTHERS, behaviour="resume", stop_latency_s=3.0),
    r(Scenario.BACKGROUND, behaviour="unknown", stop_latency_s=0.3, clears=1),
    r(Scenario.BACKGROUND, behaviour="resume", stop_latency_s=2.0),
    r(Scenario.ECHO, behaviour="resume", stop_latency_s=2.0),
    r(Scenario.ECHO, ok=False, error="media stream failed"),
]


def test_summary_rates_latencies_and_the_v15_average() -> None:
    s = summarize(RESULTS)
    assert s["samples"] == 15 and s["failed"] == 1
    assert s["smooth_turn_taking"]["tor"] == pytest.approx(2 / 3)
    assert s["smooth_turn_taking"]["latency_s"]["p50"] == pytest.approx(0.15)
    assert s["smooth_turn_taking"]["early"] == pytest.approx(1 / 3)
    assert s["pause_handling"]["tor"] == 0.5
    it = s["user_interruption"]
    assert (it["n"], it["missed_overlap"], it["respond"]) == (2, 1, 0.5)
    assert it["response_latency_s"]["n"] == 1 and it["same_as_clean"] == 1.0
    assert s["talking_to_others"]["resume"] == 0.5 and s["talking_to_others"]["cleared"] == 0.5
    assert s["background_speech"]["unknown"] == 0.5
    assert s["speakerphone_echo"]["n"] == 1  # the failed call is left out
    # 100 x mean(respond 0.5, resume 1.0, 0.5, 0.5)
    assert s["v15_average"] == pytest.approx(62.5)


def test_an_empty_scenario_gives_no_average() -> None:
    s = summarize([r(Scenario.SMOOTH, takeover=True, latency_s=0.2)])
    assert math.isnan(s["v15_average"]) and math.isnan(s["pause_handling"]["tor"])


def test_markdown_has_a_column_per_engine() -> None:
    table = markdown({"pipeline": summarize(RESULTS), "duplex/local": summarize(RESULTS)})
    head = table.splitlines()[0]
    assert head == "| measure | pipeline | duplex/local |"
    assert "| v1.5-style average (target >= 90 duplex, >= 80 pipeline) | 62.5 | 62.5 |" in table
    assert "n/a" not in table.split("pause handling")[0]
