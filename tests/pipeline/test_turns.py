"""End-of-turn rules on hand-built frame sequences (20 ms frames)."""

from __future__ import annotations

import pytest

from callagent.engines.pipeline.turns import (
    Completeness,
    TurnConfig,
    TurnDetector,
    TurnEnded,
    TurnStarted,
    completeness,
)


def run(frames: list[tuple[bool, str]], config: TurnConfig = TurnConfig()) -> list[tuple[int, object]]:
    det = TurnDetector(config)
    out: list[tuple[int, object]] = []
    for i, (speech, partial) in enumerate(frames):
        ev = det.frame(speech, partial)
        if ev is not None:
            out.append((i, ev))
    return out


def speech(ms: int, partial: str = "") -> list[tuple[bool, str]]:
    return [(True, partial)] * (ms // 20)


def silence(ms: int, partial: str = "") -> list[tuple[bool, str]]:
    return [(False, partial)] * (ms // 20)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("check the status of my order", Completeness.COMPLETE),
        ("i want to check my order and", Completeness.INCOMPLETE),
        ("can i speak to the", Completeness.INCOMPLETE),
        ("it is um", Completeness.INCOMPLETE),
        ("my account number is four five", Completeness.DIGITS),
        ("my order number is", Completeness.DIGITS),
        ("the order number", Completeness.DIGITS),
        ("", Completeness.COMPLETE),
        ("actually wait", Completeness.INCOMPLETE),
        ("no stop", Completeness.INCOMPLETE),
    ],
)
def test_completeness_reads_how_the_partial_ends(text: str, kind: Completeness) -> None:
    assert completeness(text) is kind


def test_complete_phrase_ends_after_the_short_hangover() -> None:
    events = run(silence(100) + speech(600, "check my order") + silence(1000, "check my order"))
    (i0, start), (i1, end) = events
    assert isinstance(start, TurnStarted) and start.start_ms == 100
    assert isinstance(end, TurnEnded) and end.end_ms == 700 and not end.noise
    assert (i1 + 1) * 20 - end.end_ms == 200  # default hangover <= 250 ms
    assert end.rule is Completeness.COMPLETE


def test_default_hangover_is_at_most_250_ms() -> None:
    assert TurnConfig().hangover_ms <= 250


def test_trailing_conjunction_waits_longer_and_speech_resumes_the_turn() -> None:
    frames = speech(400, "i want to check my order and") + silence(600, "i want to check my order and")
    frames += speech(400, "and change the address") + silence(400, "and change the address")
    events = run(frames)
    assert [type(e) for _, e in events] == [TurnStarted, TurnEnded]  # one turn, not two
    end = events[1][1]
    assert isinstance(end, TurnEnded) and end.end_ms == 1400


def test_digits_being_spelled_out_wait_longer_than_a_conjunction() -> None:
    cfg = TurnConfig()
    assert cfg.silence_needed_ms("four five") == cfg.digits_ms > cfg.incomplete_ms
    events = run(speech(400, "four five") + silence(1000, "four five") + speech(300, "seven two nine")
                 + silence(1300, "seven two nine"))  # fmt: skip
    assert [type(e) for _, e in events] == [TurnStarted, TurnEnded]
    end = events[1][1]
    assert isinstance(end, TurnEnded) and end.rule is Completeness.DIGITS


def test_a_short_burst_is_reported_as_noise() -> None:
    events = run(speech(40) + silence(300))
    end = events[-1][1]
    assert isinstance(end, TurnEnded) and end.noise


def test_a_very_long_turn_is_cut() -> None:
    events = run(speech(1000, "blah"), TurnConfig(max_turn_ms=600))
    ends = [(i, e) for i, e in events if isinstance(e, TurnEnded)]
    assert ends and ends[0][0] == 29


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        TurnConfig(hangover_ms=0)


def test_a_turn_that_cut_the_agent_off_survives_short_pauses() -> None:
    # "Actually wait, stop, I need to change the address." with ~300 ms pauses.
    det = TurnDetector()
    frames = speech(400, "that's all") + silence(320, "that's all") + speech(300, "that's all you")
    frames += silence(320, "that's all you") + speech(800, "need to change the address")
    frames += silence(1000, "need to change the address")
    events: list[object] = []
    for i, (s, p) in enumerate(frames):
        ev = det.frame(s, p)
        if i == 10:
            det.took_floor()  # the barge-in policy interrupted the agent here
        if ev is not None:
            events.append(ev)
    assert [type(e) for e in events] == [TurnStarted, TurnEnded]
    end = events[1]
    assert isinstance(end, TurnEnded) and end.end_ms == 2140
    # The same audio without a barge-in ends at the first pause (complete-looking text).
    assert [type(e) for _, e in run(frames)][:2] == [TurnStarted, TurnEnded]
    first_end = run(frames)[1][1]
    assert isinstance(first_end, TurnEnded) and first_end.end_ms == 400


def test_the_longer_silence_after_a_barge_in_lasts_one_turn() -> None:
    det = TurnDetector()
    for s, p in speech(200, "stop it"):
        det.frame(s, p)
    det.took_floor()
    ends = [det.frame(s, p) for s, p in silence(700, "stop it")]
    assert [i for i, e in enumerate(ends) if e is not None] == [29]  # 600 ms
    for s, p in speech(200, "check my order"):
        det.frame(s, p)
    ends = [det.frame(s, p) for s, p in silence(400, "check my order")]
    assert [i for i, e in enumerate(ends) if e is not None] == [9]  # back to 200 ms


def test_after_barge_in_silence_is_at_least_the_hangover() -> None:
    with pytest.raises(ValueError):
        TurnConfig(hangover_ms=240, after_barge_in_ms=100)
