"""Loudness over the agent's speech (engines/room.py): pure, frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from callagent.engines.room import (
    ActiveLevel,
    OverlapWords,
    RoomConfig,
    RoomLevels,
    frame_dbfs,
    words_over_us,
)


def test_frame_level_is_its_mean_power() -> None:
    assert frame_dbfs(np.full(160, 32767, dtype=np.int16)) == pytest.approx(0.0, abs=0.01)
    assert frame_dbfs(np.full(160, 3277, dtype=np.int16)) == pytest.approx(-20.0, abs=0.01)
    assert frame_dbfs(np.zeros(160, dtype=np.int16)) < -100


def active(*levels_db: float) -> float | None:
    level = ActiveLevel()
    for db in levels_db:
        level.add(db)
    return level.db


def test_a_turns_active_level_is_its_frames_power_mean() -> None:
    assert active() is None and ActiveLevel().frames == 0
    assert active(-20.0, -20.0) == pytest.approx(-20.0, abs=1e-6)
    # Pauses inside the turn barely lower it (the mean of the dBFS would read -45).
    assert active(-20.0, -70.0) == pytest.approx(-23.01, abs=0.01)


def test_a_turn_far_below_a_talkers_level_is_faint() -> None:
    config = RoomConfig()
    assert config.faint_turn(-36.0)
    assert not config.faint_turn(-21.0)
    assert not config.faint_turn(None)  # no speech frames: no level to judge


@pytest.mark.parametrize(
    ("speech_ms", "level_db", "verdict"),
    [
        (1600.0, -36.0, OverlapWords.ROOMS),  # faint, however long: never answered
        (600.0, -33.0, OverlapWords.ROOMS),
        (1600.0, -32.3, OverlapWords.ROOMS),  # side talk 12 dB under a -20 dBFS caller
        (1600.0, -31.0, OverlapWords.UNSURE),  # between the lines: no re-prompt
        (1600.0, -28.3, OverlapWords.CALLERS),  # a quiet caller (-28 dBFS) interrupting
        (1600.0, -20.0, OverlapWords.CALLERS),
        (900.0, -20.0, OverlapWords.UNSURE),  # a talker's backchannel, misheard
        (1600.0, None, OverlapWords.UNSURE),  # no speech frames: nothing to judge by
    ],
)
def test_words_over_our_speech_are_judged_by_level_and_length(
    speech_ms: float, level_db: float | None, verdict: OverlapWords
) -> None:
    got = words_over_us(RoomConfig(), speech_ms=speech_ms, active_level_db=level_db, backchannel_max_ms=1200)
    assert got is verdict


def test_faint_only_before_the_caller_has_spoken() -> None:
    levels = RoomLevels()
    assert levels.faint(-40.0) and not levels.faint(-30.0) and not levels.faint(None)
    levels.caller(-40.0)
    assert not levels.faint(-40.0)  # their own level now decides
    assert levels.background(-51.0, over_us=False) and not levels.background(-45.0, over_us=True)


def test_the_rooms_floor_holds_over_our_speech_until_the_line_is_quiet() -> None:
    cfg = RoomConfig()
    levels = RoomLevels(cfg)
    levels.is_the_rooms(-40.0)
    assert levels.background(-36.0, over_us=True) and not levels.background(-36.0, over_us=False)
    assert not levels.background(-30.0, over_us=True)  # louder than the room: someone talking
    for _ in range(int(cfg.floor_quiet_ms // 20)):
        levels.frame(False)
    assert levels.floor_db is None and not levels.background(-36.0, over_us=True)


@pytest.mark.parametrize("bad", [{"faint_resume_ms": 0.0}, {"floor_quiet_ms": -1.0},
                                 {"floor_margin_db": -1.0}, {"background_margin_db": -3.0},
                                 {"talker_turn_db": -33.0}])  # fmt: skip
def test_bad_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RoomConfig(**bad)  # type: ignore[arg-type]
