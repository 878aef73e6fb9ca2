"""Query functions for audit verification and checkpoints. Each takes an
``AsyncSession`` and never commits: the caller owns the unit of work.

Appending to the chain lives in ``store.queries`` (``append_audit``,
``audit_head``); this module reads the chain in chunks and keeps the signed
checkpoints (``audit_checkpoints``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.compliance.audit import AuditRow
from callagent.compliance.checkpoint import Checkpoint
from callagent.store.models import AuditCheckpoint, AuditEvent
from callagent.store.queries import audit_head

__all__ = [
    "add_checkpoint",
    "audit_chunks",
    "audit_head",
    "stored_checkpoints",
]

_audit = cast(Table, AuditEvent.__table__)
_checkpoints = cast(Table, AuditCheckpoint.__table__)


async def add_checkpoint(session: AsyncSession, cp: Checkpoint) -> None:
    await session.execute(
        _checkpoints.insert().values(
            seq=cp.seq, hash=cp.hash, at=cp.at, key_id=cp.key_id, signature=cp.signature
        )
    )


async def stored_checkpoints(
    session: AsyncSession, *, chunk_size: int = 10_000
) -> AsyncIterator[tuple[int, Checkpoint]]:
    """Every stored checkpoint as ``(row id, checkpoint)``, in id order, unchecked."""
    c = _checkpoints.c
    after = 0
    while True:
        rows = (
            await session.execute(
                select(c.id, c.seq, c.hash, c.at, c.key_id, c.signature)
                .where(c.id > after)
                .order_by(c.id)
                .limit(chunk_size)
            )
        ).all()
        if not rows:
            return
        for r in rows:
            yield int(r.id), Checkpoint(int(r.seq), str(r.hash), r.at, str(r.key_id),
                                        str(r.signature))
        after = int(rows[-1].id)


async def audit_chunks(
    session: AsyncSession, *, chunk_size: int = 10_000
) -> AsyncIterator[Sequence[AuditRow]]:
    """The stored chain in ascending ``seq`` order, ``chunk_size`` rows at a time."""
    a = _audit.c
    cols = (a.seq, a.at, a.actor, a.action, a.call_id, a.details, a.prev_hash, a.hash)
    after: int | None = None
    while True:
        stmt = select(*cols).order_by(a.seq).limit(chunk_size)
        if after is not None:
            stmt = stmt.where(a.seq > after)
        rows = (await session.execute(stmt)).all()
        if not rows:
            return
        yield cast(Sequence[AuditRow], rows)
        after = int(rows[-1].seq)
