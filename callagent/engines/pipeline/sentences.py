"""How agent text is cut into the segments synthesised and played one by one."""

from __future__ import annotations

import re

__all__ = ["split_first_clause", "split_sentences"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE.split(text)) if s]


def split_first_clause(sentence: str, min_words: int = 8) -> list[str]:
    """A long sentence cut after its first comma: the first part is synthesised
    sooner (piper's time to first audio grows with the sentence)."""
    head, sep, tail = sentence.partition(", ")
    if not sep or len(sentence.split()) < min_words or len(head.split()) < 3 or not tail:
        return [sentence]
    return [head + ",", tail]
