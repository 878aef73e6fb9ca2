"""Picking up cut speech (engines.resume): pure, no engine."""

from __future__ import annotations

import numpy as np

from callagent.audio.pcm import Pcm
from callagent.engines.resume import CutSpeech, resumption

RATE = 8000


def audio(seconds: float, value: int) -> Pcm:
    return Pcm(np.full(int(seconds * RATE), value, dtype=np.int16), RATE)


SENTENCES = [("Your order ships on Tuesday from our warehouse.", True), ("Anything else?", True)]


def cut_at(offset_ms: float, at_ms: float = 10_000.0) -> CutSpeech:
    return CutSpeech(at_ms, list(SENTENCES), [audio(2.0, 1), audio(1.0, 2)], offset_ms)


def test_a_short_pause_carries_on_mid_sentence_from_just_before_the_cut() -> None:
    r = resumption(cut_at(1120.0), now_ms=10_400.0)
    # 1000 ms of 2000 ms heard (1120 less the 120 ms back-up): the last four of eight words.
    assert r.sentences == [("Tuesday from our warehouse.", True), SENTENCES[1]]
    assert len(r.ready[0]) == RATE  # the second half of the cut sentence's audio, not synthesized
    assert (r.ready[0].samples == 1).all() and (r.ready[1].samples == 2).all()


def test_a_long_pause_restarts_the_cut_sentence_with_a_bridge() -> None:
    r = resumption(cut_at(1120.0), now_ms=12_000.0)
    assert r.sentences[0] == ("As I was saying, your order ships on Tuesday from our warehouse.", True)
    assert 0 not in r.ready and (r.ready[1].samples == 2).all()  # new words: synthesized again


def test_a_cut_at_the_very_end_of_a_sentence_goes_on_with_the_next() -> None:
    r = resumption(cut_at(5000.0), now_ms=10_300.0)  # past its audio: heard in full
    assert r.sentences == [SENTENCES[1]] and (r.ready[0].samples == 2).all()


def test_a_cut_before_the_sentence_began_replays_it_whole() -> None:
    r = resumption(cut_at(-200.0), now_ms=10_300.0)  # cut in the gap before it
    assert r.sentences == SENTENCES and len(r.ready[0]) == 2 * RATE


def test_sentences_without_audio_yet_are_left_to_synthesis() -> None:
    cut = CutSpeech(0.0, list(SENTENCES), [audio(2.0, 1)], 500.0)
    r = resumption(cut, now_ms=300.0)
    assert set(r.ready) == {0}


def test_a_resumption_cut_again_does_not_say_the_bridge_twice() -> None:
    again = CutSpeech(20_000.0, [("As I was saying, your order ships on Tuesday.", True)], [], 0.0)
    r = resumption(again, now_ms=30_000.0)
    assert r.sentences[0] == ("As I was saying, your order ships on Tuesday.", True)


def test_the_bridge_keeps_the_capital_of_i() -> None:
    for first, expected in (("I can check the status.", "As I was saying, I can check the status."),
                            ("I'm checking now.", "As I was saying, I'm checking now."),
                            ("It ships today.", "As I was saying, it ships today.")):
        r = resumption(CutSpeech(1_000.0, [(first, True)], [], 0.0), now_ms=9_000.0)
        assert r.sentences[0] == (expected, True)
