"""The phone benchmark's parts other than the measures: caller script, labels, VAD merge,
record matching, profile rewrite, audio shaping and the scenario specs."""

from __future__ import annotations

import numpy as np
import pytest

from callagent.bench.phone import channel as ch
from callagent.bench.phone.analyze import DbTurn, merge, turn_labels
from callagent.bench.phone.runner import Recording, _Labels, heard_between
from callagent.bench.phone.scenarios import Anchor, build_specs
from callagent.bench.phone.script import FRAME, CallerScript, ScriptLimits, Stage
from callagent.bench.phone.server import profile_for
from callagent.bench.phone.timeline import Scenario, Span
from callagent.sim.playout import CallerPlayout

LOUD = np.full(FRAME, 3000, np.int16)
QUIET = np.zeros(FRAME, np.int16)


def drive(script: CallerScript, heard_at: list[tuple[float, float]], until: float,
          start: float = 0.0) -> list[np.ndarray]:  # fmt: skip
    """Feed the script 20 ms frames from ``start``; the agent is audible inside ``heard_at``."""
    out, k = [], round(start * 50)
    while k / 50 < until and not script.done:
        t = k / 50
        loud = any(a <= t < b for a, b in heard_at)
        out.append(script.frame(t, LOUD if loud else QUIET))
        k += 1
    return out


# ---- caller script --------------------------------------------------------------------


def test_after_greeting_waits_for_the_opening_then_for_silence() -> None:
    clip = np.full(FRAME * 5, 1000, np.int16)
    script = CallerScript(clip, Anchor.AFTER_GREETING, 1.0)
    drive(script, [(0.5, 6.0)], until=6.9)
    assert script.stage is Stage.WAITING  # only 0.9 s of silence so far
    drive(script, [(0.5, 6.0)], until=7.1, start=6.9)
    assert script.cue_at == pytest.approx(7.0)


def test_agent_heard_fires_a_set_time_after_the_first_audio() -> None:
    script = CallerScript(np.full(FRAME, 1000, np.int16), Anchor.AGENT_HEARD, 2.0)
    frames = drive(script, [(0.4, 30.0)], until=3.0)
    # The frame given at 0.40 s holds the audio of 0.38-0.40 s: first heard at 0.38.
    assert script.cue_at == pytest.approx(2.38)
    k = round(2.38 * 50)
    assert frames[k].max() == 1000 and frames[k - 1].max() == 0 and frames[k + 1].max() == 0


def test_the_call_ends_once_the_agent_answered_and_went_quiet() -> None:
    limits = ScriptLimits(quiet_end_s=1.0, min_tail_s=0.5, max_tail_s=20.0)
    script = CallerScript(np.full(FRAME, 1000, np.int16), Anchor.AGENT_HEARD, 0.0, limits=limits)
    drive(script, [(0.0, 1.0), (2.0, 4.0)], until=30.0)
    assert script.done
    # clip at 0.0; agent answers 2.0-4.0; quiet for 1.0 s after that.
    assert len(drive(script, [], until=1.0)) == 0


def test_an_anchor_that_never_comes_is_reported() -> None:
    limits = ScriptLimits(anchor_timeout_s=1.0, max_tail_s=0.1)
    script = CallerScript(np.full(FRAME, 1000, np.int16), Anchor.AGENT_HEARD, 5.0, limits=limits)
    drive(script, [], until=5.0)
    assert script.anchor_missed and script.done


def test_echo_is_mixed_in_at_its_gain() -> None:
    script = CallerScript(np.zeros(FRAME, np.int16), Anchor.AGENT_HEARD, 100.0, echo_gain=0.1)
    out = script.frame(0.0, QUIET, np.full(FRAME, 2000, np.int16))
    assert int(out[0]) == 200


# ---- what the caller heard, and whose turn it was ---------------------------------------


def test_heard_between_reads_the_playout_on_its_clock() -> None:
    playout = CallerPlayout()
    playout.on_media(np.full(800, 7, np.int16), 1.0)  # plays 1.0-1.1 s
    got = heard_between(playout, 0.95, 1.05)
    assert list(got[:400]) == [0] * 400 and list(got[400:]) == [7] * 400


def test_labels_name_audio_by_the_next_mark_and_a_clear_cuts_them() -> None:
    labels = _Labels()
    labels.media(0.0, 1.0)
    labels.mark("a1:1")
    labels.media(1.0, 2.0)
    labels.media(2.0, 3.0)
    labels.clear(1.5)  # the rest of a1's second sentence never gets its mark
    labels.media(1.6, 2.6)
    labels.mark("a2:1")
    assert labels.done == [(0.0, 1.0, "a1"), (1.0, 1.5, "a1"), (1.6, 2.6, "a2")]


