"""The turns benchmark's scoring, on hand-built call logs (no server, no clock)."""

from __future__ import annotations

import numpy as np
import pytest

from callagent.audio.wavfile import read_wav
from callagent.bench.__main__ import available
from callagent.bench.turns import SCENARIOS, CallLog, Said, Step, score, speech_span, with_pause
from tests.pipeline.test_engine import AUDIO


def test_turns_is_a_registered_benchmark_with_runnable_scenarios() -> None:
    assert "turns" in available()
    for steps in SCENARIOS.values():
        for step in steps:
            assert (AUDIO / f"{step.clip}.wav").is_file()
            assert step.kind in ("answer", "over") and step.role in ("turn", "barge", "backchannel")


def test_a_pause_is_spliced_into_the_first_gap_between_words() -> None:
    clip = read_wav(AUDIO / "01_order_status.wav").samples
    paused, at = with_pause(clip, 0.6)
    assert len(paused) == len(clip) + int(0.6 * 8000)
    onset, end = speech_span(clip)
    assert onset + 0.3 <= at < end  # inside the sentence, after its first word
    assert not paused[int(at * 8000) : int((at + 0.6) * 8000)].any()
    with pytest.raises(ValueError, match="no gap"):
        with_pause(np.full(8000, 5000, dtype=np.int16), 0.5)


def test_turn_latency_is_from_the_end_of_speech_to_the_first_reply_heard() -> None:
    log = CallLog("x", said=[Said(Step("answer", "c"), 10.0, 10.2, 12.0)],
                  heard=[(1.0, 9.0), (12.3, 14.0)])  # fmt: skip
    s = score(log)
    assert s.turn_latency_s == [pytest.approx(0.3)] and s.missing_replies == 0


def test_a_reply_heard_inside_a_mid_sentence_pause_is_wrong() -> None:
    said = Said(Step("answer", "c", pause_s=0.8), 10.0, 10.2, 13.0, pause=(11.0, 11.8))
    early = score(CallLog("x", said=[said], heard=[(11.6, 12.4), (13.3, 15.0)]))
    assert early.pauses == 1 and early.wrong_replies == 1
    patient = score(CallLog("x", said=[said], heard=[(13.3, 15.0)]))
    assert patient.wrong_replies == 0 and patient.turn_latency_s == [pytest.approx(0.3)]


def test_barge_in_stop_latency_is_from_the_onset_to_the_last_agent_audio() -> None:
    said = Said(Step("over", "c", "barge"), 5.0, 5.1, 8.0)
    s = score(CallLog("x", said=[said], heard=[(2.0, 5.32)], clears=[5.3]))
    assert s.stop_latency_s == [pytest.approx(0.22)] and s.not_stopped == 0
    talked_over = score(CallLog("x", said=[said], heard=[(2.0, 9.0)]))
    assert talked_over.stop_latency_s == [] and talked_over.not_stopped == 1
    # An onset in the gap between two sentences: the next one, cut, counts.
    in_gap = score(CallLog("x", said=[said], heard=[(2.0, 4.9), (5.3, 5.35)], clears=[5.35]))
    assert in_gap.stop_latency_s == [pytest.approx(0.25)]


def test_a_backchannel_stops_the_agent_when_its_audio_pauses_for_more_than_half_a_second() -> None:
    said = Said(Step("over", "c", "backchannel"), 5.0, 5.1, 5.5)
    kept = score(CallLog("x", said=[said], heard=[(2.0, 9.0)]))
    assert (kept.backchannels, kept.wrong_stops, kept.paused) == (1, 0, 0)
    # Cut 0.2 s after onset, picked up 0.45 s later: a pause, not a stop.
    paused = score(CallLog("x", said=[said], heard=[(2.0, 5.3), (5.75, 9.0)], clears=[5.3]))
    assert (paused.wrong_stops, paused.paused) == (0, 1)
    # Picked up 1.2 s later: stopped (and resumed).
    stopped = score(CallLog("x", said=[said], heard=[(2.0, 5.3), (6.5, 9.0)], clears=[5.3]))
    assert (stopped.wrong_stops, stopped.resumed, stopped.paused) == (1, 1, 0)
    # Never picked up before the caller's next step: stopped, not resumed.
    gone = score(CallLog("x", said=[said], heard=[(2.0, 5.3)], clears=[5.3]))
    assert (gone.wrong_stops, gone.resumed) == (1, 0)
    # The agent was not audible at the onset: nothing to stop, not counted.
    silent = score(CallLog("x", said=[said], heard=[(2.0, 4.0), (7.0, 9.0)]))
    assert silent.backchannels == 0
