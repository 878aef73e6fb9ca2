"""Picking up speech that an apparent interruption cut: pure, on the audio clock.

When caller speech over the agent proves not to be an interruption (an
"uh-huh", a cough, side talk), the agent goes on with what it was saying.
How it goes on depends on how long it was silent:

- within `continue_within_ms` (1.5 s): from just before the cut
  (`backup_ms`, so no syllable is lost), mid-sentence, replaying the audio
  already synthesized: the caller hears a pause, not a restart;
- later: from the start of the cut sentence, "As I was saying, ..." first
  (duplex-design.md, soft pause).

Both engines keep the audio of every sentence they sent until it has played,
so a resumption needs no synthesis before its first audio.
"""

from __future__ import annotations

from dataclasses import dataclass

from callagent.audio.pcm import Pcm
from callagent.engines.base import split_heard

__all__ = ["CutSpeech", "Resumption", "resumption"]

CONTINUE_WITHIN_MS = 1500.0
BACKUP_MS = 120.0
BRIDGE = "As I was saying, "

Sentence = tuple[str, bool]  # (text, interruptible)


@dataclass(frozen=True, slots=True)
class CutSpeech:
    """What an interruption cut: the sentences from the one playing at the cut."""

    at_ms: float  # the cut, on the audio clock
    sentences: list[Sentence]
    audio: list[Pcm]  # the audio of the first len(audio) sentences (already sent once)
    offset_ms: float  # how far into the first sentence's audio the cut fell


@dataclass(frozen=True, slots=True)
class Resumption:
    sentences: list[Sentence]
    ready: dict[int, Pcm]  # audio to play for those sentences, by index (others: synthesize)


def resumption(
    cut: CutSpeech,
    now_ms: float,
    *,
    continue_within_ms: float = CONTINUE_WITHIN_MS,
    backup_ms: float = BACKUP_MS,
) -> Resumption:
    """How to go on at `now_ms` with the speech `cut` stopped."""
    sentences = list(cut.sentences)
    ready = dict(enumerate(cut.audio))
    if not sentences:
        return Resumption([], {})
    first, interruptible = sentences[0]
    if now_ms - cut.at_ms <= continue_within_ms and cut.audio:
        pcm = cut.audio[0]
        from_ms = max(0.0, cut.offset_ms - backup_ms)
        _, rest = split_heard(first, from_ms, pcm.duration_ms)
        if not rest:  # the cut fell at its very end: it was heard
            return Resumption(sentences[1:], {i - 1: a for i, a in ready.items() if i})
        sentences[0] = (rest, interruptible)
        ready[0] = Pcm(pcm.samples[int(from_ms * pcm.rate / 1000) :], pcm.rate)
        return Resumption(sentences, ready)
    sentences[0] = (_bridged(first), interruptible)
    ready.pop(0, None)  # new words: synthesized again
    return Resumption(sentences, ready)


def _bridged(sentence: str) -> str:
    """``sentence`` after the bridge, once: a resumption cut before any of it was
    heard starts from the bridged sentence, which must not say it twice."""
    if sentence.startswith(BRIDGE):
        return sentence
    word = sentence.split(" ", 1)[0]
    # "I", "I'm", "I'll" keep their capital; the first word of anything else is lowered.
    keep = word == "I" or word.startswith("I'")
    return f"{BRIDGE}{sentence if keep else sentence[:1].lower() + sentence[1:]}"
