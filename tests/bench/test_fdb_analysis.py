"""From a recorded call to its figures: VAD on real TTS audio placed at known times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callagent.audio.wavfile import read_wav
from callagent.bench.phone.analyze import DbTurn, agent_speech, sound_edges, turn_labels, vad_runs
from callagent.bench.phone.cli import score
from callagent.bench.phone.generate import Sample
from callagent.bench.phone.runner import Recording
from callagent.bench.phone.scenarios import build_specs
from callagent.bench.phone.timeline import Scenario, Span

AUDIO = Path(__file__).resolve().parents[2] / "callagent" / "engines" / "fixture_audio"
RATE = 8000


def heard(*parts: tuple[float, str], seconds: float = 12.0) -> np.ndarray:
    out = np.zeros(int(seconds * RATE), np.int16)
    for at, name in parts:
        clip = read_wav(AUDIO / f"{name}.wav").samples
        a = int(at * RATE)
        out[a : a + len(clip)] = clip[: len(out) - a]
    return out


def sample(scenario: Scenario, speech: Span, pause: Span | None = None) -> Sample:
    spec = next(s for s in build_specs(1, (scenario,)))
    return Sample(spec, np.zeros(int(speech.end * RATE), np.int16), speech, pause)


def test_an_answer_half_a_second_after_the_caller_is_a_takeover_at_that_latency() -> None:
    # greeting 0.5-2.9 s, caller 3.5-4.5 s (cue 3.5), reply from 5.0 s.
    rec = Recording("c", np.zeros(0, np.int16), heard((0.5, "greeting"), (5.0, "reply")), cue_at=3.5)
    rows = [DbTurn(0.5, "Thank you for calling. How can I help you today?"),
            DbTurn(5.0, "Thanks, I have noted that. Is there anything else?")]  # fmt: skip
    labels, turns = turn_labels(rec, rows)
    speech = agent_speech(rec, None, labels)
    assert [a.turn for a in speech] == ["r1", "r2"]
    res = score(sample(Scenario.SMOOTH, Span(0.0, 1.0)), rec, speech, turns)
    assert res.takeover and not res.early
    assert res.latency_s == pytest.approx(0.5, abs=0.1)  # audio positions, not wall time
    assert res.response_text.startswith("Thanks, I have noted")


def test_a_reply_into_the_callers_pause_is_a_pause_takeover() -> None:
    # caller 3.0-7.0 s with a pause at 4.0-5.0 s; the agent replies at 4.3 s.
    rec = Recording("c", np.zeros(0, np.int16), heard((0.2, "greeting"), (4.3, "reply")), cue_at=3.0)
    labels, turns = turn_labels(rec, [DbTurn(0.2, "hello"), DbTurn(4.3, "noted")])
    res = score(sample(Scenario.PAUSE, Span(0.0, 4.0), Span(1.0, 2.0)), rec,
                agent_speech(rec, None, labels), turns)  # fmt: skip
    assert res.takeover is True


def test_an_agent_cut_off_by_clear_then_answering_responds() -> None:
    # greeting cut at 1.5 s by a clear (caller from 1.2 s), answer at 4.0 s.
    audio = heard((0.2, "greeting"), (4.0, "reply"))
    audio[int(1.5 * RATE) : int(4.0 * RATE)] = 0
    rec = Recording("c", np.zeros(0, np.int16), audio, clears=[1.5], cue_at=1.2)
    labels, turns = turn_labels(rec, [DbTurn(0.2, "thank you for calling"), DbTurn(4.0, "noted, anything else")])
    res = score(sample(Scenario.INTERRUPTION, Span(0.0, 1.8)), rec, agent_speech(rec, None, labels), turns)
    assert res.behaviour == "respond"
    assert res.stop_latency_s == pytest.approx(0.3, abs=0.01)  # where the heard audio stops
    assert res.response_latency_s == pytest.approx(1.0, abs=0.1)


def test_a_call_that_failed_scores_nothing() -> None:
    rec = Recording("c", np.zeros(0, np.int16), np.zeros(0, np.int16), error="media stream failed")
    res = score(sample(Scenario.SMOOTH, Span(0.0, 1.0)), rec, [], [])
    assert not res.ok and res.takeover is None


def tone(start_s: float, end_s: float, seconds: float = 3.0, dbfs: float = -20.0) -> np.ndarray:
    out = np.zeros(int(seconds * RATE), np.int16)
    a, b = int(start_s * RATE), int(end_s * RATE)
    t = np.arange(b - a) / RATE
    out[a:b] = np.round(np.sqrt(2) * 32768 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * 440 * t))
    return out


@pytest.mark.parametrize(
    ("run", "edged"),
    [
        (Span(1.02, 2.05), Span(1.0, 2.0)),  # Silero's lags: start ~20 ms, end ~50 ms
        (Span(1.0, 2.0), Span(1.0, 2.0)),  # on the sound already
        (Span(1.2, 1.8), Span(1.136, 1.8)),  # inside the sound: the end never shortened
        (Span(0.5, 2.5), Span(0.5, 2.35)),  # far off: moved at most 150 ms / 64 ms
        (Span(1.1, 2.3), Span(1.036, 2.15)),
    ],
)
def test_run_edges_move_onto_the_sound_only_by_the_vads_lag(run: Span, edged: Span) -> None:
    got = sound_edges(tone(1.0, 2.0), run)
    assert got.start == pytest.approx(edged.start, abs=0.006)
    assert got.end == pytest.approx(edged.end, abs=0.006)


def test_a_faint_tail_below_the_floor_is_silence_and_a_loud_one_is_not() -> None:
    audio = tone(1.0, 2.0) + tone(2.0, 2.1, dbfs=-60.0) + tone(2.1, 2.2, dbfs=-60.0)
    assert sound_edges(audio, Span(1.0, 2.1)).end == pytest.approx(2.0, abs=0.006)
    audio = tone(1.0, 2.0) + tone(2.0, 2.1, dbfs=-40.0)
    assert sound_edges(audio, Span(1.0, 2.12)).end == pytest.approx(2.1, abs=0.006)


def test_silero_runs_on_real_speech_end_on_the_sound_once_edged() -> None:
    # The greeting cut off mid-word by a clear at 1.5 s: Silero's run ends late.
    audio = heard((0.2, "greeting"), seconds=4.0)
    audio[int(1.5 * RATE) :] = 0
    runs = vad_runs(audio)
    assert runs and runs[-1].end > 1.5  # the VAD's lag
    assert sound_edges(audio, runs[-1]).end == pytest.approx(1.5, abs=0.006)
