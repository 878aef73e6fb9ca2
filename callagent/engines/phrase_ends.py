"""Words a caller's request does not end on. Pure.

Both end-of-turn rules, the pipeline's (`pipeline.turns.completeness`) and the
duplex controller's (`duplex.policy.completeness`), wait longer in a pause
after these: the caller is mid-phrase and more is coming.

- conjunctions, prepositions, articles, possessives and fillers ("and", "to",
  "the", "my", "um");
- a verb that wants its object ("I want to track ...", "I need to change the
  ...", "can you tell me ..."): a scripted flow may already see an intent in
  "I want to track", and answering it in the caller's pause talks over the
  rest of the sentence (Full-Duplex-Bench's pause handling counts that).

Words come in split and lower-cased (each rule tokenises its own way). Each
rule keeps its own further endings: the pipeline also waits after pronouns
and floor-taking words, the duplex controller after "number".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["MID_PHRASE", "WANTS_OBJECT", "ends_mid_phrase"]

MID_PHRASE: Final = frozenset(
    "and or but so because then if that which who when while than "
    "to of for from with at in on by about into "
    "the a an my your our their his her its "
    "um umm uh uhm er erm ah hmm mm like is".split()
)
# Verbs of a contact-centre request that are not said without an object.
WANTS_OBJECT: Final = frozenset(
    "track check change update send fix tell get need want find cancel "
    "move give bring put show".split()
)
# Two-word endings that want more ("can you tell me", "let me").
_WANTS_MORE: Final = frozenset({("tell", "me"), ("show", "me"), ("give", "me"), ("let", "me"),
                                ("send", "me"), ("get", "me")})  # fmt: skip


def ends_mid_phrase(words: Sequence[str]) -> bool:
    """Do these words (split, lower-cased, non-empty) stop mid-phrase?"""
    last = words[-1]
    if last in MID_PHRASE or last in WANTS_OBJECT:
        return True
    return len(words) >= 2 and (words[-2], last) in _WANTS_MORE
