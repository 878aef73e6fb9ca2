"""Early onsets (`engines.onset`) on hand-built frame levels."""

from __future__ import annotations

import pytest

from callagent.engines.onset import EarlyAction, EarlyStop, OnsetConfig, OnsetDetector


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


# ---- EarlyStop: beside a controller --------------------------------------------------


def steps(early: EarlyStop, frames: list[dict[str, bool]]) -> list[EarlyAction]:
    """One `step` per frame (20 ms apart); defaults: no onset, may stop, idle."""
    out = []
    for i, f in enumerate(frames):
        kw = {"onset": False, "may_stop": True, "stopped": False, "busy": False} | f
        out.append(early.step(20.0 * i, **kw))
    return out


def test_an_onset_stops_and_the_controller_s_own_stop_confirms_it() -> None:
    early = EarlyStop()
    frames = [{"onset": True}, {"busy": True}, {"busy": True}, {"stopped": True}, {}]
    actions = steps(early, frames)
    assert actions == [EarlyAction.STOP, EarlyAction.NONE, EarlyAction.NONE,
                       EarlyAction.CONFIRMED, EarlyAction.NONE]  # fmt: skip
    assert not early.pending


def test_an_onset_the_controller_never_takes_up_is_taken_back_and_rests() -> None:
    early = EarlyStop(OnsetConfig(confirm_ms=100.0))
    actions = steps(early, [{"onset": True}] + [{}] * 6)
    assert actions[0] is EarlyAction.STOP and early.pending is False
    assert actions[5] is EarlyAction.TAKE_BACK  # 100 ms after the onset, the controller idle
    assert all(a is EarlyAction.NONE for a in actions[1:5] + actions[6:])
    assert early.detector.resting  # early onsets rest


def test_a_stop_waits_while_the_controller_judges_speech() -> None:
    # The controller is mid-run at the deadline: its verdict decides, not the clock.
    early = EarlyStop(OnsetConfig(confirm_ms=40.0))
    actions = steps(early, [{"onset": True}] + [{"busy": True}] * 10 + [{}])
    assert actions[0] is EarlyAction.STOP
    assert actions[1:11] == [EarlyAction.NONE] * 10
    assert actions[11] is EarlyAction.TAKE_BACK  # a blip after all


def test_no_early_stop_when_it_may_not_or_the_controller_stopped_us() -> None:
    assert steps(EarlyStop(), [{"onset": True, "may_stop": False}]) == [EarlyAction.NONE]
    assert steps(EarlyStop(), [{"onset": True, "stopped": True}]) == [EarlyAction.NONE]


def test_an_onset_while_the_controller_judges_speech_stops_early_too() -> None:
    # The VAD heard a loud start first, or a backchannel-like first word holds
    # the controller's rule: the onset need not wait for it.
    early = EarlyStop(OnsetConfig(confirm_ms=40.0))
    actions = steps(early, [{"busy": True}, {"onset": True, "busy": True}, {"busy": True}, {}, {}])
    assert actions == [EarlyAction.NONE, EarlyAction.STOP, EarlyAction.NONE,
                       EarlyAction.TAKE_BACK, EarlyAction.NONE]  # 40 ms on, the controller idle
