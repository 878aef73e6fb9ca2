"""PlaybackTracker: the twilio.md section 4 recipe for what the caller heard."""

from __future__ import annotations

import math

import pytest

from callagent.call import playback
from callagent.call.playback import ClearSnapshot, PlaybackTracker
from callagent.engines.base import PlaybackProgress


def _tracker_with(marks: list[tuple[str, str, float]], final: str | None = None) -> PlaybackTracker:
    t = PlaybackTracker()
    for name, turn_id, sent_ms in marks:
        t.register_mark(name, turn_id, sent_ms, final=name == final)
    return t


def test_public_names_are_pinned() -> None:
    assert playback.__all__ == ["ClearSnapshot", "PlaybackTracker"]


class TestEchoWithoutClear:
    """Recipe step 2: an echo with no clear pending means the audio was played."""

    def test_echo_advances_heard_ms_to_the_mark(self) -> None:
        t = _tracker_with([("a1", "t1", 500), ("a2", "t1", 1000), ("a3", "t1", 1400)])
        assert t.heard_ms("t1") == 0
        assert t.on_mark_echo("a1") == PlaybackProgress("t1", 500, False)
        assert t.heard_ms("t1") == 500  # not the 1400 ms sent
        assert t.sent_ms("t1") == 1400
        assert t.outstanding_marks == ("a2", "a3")

    def test_the_final_marks_echo_completes_the_turn(self) -> None:
        t = _tracker_with([("a1", "t1", 500), ("a2", "t1", 900)], final="a2")
        t.on_mark_echo("a1")
        assert not t.is_complete("t1")
        assert t.on_mark_echo("a2") == PlaybackProgress("t1", 900, True)
        assert t.is_complete("t1") and t.heard_ms("t1") == 900

    def test_without_a_final_mark_a_turn_is_never_complete(self) -> None:
        t = _tracker_with([("a1", "t1", 500)])
        t.on_mark_echo("a1")
        assert not t.is_complete("t1")

    def test_a_lost_echo_is_covered_by_a_later_one(self) -> None:
        # Playback is in order: reaching a2 means a1 played too.
        t = _tracker_with([("a1", "t1", 500), ("a2", "t1", 900)], final="a2")
        assert t.on_mark_echo("a2") == PlaybackProgress("t1", 900, True)
        assert t.outstanding_marks == ()
        assert t.on_mark_echo("a1") is None and t.unknown_echoes == 1


class TestClear:
    """Recipe step 3: echoes of marks outstanding at the clear mean NOT played."""

    def test_echoes_after_a_clear_do_not_advance(self) -> None:
        t = _tracker_with([("a1", "t1", 500), ("a2", "t1", 1000), ("a3", "t1", 1500)], final="a3")
        t.on_mark_echo("a1")
        snap = t.on_clear()
        assert snap == ClearSnapshot(("a2", "a3"), (PlaybackProgress("t1", 500, False),))
        assert t.clear_pending
        assert t.on_mark_echo("a2") is None
        assert t.on_mark_echo("a3") is None
        assert t.heard_ms("t1") == 500 and not t.is_complete("t1") and t.is_interrupted("t1")
        assert not t.clear_pending and t.unknown_echoes == 0

    def test_a_clear_with_nothing_outstanding_cancels_nothing(self) -> None:
        t = _tracker_with([("a1", "t1", 500)], final="a1")
        t.on_mark_echo("a1")
        assert t.on_clear() == ClearSnapshot((), ())
        assert t.is_complete("t1") and not t.clear_pending

    def test_marks_sent_after_the_clear_count_as_played(self) -> None:
        t = _tracker_with([("a1", "t1", 500), ("a2", "t1", 1000)])
        t.on_clear()
        t.register_mark("b1", "t2", 300, final=True)
        # A new mark's echo may even arrive before the cleared marks' echoes.
        assert t.on_mark_echo("b1") == PlaybackProgress("t2", 300, True)
        assert t.clear_pending
        assert t.on_mark_echo("a1") is None and t.on_mark_echo("a2") is None
        assert t.heard_ms("t1") == 0 and t.heard_ms("t2") == 300

    def test_a_cleared_turn_takes_no_more_marks(self) -> None:
        t = _tracker_with([("a1", "t1", 500)])
        t.on_clear()
        with pytest.raises(ValueError, match=r"^turn 't1' was cut short by a clear; drop its remaining"):
            t.register_mark("a2", "t1", 900)

    def test_a_turn_is_reported_interrupted_once(self) -> None:
        t = _tracker_with([("a1", "t1", 500)])
        assert len(t.on_clear().interrupted) == 1
        assert t.on_clear().interrupted == ()


class TestMultipleTurns:
    def test_each_turn_keeps_its_own_heard_ms(self) -> None:
        t = PlaybackTracker()
        t.register_mark("a1", "t1", 400)
        t.register_mark("a2", "t1", 800, final=True)
        t.register_mark("b1", "t2", 200)
        t.register_mark("b2", "t2", 600, final=True)
        t.on_mark_echo("a1")
        t.on_mark_echo("a2")
        t.on_mark_echo("b1")
        assert (t.heard_ms("t1"), t.is_complete("t1")) == (800, True)
        assert (t.heard_ms("t2"), t.is_complete("t2")) == (200, False)

    def test_a_clear_spanning_two_turns_cuts_both(self) -> None:
        t = PlaybackTracker()
        t.register_mark("a1", "t1", 400)
        t.register_mark("a2", "t1", 800, final=True)
        t.register_mark("b1", "t2", 200, final=True)
        t.on_mark_echo("a1")
        snap = t.on_clear()
        assert snap.cancelled_marks == ("a2", "b1")
        assert snap.interrupted == (PlaybackProgress("t1", 400, False), PlaybackProgress("t2", 0, False))
        for name in snap.cancelled_marks:
            assert t.on_mark_echo(name) is None
        assert t.heard_ms("t1") == 400 and t.heard_ms("t2") == 0


