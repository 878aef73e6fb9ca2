"""The caller-side model of Twilio's playback buffer: marks, clear, what was heard."""

import numpy as np
import pytest

from callagent.sim.playout import CallerPlayout


def tone(ms: int, value: int = 1000) -> np.ndarray:
    return np.full(8 * ms, value, dtype=np.int16)


def test_audio_queues_back_to_back_and_plays_in_real_time() -> None:
    p = CallerPlayout()
    assert p.on_media(tone(100), now=1.0) == 1.0
    assert p.on_media(tone(100), now=1.01) == pytest.approx(1.1)  # queued behind the first
    [(start, end)] = p.speech_intervals()
    assert (start, end) == (1.0, pytest.approx(1.2))


def test_mark_echoes_when_audio_before_it_has_played() -> None:
    p = CallerPlayout()
    p.on_media(tone(200), now=0.0)
    p.on_mark("m1", now=0.0)
    assert p.due_marks(0.19) == []
    assert p.due_marks(0.2) == ["m1"]
    assert p.due_marks(0.3) == []


def test_mark_with_nothing_buffered_echoes_at_once() -> None:
    p = CallerPlayout()
    p.on_mark("m1", now=5.0)
    assert p.due_marks(5.0) == ["m1"]


def test_clear_drops_unplayed_audio_and_echoes_pending_marks() -> None:
    p = CallerPlayout()
    p.on_media(tone(200), now=0.0)
    p.on_mark("m1", now=0.0)
    p.on_media(tone(200), now=0.0)
    p.on_mark("m2", now=0.0)
    assert p.on_clear(now=0.05) == ["m1", "m2"]
    assert p.due_marks(10.0) == []
    assert abs(p.dropped_ms - 350.0) < 1e-6
    heard = p.heard(until=1.0)
    assert np.count_nonzero(heard) == 8 * 50  # 50 ms played before the clear
    [(start, end)] = p.speech_intervals()
    assert (start, end) == (0.0, pytest.approx(0.05))


def test_audio_after_a_clear_plays_immediately() -> None:
    p = CallerPlayout()
    p.on_media(tone(500), now=0.0)
    p.on_clear(now=0.1)
    assert p.on_media(tone(100), now=0.2) == 0.2


def test_heard_is_silent_where_nothing_played() -> None:
    p = CallerPlayout()
    p.on_media(tone(100, value=7), now=0.5)
    heard = p.heard(until=1.0)
    assert len(heard) == 8000
    assert not heard[:4000].any() and (heard[4000:4800] == 7).all() and not heard[4800:].any()
