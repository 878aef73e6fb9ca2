"""The transcript word index (``transcript_terms``): tokenizing and catching up.

A turn's text is split into distinct lower-case words (letters and digits); each word
gets one row (term, turn_id, call_id). ``unindexed`` finds turns newer than the newest
indexed one and, in a window of ``RESCAN`` ids below it, turns still without rows (turns
committed out of id order by concurrent writers: PostgreSQL sequences); ``add_terms``
writes their rows, ignoring rows already there. Searches first index what is new
(bounded); a background task of the console keeps up and checks the window.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Table, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.store.models import Turn
from callagent.store.operators import TranscriptTerm

__all__ = ["MAX_TERM", "RESCAN", "add_terms", "term_rows", "terms_of", "tokenize", "unindexed"]

_WORD = re.compile(r"[^\W_]+")
MAX_TERM = 64
RESCAN = 2000


def tokenize(text: str) -> list[str]:
    """Words in order (lower-case, letters and digits only, at most MAX_TERM long)."""
    return [w[:MAX_TERM] for w in _WORD.findall(text.lower())]


def terms_of(text: str) -> set[str]:
    return set(tokenize(text))


def term_rows(turns: Iterable[tuple[int, str, str]]) -> list[dict[str, Any]]:
    """Index rows for (turn id, call id, text) triples."""
    return [
        {"term": term, "turn_id": turn_id, "call_id": call_id}
        for turn_id, call_id, text in turns
        for term in sorted(terms_of(text))
    ]


async def unindexed(
    s: AsyncSession, *, rescan: int = 0, limit: int = 2000
) -> list[tuple[int, str, str]]:
    """Turns without index rows, oldest first: those newer than the newest indexed turn
    and, within the ``rescan`` ids below it, any that were skipped. Read-only."""
    newest = await s.scalar(select(func.max(TranscriptTerm.turn_id))) or 0
    indexed = exists().where(TranscriptTerm.turn_id == Turn.id)
    rows = (await s.execute(
        select(Turn.id, Turn.call_id, Turn.text)
        .where(Turn.id > max(0, int(newest) - rescan), ~indexed)
        .order_by(Turn.id).limit(limit)
    )).all()
    return [(int(r.id), str(r.call_id), str(r.text)) for r in rows]


async def add_terms(s: AsyncSession, turns: Sequence[tuple[int, str, str]]) -> int:
    """Index these (turn id, call id, text) triples; rows already there are kept."""
    rows = term_rows(turns)
    if not rows:
        return 0
    table = cast(Table, TranscriptTerm.__table__)
    ins = postgresql.insert(table) if s.get_bind().dialect.name == "postgresql" else sqlite.insert(
        table)
    await s.execute(ins.on_conflict_do_nothing(index_elements=["term", "turn_id"]), rows)
    return len(rows)