class TestUnknownEchoes:
    def test_unknown_names_are_ignored_and_counted(self) -> None:
        t = _tracker_with([("a1", "t1", 500)])
        assert t.on_mark_echo("nobody-sent-this") is None
        assert t.on_mark_echo("a1") is not None
        assert t.on_mark_echo("a1") is None  # a second echo of the same mark
        assert t.unknown_echoes == 2 and t.heard_ms("t1") == 500

    def test_unknown_turns_read_as_nothing_heard(self) -> None:
        t = PlaybackTracker()
        assert (t.heard_ms("x"), t.sent_ms("x")) == (0, 0)
        assert not t.is_complete("x") and not t.is_interrupted("x")
        assert t.progress("x") == PlaybackProgress("x", 0.0, False)
        assert t.heard_ms_estimate("x", 5.0) == 0


class TestEstimate:
    """min(ms sent, time since playback began), floored at the confirmed figure."""

    def _tracker(self) -> PlaybackTracker:
        t = PlaybackTracker()
        t.turn_playback_started("t1", 10.0)
        t.register_mark("a1", "t1", 500)
        t.register_mark("a2", "t1", 1000, final=True)
        return t

    def test_elapsed_time_fills_the_gap_between_marks(self) -> None:
        t = self._tracker()
        assert t.heard_ms_estimate("t1", 9.0) == 0
        assert t.heard_ms_estimate("t1", 10.3) == pytest.approx(300)
        assert t.heard_ms_estimate("t1", 12.0) == 1000  # capped at what was sent

    def test_never_below_the_mark_confirmed_figure(self) -> None:
        t = self._tracker()
        t.on_mark_echo("a1")
        assert t.heard_ms_estimate("t1", 10.1) == 500

    def test_a_clear_stops_the_clock(self) -> None:
        t = self._tracker()
        t.on_clear(10.4)
        assert t.heard_ms_estimate("t1", 30.0) == pytest.approx(400)
        assert t.heard_ms("t1") == 0  # the authoritative figure stays mark-based

    def test_a_clear_without_now_falls_back_to_marks(self) -> None:
        t = self._tracker()
        t.on_mark_echo("a1")
        t.on_clear()
        assert t.heard_ms_estimate("t1", 30.0) == 500

    def test_without_a_start_time_it_is_the_confirmed_figure(self) -> None:
        t = _tracker_with([("a1", "t1", 500), ("a2", "t1", 900)])
        t.on_mark_echo("a1")
        assert t.heard_ms_estimate("t1", 99.0) == 500

    def test_a_complete_turn_estimates_all_of_it(self) -> None:
        t = self._tracker()
        t.on_mark_echo("a2")
        assert t.heard_ms_estimate("t1", 10.2) == 1000

    def test_the_first_start_time_wins(self) -> None:
        t = self._tracker()
        t.turn_playback_started("t1", 11.0)
        assert t.heard_ms_estimate("t1", 10.5) == pytest.approx(500)


class TestRegistrationErrors:
    def test_a_pending_name_cannot_be_reused(self) -> None:
        t = _tracker_with([("a1", "t1", 500)])
        with pytest.raises(ValueError, match=r"^mark 'a1' is still pending; mark names must be unique$"):
            t.register_mark("a1", "t1", 600)
        t.on_clear()
        with pytest.raises(ValueError, match=r"^mark 'a1' is still pending"):
            t.register_mark("a1", "t2", 600)  # its cleared echo is still due

    def test_a_name_is_free_again_after_its_echo(self) -> None:
        t = _tracker_with([("a1", "t1", 500)])
        t.on_mark_echo("a1")
        t.register_mark("a1", "t1", 600)  # no "already pending" error
        t.on_mark_echo("a1")
        assert t.heard_ms("t1") == 600

    @pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "10", True])
    def test_sent_ms_must_be_a_finite_non_negative_number(self, bad: object) -> None:
        with pytest.raises(ValueError, match=r"^sent_ms must be a finite number >= 0, got "):
            PlaybackTracker().register_mark("a1", "t1", bad)  # type: ignore[arg-type]

    def test_sent_ms_is_cumulative_per_turn(self) -> None:
        t = _tracker_with([("a1", "t1", 500)])
        t.register_mark("b1", "t2", 100)  # another turn has its own count
        with pytest.raises(ValueError, match=r"^sent_ms for turn 't1' went backwards: 400 < 500"):
            t.register_mark("a2", "t1", 400)

    def test_nothing_after_the_final_mark(self) -> None:
        t = _tracker_with([("a1", "t1", 500)], final="a1")
        with pytest.raises(ValueError, match=r"^turn 't1' already sent its final mark$"):
            t.register_mark("a2", "t1", 600)

    def test_a_mark_needs_a_name(self) -> None:
        with pytest.raises(ValueError, match=r"^a mark name must be a non-empty str, got ''$"):
            PlaybackTracker().register_mark("", "t1", 0)
