"""Early onsets (`engines.onset`) on hand-built frame levels."""

from __future__ import annotations

import pytest

from callagent.engines.onset import OnsetConfig, OnsetDetector


def feed(detector: OnsetDetector, frames: list[tuple[bool, float]], echo: bool = False) -> list[int]:
    """Indexes of the frames that report an onset."""
    return [i for i, (voiced, db) in enumerate(frames) if detector.frame(voiced=voiced, level_db=db, echo=echo)]


def test_voiced_sound_over_a_silent_line_is_an_onset_on_its_second_frame() -> None:
    frames = [(False, -120.0)] * 25 + [(True, -41.0), (True, -34.0), (True, -51.0)]
    assert feed(OnsetDetector(), frames)[0] == 26


def test_one_voiced_frame_is_not_an_onset() -> None:
    frames = [(False, -120.0)] * 25 + [(True, -30.0), (False, -120.0), (True, -30.0), (False, -120.0)]
    assert feed(OnsetDetector(), frames) == []


def test_sound_near_the_line_noise_floor_is_not_an_onset() -> None:
    noise = [(False, -45.0), (True, -40.0)] * 25  # webrtcvad flags some line noise
    assert feed(OnsetDetector(), noise + [(True, -38.0)] * 5) == []
    assert feed(OnsetDetector(), noise + [(True, -30.0)] * 5) == [51, 52, 53, 54]


def test_below_the_absolute_floor_is_not_an_onset() -> None:
    frames = [(False, -120.0)] * 25 + [(True, -55.0)] * 10
    assert feed(OnsetDetector(), frames) == []


def test_unvoiced_and_echo_frames_are_not_onsets() -> None:
    loud = [(False, -120.0)] * 25 + [(True, -20.0)] * 5
    assert feed(OnsetDetector(), loud, echo=True) == []
    assert feed(OnsetDetector(), [(False, db) for _, db in loud]) == []


def test_an_unconfirmed_onset_rests_the_detector() -> None:
    detector = OnsetDetector(OnsetConfig(rest_ms=200.0))
    assert feed(detector, [(False, -120.0)] * 25 + [(True, -20.0)] * 2) == [26]
    detector.unconfirmed()
    assert feed(detector, [(True, -20.0)] * 50) == []  # the rejected sound goes on: resting
    quiet = [(False, -120.0)] * 10  # 200 ms without it: the rest is over
    assert feed(detector, quiet + [(True, -20.0)] * 2) == [11]


@pytest.mark.parametrize("kwargs", [{"voiced_frames": 0}, {"margin_db": -1.0}, {"confirm_ms": 0.0},
                                    {"floor_window_ms": 40.0}, {"rest_ms": -1.0}])  # fmt: skip
def test_bad_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OnsetConfig(**kwargs)  # type: ignore[arg-type]
