"""`scripts/bench vad_onsets`: the VAD's first speech frame against a clip's known onset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callagent.audio.wavfile import read_wav
from callagent.bench.vad_onsets import LEAD_S, early_onset_flags, first_speech_ms, onset_count, vad_flags
from callagent.speech.vad import SileroModel

CLIP = Path(__file__).resolve().parents[2] / "callagent" / "engines" / "fixture_audio" / "reply.wav"


def test_the_first_speech_frame_is_timed_from_the_onset_to_its_end() -> None:
    assert first_speech_ms([False] * 30 + [True] * 5, 0.5) == pytest.approx(120.0)
    assert first_speech_ms([True], 0.0) == pytest.approx(20.0)
    assert first_speech_ms([False] * 40, 0.5) is None  # never heard


def test_real_speech_is_heard_within_a_few_frames_and_silence_never() -> None:
    model = SileroModel()
    speech = read_wav(CLIP).samples
    start = int(np.flatnonzero(np.abs(speech) > 300)[0]) / 8000  # the clip's first loud sample
    ms = first_speech_ms(vad_flags(speech, model, 0.5, 3), LEAD_S + start)
    assert ms is not None and 0.0 < ms <= 200.0
    assert not any(vad_flags(np.zeros(8000, np.int16), model, 0.5, 3))


def test_the_early_onset_detector_hears_real_speech_within_two_frames_and_silence_never() -> None:
    speech = read_wav(CLIP).samples
    start = int(np.flatnonzero(np.abs(speech) > 300)[0]) / 8000
    flags = early_onset_flags(speech)
    ms = first_speech_ms(flags, LEAD_S + start)
    assert ms is not None and 0.0 < ms <= 60.0
    assert onset_count(flags) >= 1
    assert not any(early_onset_flags(np.zeros(8000, np.int16)))
    assert onset_count([False, True, True, False, True, False]) == 2
