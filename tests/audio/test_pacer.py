"""OutboundPacer: the lead at Twilio stays within bounds; clear, restart and lateness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from callagent.audio import pacer
from callagent.audio.pacer import Frame, MarkOut, OutboundPacer

FRAME = b"\xff" * 160  # 20 ms


def _frame(i: int) -> bytes:
    return bytes([i % 256]) * 160


def _frames_of(items: list[Frame | MarkOut]) -> list[Frame]:
    return [item for item in items if isinstance(item, Frame)]


def test_public_names_are_pinned() -> None:
    assert pacer.__all__ == ["DEFAULT_LEAD_MS", "Frame", "MarkOut", "OutboundPacer"]


def test_default_lead_is_200ms() -> None:
    assert OutboundPacer().lead_ms == 200.0


@pytest.mark.parametrize("lead_ms", [20, 60, 200, 333.3, 1000])
@pytest.mark.parametrize("max_wake_delay_s", [0.0, 0.007, 0.05])
def test_lead_never_exceeds_the_configured_lead(lead_ms: float, max_wake_delay_s: float) -> None:
    # A shell that wakes late by a random amount, with frames arriving in bursts.
    rng = np.random.default_rng(int(lead_ms * 10 + max_wake_delay_s * 1000))
    p, now, pushed = OutboundPacer(lead_ms), 100.0, 0
    sent: list[bytes] = []
    while len(sent) < 300:
        if pushed < 300 and rng.random() < 0.3:
            for _ in range(int(rng.integers(1, 25))):
                if pushed < 300:
                    p.push_frame(_frame(pushed), now)
                    pushed += 1
        for item in p.due(now):
            assert isinstance(item, Frame)
            sent.append(item.ulaw)
            assert p.queued_ms(now) <= lead_ms + 1e-6
        wake = p.next_due_at(now)
        now = (now + 0.05 if wake is None else wake) + rng.random() * max_wake_delay_s
    assert sent == [_frame(i) for i in range(300)]


def test_the_first_call_sends_one_lead_then_one_frame_per_20ms() -> None:
    p = OutboundPacer(200)
    for i in range(20):
        p.push_frame(_frame(i), 5.0)
    assert len(_frames_of(p.due(5.0))) == 10
    assert p.queued_ms(5.0) == pytest.approx(200)
    assert p.next_due_at(5.0) == pytest.approx(5.02)
    assert p.due(5.019) == []
    [frame] = _frames_of(p.due(5.02))
    assert frame.ulaw == _frame(10)
    assert frame.plays_at == pytest.approx(5.2)  # right after the ten already queued


def test_frames_play_back_to_back_while_the_queue_is_fed() -> None:
    p, now = OutboundPacer(100), 0.0
    for i in range(50):
        p.push_frame(_frame(i), 0.0)
    starts = []
    while (wake := p.next_due_at(now)) is not None:
        now = wake
        starts += [f.plays_at for f in _frames_of(p.due(now))]
    assert starts == pytest.approx([0.02 * i for i in range(50)])
    assert p.late_frames == 0 and p.sent_ms == pytest.approx(1000)


def test_marks_go_out_in_order_after_the_frames_before_them() -> None:
    p = OutboundPacer(40)
    p.push_mark("start")
    for i in range(3):
        p.push_frame(_frame(i), 0.0)
        p.push_mark(f"after_{i}")
    first = p.due(0.0)
    assert first == [
        MarkOut("start", 0.0),
        first[1], MarkOut("after_0", 20.0),
        first[3], MarkOut("after_1", 40.0),
    ]
    assert p.next_due_at(0.0) == pytest.approx(0.02)
    second = p.due(0.02)
    assert [type(x) for x in second] == [Frame, MarkOut]
    assert second[1] == MarkOut("after_2", 60.0)


def test_a_mark_at_the_head_is_due_at_once() -> None:
    p = OutboundPacer()
    p.push_mark("m")
    assert p.next_due_at(3.0) == 3.0
    assert p.due(3.0) == [MarkOut("m", 0.0)]
    assert p.next_due_at(3.0) is None


def test_clear_drops_queued_frames_and_marks() -> None:
    p = OutboundPacer(200)
    for i in range(30):
        p.push_frame(_frame(i), 0.0)
        p.push_mark(f"m{i}")
    assert len(_frames_of(p.due(0.0))) == 10
    assert p.pending_ms == pytest.approx(400)
    assert p.clear(0.05) == pytest.approx(400)
    assert p.pending_ms == 0 and p.due(10.0) == [] and p.next_due_at(10.0) is None


def test_clear_resets_the_playout_clock() -> None:
    p = OutboundPacer(200)
    for i in range(10):
        p.push_frame(FRAME, 0.0)
    p.due(0.0)
    assert p.playout_position_ms(0.05) == pytest.approx(50)
    p.clear(0.05)
    # Twilio threw away the 150 ms it still held: nothing queued, position frozen.
    assert p.queued_ms(0.05) == 0
    assert p.playout_position_ms(1.0) == pytest.approx(50)
    p.push_frame(FRAME, 0.06)
    [frame] = _frames_of(p.due(0.06))
    assert frame.plays_at == 0.06 and frame.late_ms == 0
    assert p.playout_position_ms(0.07) == pytest.approx(60)
    assert p.sent_ms == pytest.approx(220)


def test_playout_restarts_from_now_when_the_agent_speaks_again() -> None:
    p = OutboundPacer(200)
    for _ in range(5):
        p.push_frame(FRAME, 1.0)
    p.due(1.0)
    assert p.queued_ms(1.05) == pytest.approx(50)
    assert p.queued_ms(1.2) == 0  # Twilio has played it all and is idle
    for _ in range(3):
        p.push_frame(FRAME, 9.0)
    sent = _frames_of(p.due(9.0))
    assert [f.plays_at for f in sent] == pytest.approx([9.0, 9.02, 9.04])
    assert p.late_frames == 0  # silence between turns is not lateness
    assert p.playout_position_ms(9.01) == pytest.approx(110)


def test_frames_handed_out_late_are_counted() -> None:
    p = OutboundPacer(200)
    for _ in range(30):
        p.push_frame(FRAME, 0.0)
    p.due(0.0)
    assert p.next_due_at(0.0) == pytest.approx(0.02)
    # The shell oversleeps by 110 ms: frames scheduled at 0.02 .. 0.12 go out at 0.13.
    late = [f.late_ms for f in _frames_of(p.due(0.13))]
    assert late == pytest.approx([110, 90, 70, 50, 30, 10])
    assert p.late_frames == 5 and p.max_late_ms == pytest.approx(110)


def test_late_threshold_is_configurable() -> None:
    p = OutboundPacer(200, late_after_ms=100)
    for _ in range(30):
        p.push_frame(FRAME, 0.0)
    p.due(0.0)
    p.due(0.13)
    assert p.late_frames == 1


def test_an_underrun_is_late_and_restarts_playout() -> None:
    p = OutboundPacer(100)
    for _ in range(10):
        p.push_frame(FRAME, 0.0)
    p.due(0.0)  # 5 frames: Twilio runs dry at 0.1
    first, *rest = _frames_of(p.due(0.5))
    assert first.late_ms == pytest.approx(480) and first.plays_at == 0.5
    assert [f.plays_at for f in rest] == pytest.approx([0.52, 0.54, 0.56, 0.58])
    assert p.queued_ms(0.5) <= 100 + 1e-6


def test_a_frame_pushed_after_its_slot_is_not_late() -> None:
    p = OutboundPacer(200)
    p.push_frame(FRAME, 0.0)
    p.due(0.0)
    p.push_frame(FRAME, 0.3)  # TTS was slow; Twilio had gone idle
    [frame] = _frames_of(p.due(0.3))
    assert frame.scheduled_at == 0.3 and frame.late_ms == 0 and p.late_frames == 0


def test_partial_frames_are_paced_by_their_length() -> None:
    p = OutboundPacer(20)
    p.push_frame(b"\xff" * 40, 0.0)  # 5 ms
    p.push_frame(FRAME, 0.0)
    assert len(p.due(0.0)) == 1
    assert p.next_due_at(0.0) == pytest.approx(0.005)


def test_next_due_at_is_none_when_nothing_is_queued() -> None:
    assert OutboundPacer().next_due_at(0.0) is None
    assert OutboundPacer().due(0.0) == []


@pytest.mark.parametrize("bad", [0, 19.99, 1000.01, -200, math.nan, math.inf])
def test_a_lead_outside_20_to_1000ms_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match=rf"^lead_ms must be between 20 and 1000 ms, got {bad!r}$"):
        OutboundPacer(bad)


@pytest.mark.parametrize("bad", ["200", True, None])
def test_a_lead_that_is_not_a_number_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"^lead_ms must be a number of milliseconds, got {bad!r}$"):
        OutboundPacer(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf])
def test_a_bad_late_threshold_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match=r"^late_after_ms must be a finite number >= 0, got "):
        OutboundPacer(late_after_ms=bad)


def test_an_empty_frame_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^a frame must hold at least one byte of mu-law audio, got 0"):
        OutboundPacer().push_frame(b"", 0.0)


def test_a_frame_longer_than_the_lead_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"^a frame of 40 ms is longer than the lead of 20 ms; cut it with FrameSplitter"
    ):
        OutboundPacer(20).push_frame(bytes(320), 0.0)


def test_a_frame_must_be_bytes() -> None:
    with pytest.raises(ValueError, match=r"^a frame must be mu-law bytes, got ndarray$"):
        OutboundPacer().push_frame(np.zeros(160, dtype=np.uint8), 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", None])
def test_a_mark_needs_a_name(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^a mark name must be a non-empty str, got "):
        OutboundPacer().push_mark(bad)  # type: ignore[arg-type]


def test_time_must_not_go_backwards() -> None:
    p = OutboundPacer()
    p.due(5.0)
    with pytest.raises(ValueError, match=r"^now must not go backwards: got 4.0 after 5.0$"):
        p.next_due_at(4.0)
    with pytest.raises(ValueError, match=r"^now must not go backwards: got nan after 5.0$"):
        p.due(math.nan)


# ---- batches -----------------------------------------------------------------


def _punctual_run(p: OutboundPacer, frames: int, start: float = 10.0) -> list[tuple[float, int]]:
    """Push ``frames`` at once and wake exactly when told: (wake time, frames sent)."""
    for i in range(frames):
        p.push_frame(_frame(i), start)
    now, passes = start, []
    while True:
        sent = _frames_of(p.due(now))
        if sent:
            passes.append((now, len(sent)))
        wake = p.next_due_at(now)
        if wake is None:
            return passes
        now = wake


def test_a_batch_of_60ms_wakes_once_per_three_frames() -> None:
    p = OutboundPacer(200, batch_ms=60)
    passes = _punctual_run(p, 100)
    assert passes[0] == (10.0, 10)  # the first pass fills the lead
    assert [n for _, n in passes[1:-1]] == [3] * (len(passes) - 2)
    gaps = np.diff([t for t, _ in passes[1:]])
    assert gaps == pytest.approx(np.full(len(gaps), 0.06))
    assert p.late_frames == 0 and p.max_late_ms == 0


def test_a_batch_of_one_frame_is_the_unbatched_pacer() -> None:
    one, batched = OutboundPacer(200), OutboundPacer(200, batch_ms=20)
    assert _punctual_run(one, 60) == _punctual_run(batched, 60)


@pytest.mark.parametrize("batch_ms", [20, 40, 60, 100])
@pytest.mark.parametrize("max_wake_delay_s", [0.0, 0.007, 0.05])
def test_batched_lead_stays_between_lead_minus_batch_and_lead(batch_ms: float, max_wake_delay_s: float) -> None:
    rng = np.random.default_rng(int(batch_ms * 7 + max_wake_delay_s * 1000))
    p, now = OutboundPacer(200, batch_ms=batch_ms), 50.0
    for i in range(400):
        p.push_frame(_frame(i), now)
    sent: list[bytes] = []
    while len(sent) < 400:
        for item in p.due(now):
            assert isinstance(item, Frame)
            sent.append(item.ulaw)
        assert p.queued_ms(now) <= 200 + 1e-6
        if max_wake_delay_s == 0 and len(sent) < 400:
            # A punctual shell never lets the lead drop below lead - batch.
            assert p.queued_ms(now) >= 200 - batch_ms - 1e-6
        wake = p.next_due_at(now)
        assert wake is not None or len(sent) == 400
        now = (wake if wake is not None else now) + rng.random() * max_wake_delay_s
    assert sent == [_frame(i) for i in range(400)]


def test_batched_lateness_is_measured_against_the_punctual_passes() -> None:
    p = OutboundPacer(200, batch_ms=60)
    for _ in range(40):
        p.push_frame(FRAME, 0.0)
    p.due(0.0)  # 10 frames: the lead is full; the next pass is due at 0.06
    assert p.next_due_at(0.0) == pytest.approx(0.06)
    frames = _frames_of(p.due(0.15))  # the shell woke 90 ms late
    # Punctual passes at 0.06 and 0.12 would have sent 3 + 3 frames; the
    # seventh fits from 0.14 on, which is the pass at 0.18: early, not late.
    assert [f.scheduled_at for f in frames] == pytest.approx([0.06] * 3 + [0.12] * 3 + [0.15] * 1)
    assert [round(f.late_ms) for f in frames] == [90, 90, 90, 30, 30, 30, 0]
    assert p.late_frames == 6


def test_a_short_utterance_goes_out_without_waiting_for_a_batch() -> None:
    p = OutboundPacer(200, batch_ms=60)
    p.push_frame(FRAME, 1.0)
    assert len(_frames_of(p.due(1.0))) == 1  # Twilio idle: plays at once
    p.push_frame(FRAME, 1.005)
    assert len(_frames_of(p.due(1.005))) == 1  # room for a batch: no wait


@pytest.mark.parametrize("lead_ms, bad", [(200, 10), (200, 100.5), (40, 30), (200, math.nan)])
def test_a_batch_outside_one_frame_to_half_the_lead_is_rejected(lead_ms: float, bad: float) -> None:
    with pytest.raises(ValueError, match=r"^batch_ms must be between 20 and "):
        OutboundPacer(lead_ms, batch_ms=bad)


@pytest.mark.parametrize("bad", ["60", True, None])
def test_a_batch_that_is_not_a_number_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^batch_ms must be a number of milliseconds, got "):
        OutboundPacer(batch_ms=bad)  # type: ignore[arg-type]


# ---- timers that fire early ----------------------------------------------------------


def _early_run(p: OutboundPacer, frames: int, early_s: float) -> tuple[int, int]:
    """A shell whose timers fire ``early_s`` before the time asked for, except
    that a wait no longer than that ends at its time (a timer for less than a
    millisecond, re-armed at once): (wake-ups, wake-ups that found nothing due)."""
    for i in range(frames):
        p.push_frame(_frame(i), 10.0)
    now, wakes, idle, sent = 10.0, 0, 0, 0
    while sent < frames:
        got = _frames_of(p.due(now))
        wakes += 1
        idle += not got
        sent += len(got)
        assert p.queued_ms(now) <= 200 + 2 + 1e-6  # the lead, plus at most early_ms
        wake = p.next_due_at(now)
        assert wake is not None or sent == frames
        if wake is not None:
            now = wake - early_s if wake - now > early_s + 1e-9 else wake
    return wakes, idle


def test_a_timer_that_fires_early_still_finds_its_pass_due() -> None:
    wakes, idle = _early_run(OutboundPacer(200, batch_ms=60, early_ms=2), 100, early_s=0.0015)
    assert idle == 0
    assert wakes == 1 + 30  # the first pass, then one per batch of three frames


def test_without_early_ms_an_early_timer_wakes_for_nothing() -> None:
    # The spin it prevents: each pass is first missed, then found a moment later.
    wakes, idle = _early_run(OutboundPacer(200, batch_ms=60), 100, early_s=0.0015)
    assert idle == 30 and wakes == 1 + 30 + 30


def test_early_ms_sends_a_pass_no_more_than_that_early() -> None:
    p = OutboundPacer(200, batch_ms=60, early_ms=2)
    for _ in range(20):
        p.push_frame(FRAME, 0.0)
    p.due(0.0)  # the lead is full; the next pass is due at 0.06
    assert _frames_of(p.due(0.0575)) == []
    frames = _frames_of(p.due(0.0585))
    assert len(frames) == 3 and p.queued_ms(0.0585) == pytest.approx(201.5)
    assert p.late_frames == 0 and p.max_late_ms == 0


@pytest.mark.parametrize("bad", [-1, 10.5, math.nan, "1", True])
def test_an_early_ms_outside_0_to_half_a_frame_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^early_ms must be between 0 and 10 ms, got "):
        OutboundPacer(early_ms=bad)  # type: ignore[arg-type]
