"""The words of an overlap (engines/overlap_words.py), read by both controllers."""

from __future__ import annotations

import pytest

from callagent.engines.overlap_words import DUPLEX, FLOOR_WORDS, PIPELINE, Vocabulary, bare_stop

BOTH = pytest.mark.parametrize("vocab", [PIPELINE, DUPLEX], ids=["pipeline", "duplex"])


@BOTH
@pytest.mark.parametrize("words", [[], ["uh-huh"], ["yeah", "okay"], ["mm-hm", "right"], ["i"]])
def test_backchannels_and_a_lone_i_say_nothing(vocab: Vocabulary, words: list[str]) -> None:
    assert vocab.says_nothing(words)


@BOTH
@pytest.mark.parametrize("words", [["i", "need"], ["yeah", "but"], ["wait"], ["stop"]])
def test_any_other_word_says_something(vocab: Vocabulary, words: list[str]) -> None:
    assert not vocab.says_nothing(words)


@BOTH
@pytest.mark.parametrize("word", ["stop", "wait", "no", "sorry", "actually", "agent", "human",
                                  "representative"])  # fmt: skip
def test_stop_words_want_the_floor_in_both_controllers(vocab: Vocabulary, word: str) -> None:
    assert vocab.has_stop_word(["yeah", word])


def test_backchannel_pairs_go_as_pairs() -> None:
    assert PIPELINE.content(["i", "see", "got", "it"]) == []
    assert PIPELINE.content(["i", "got", "this"]) == ["i", "got", "this"]
    assert DUPLEX.content(["i", "see", "got", "it"]) == []  # word by word


def test_floor_words_say_nothing_yet_but_are_no_backchannels() -> None:
    words = ["yeah", "hang", "on", "excuse", "me"]
    assert PIPELINE.says_nothing_yet(words) and not PIPELINE.says_nothing(words)
    assert not PIPELINE.says_nothing_yet(["wait", "i", "need"])
    assert PIPELINE.says_nothing_yet(["i"]) and PIPELINE.says_nothing_yet([])
    assert FLOOR_WORDS >= {"stop", "wait", "hold", "actually"}


def test_a_lone_stop_in_a_short_burst_is_an_uh_huh() -> None:
    assert bare_stop(["stop"], 300.0, 600.0) and bare_stop(["stop"], 600.0, 600.0)


@pytest.mark.parametrize(("words", "speech_ms"), [(["stop"], 620.0), (["stop", "it"], 300.0),
                                                  (["wait"], 300.0), ([], 300.0)])  # fmt: skip
def test_a_stop_in_longer_speech_or_with_more_words_is_no_bare_stop(
    words: list[str], speech_ms: float
) -> None:
    assert not bare_stop(words, speech_ms, 600.0)


def test_the_controllers_vocabularies_differ_only_where_pinned() -> None:
    # Kept as they were when the module was written: closing a gap changes an
    # engine's behaviour (benchmark it), and this test must change with it.
    assert PIPELINE.backchannels - DUPLEX.backchannels == {"hmm", "ah", "up"}
    assert DUPLEX.backchannels - PIPELINE.backchannels == {"i", "see", "got", "it", "all"}
    assert PIPELINE.pairs == {("i", "see"), ("got", "it")} and not DUPLEX.pairs
    assert DUPLEX.stop_words - PIPELINE.stop_words == {"excuse", "hold"}
    assert PIPELINE.stop_words <= DUPLEX.stop_words