def test_audio_cut_off_after_a_gap_stays_unnamed() -> None:
    labels = _Labels()
    labels.media(0.0, 1.0)
    labels.mark("a1:end")
    labels.media(3.0, 4.0)
    labels.clear(3.5)
    assert labels.done == [(0.0, 1.0, "a1"), (3.0, 3.5, "")]


def test_merge_joins_runs_closer_than_the_gap() -> None:
    runs = [Span(0.0, 1.0), Span(1.4, 2.0), Span(2.6, 3.0)]
    assert merge(runs, 0.5) == [Span(0.0, 2.0), Span(2.6, 3.0)]


def test_turns_play_from_their_record_until_the_next_one() -> None:
    rec = Recording("c", np.zeros(0, np.int16), np.zeros(8000 * 20, np.int16), labels=[(0.0, 1.0, "a1")])
    rows = [DbTurn(12.2, "order number please"), DbTurn(0.05, "hello")]
    labels, turns = turn_labels(rec, rows)
    assert labels == [(0.05, 12.2, "r1"), (12.2, 20.0, "r2")]
    assert [(t.turn, t.text) for t in turns] == [("r1", "hello"), ("r2", "order number please")]
    assert turn_labels(rec, []) == ([(0.0, 1.0, "a1")], [])


def test_profile_for_names_the_engine_and_backend() -> None:
    text = 'name = "x"\nengine = "pipeline"\n[stages.vad]\nkind = "two_stage"\n'
    out = profile_for(text, "duplex", "local")
    assert 'engine = "duplex"' in out
    assert '[[routing]]\narm = "bench"\nengine = "duplex"\nbackend = "local"\npercent = 100\n' in out
    assert profile_for(text, "pipeline", "") == text
    assert profile_for(out, "pipeline", "") == out  # a profile that routes itself is kept
    with pytest.raises(ValueError):
        profile_for("name = 'x'\n", "duplex", "local")


# ---- audio shaping --------------------------------------------------------------------------


def tone(hz: float, seconds: float = 1.0) -> ch.Floats:
    t = np.arange(int(seconds * ch.RATE)) / ch.RATE
    return 0.3 * np.sin(2 * np.pi * hz * t)


def test_set_level_hits_the_target_active_rms() -> None:
    x = np.concatenate([np.zeros(4000), tone(500)])
    assert ch.active_rms_db(ch.set_level(x, -25.0)) == pytest.approx(-25.0, abs=0.1)


def test_band_filter_keeps_the_band_and_cuts_outside_it() -> None:
    inside, below = ch.band_filter(tone(1000), 300, 3400), ch.band_filter(tone(60), 300, 3400)
    assert ch.active_rms_db(inside) == pytest.approx(ch.active_rms_db(tone(1000)), abs=0.5)
    assert ch.active_rms_db(below) < ch.active_rms_db(tone(60)) - 30


def test_speech_bounds_trims_silence() -> None:
    x = np.concatenate([np.zeros(800), tone(400, 0.5), np.zeros(1600)])
    a, b = ch.speech_bounds(x)
    assert (a, b) == (800, 4800)


def test_phone_line_is_mu_law_round_tripped() -> None:
    once = ch.phone_line(tone(700))
    assert np.array_equal(ch.phone_line(ch.to_float(once)), once)


# ---- scenario specs --------------------------------------------------------------------------


def test_specs_are_reproducible_and_cover_every_scenario_twenty_times() -> None:
    specs = build_specs(20)
    assert specs == build_specs(20)
    for sc in Scenario:
        mine = [s for s in specs if s.scenario is sc]
        assert len(mine) == 20
        assert len({s.voice for s in mine}) >= 4 and len({s.level_db for s in mine}) >= 3
    pauses = [s.pause_s for s in specs if s.scenario is Scenario.PAUSE]
    assert min(pauses) >= 0.4 and max(pauses) <= 1.0
    echoes = [s.echo for s in specs if s.scenario is Scenario.ECHO]
    assert all(e is not None and -22 <= e.gain_db <= -18 and 0.1 <= e.delay_s <= 0.3 for e in echoes)
    interrupts = [s for s in specs if s.scenario is Scenario.INTERRUPTION]
    assert all(s.pair.startswith(Scenario.SMOOTH.value) for s in interrupts)
    assert len({s.text for s in interrupts}) == 20


def test_quieter_talkers_are_below_the_caller() -> None:
    for s in build_specs(20, (Scenario.TALK_TO_OTHERS, Scenario.BACKGROUND)):
        assert s.side_db >= 8.0
        if s.scenario is Scenario.BACKGROUND:
            assert s.noise_db is not None and 13.0 <= s.side_db <= 17.0
