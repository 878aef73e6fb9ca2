"""The words of an overlap: which say nothing, which take the floor. Pure.

Both overlap controllers, the pipeline's barge-in policy (`pipeline.bargein`)
and the duplex controller (`duplex.policy`), read the recogniser's words over
the agent's speech through this module:

- backchannels ("uh-huh", "yeah", "i see") say nothing: the agent talks on;
- stop words ("stop", "no", "agent") want the floor whatever else is said;
- floor words ("wait", "hold on", "excuse me") want the floor but say nothing
  yet: an utterance of nothing else is resumed over (the pipeline's rule);
- a lone "stop" in a short burst is no stop word (`bare_stop`): pocketsphinx
  hears a short "uh-huh" as "stop". A "stop" that goes on to say more, or in
  longer speech, still is.

Words come in split and lower-cased: each controller tokenises the
recogniser's text its own way.

The two controllers' vocabularies (`PIPELINE`, `DUPLEX`) differ, and are kept
as they were when this module was written:
- the pipeline removes two-word backchannels as pairs ("i see", "got it");
  the duplex controller reads word by word, so "i", "see", "got", "it" and
  "all" (of "all right") are backchannels alone;
- only the pipeline counts "hmm", "ah" and "up" as backchannels;
- the duplex controller yields at once on "hold" and "excuse"; the pipeline
  counts them as floor words;
- the pipeline's bare "stop" is the one word left once backchannels are
  removed ("yeah stop"); the duplex controller's is the only word heard.
tests/engines/test_overlap_words.py pins these differences: closing one
changes what an engine does and wants a benchmark run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["DUPLEX", "FLOOR_WORDS", "PIPELINE", "QUESTION_STARTS", "Vocabulary", "bare_stop"]

# Backchannels both controllers know.
_BACKCHANNELS = "uh-huh uh huh mm-hm mm hm mhm yeah yes yep ok okay right sure alright oh"
# Words that interrupt at once in both controllers, whatever else was said.
_STOP_WORDS = "stop wait no sorry actually agent human representative"
# Words that only take the floor: an utterance of nothing else says nothing
# yet. "stop" is one too: a bare "uh-huh" heard as "stop" is resumed over.
FLOOR_WORDS: Final = frozenset("stop wait hold hang on actually sorry excuse me".split())
# A question's first words: "can you ...", "where is ..." over the agent is a
# question for it (with three words or more), whoever's level.
QUESTION_STARTS: Final = frozenset("what when where why how who which can could is are do does "
                                   "will would".split())  # fmt: skip


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """One controller's reading of the words over the agent's speech."""

    backchannels: frozenset[str]
    pairs: frozenset[tuple[str, str]]  # two-word backchannels, removed as pairs
    stop_words: frozenset[str]  # want the floor whatever else was said

    def content(self, words: Sequence[str]) -> list[str]:
        """The words left once backchannels ("yeah", "i see") are removed."""
        out: list[str] = []
        i = 0
        while i < len(words):
            if tuple(words[i : i + 2]) in self.pairs:
                i += 2
                continue
            if words[i] not in self.backchannels:
                out.append(words[i])
            i += 1
        return out

    def says_nothing(self, words: Sequence[str]) -> bool:
        """No words, or backchannels only. A lone "i" is nothing too: it is
        the recogniser's first guess at almost any onset."""
        rest = self.content(words)
        return not rest or rest == ["i"]

    def says_nothing_yet(self, words: Sequence[str]) -> bool:
        """Nothing (`says_nothing`), or only backchannels and floor words
        ("wait", "stop"): the caller wants the floor but has said nothing."""
        rest = self.content(words)
        return all(w in FLOOR_WORDS for w in rest) or rest == ["i"]

    def has_stop_word(self, words: Sequence[str]) -> bool:
        return any(w in self.stop_words for w in words)


PIPELINE: Final = Vocabulary(
    backchannels=frozenset(f"{_BACKCHANNELS} hmm ah up".split()),
    pairs=frozenset({("i", "see"), ("got", "it")}),
    stop_words=frozenset(_STOP_WORDS.split()),
)
DUPLEX: Final = Vocabulary(
    backchannels=frozenset(f"{_BACKCHANNELS} i see got it all".split()),
    pairs=frozenset(),
    stop_words=frozenset(f"{_STOP_WORDS} excuse hold".split()),
)


def bare_stop(words: Sequence[str], speech_ms: float, short_ms: float) -> bool:
    """`words` are a lone "stop" in a burst of at most `short_ms` of speech:
    pocketsphinx's hearing of a short "uh-huh", no stop word."""
    return speech_ms <= short_ms and list(words) == ["stop"]
