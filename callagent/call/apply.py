"""Writes a batch of call records: the store's kinds and the compliance kinds, in order.

``store.queries.apply_records`` knows the call, turn, tool-call, metric and
audit records; do-not-call entries and recording links are written here, in
the same transaction and in submission order (so an opt-out is on the list
no later than the call's close).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, update
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.call.records import CallEngineChosen, DncAdded, Record, RecordingSaved
from callagent.campaigns.eligibility import DncList
from callagent.campaigns.store import add_dnc
from callagent.store import queries
from callagent.store.models import Call

__all__ = ["apply_all"]

_calls = cast(Table, Call.__table__)
_MINE = (DncAdded, RecordingSaved, CallEngineChosen)


async def apply_all(
    session: AsyncSession, records: Sequence[Record], keys: Sequence[str | None]
) -> None:
    if len(keys) != len(records):
        raise ValueError("apply_all: keys and records differ in length")
    pairs = list(zip(records, keys))
    for mine, group in itertools.groupby(pairs, key=lambda rk: isinstance(rk[0], _MINE)):
        items = list(group)
        if not mine:
            await queries.apply_records(session, [r for r, _ in items], keys=[k for _, k in items])
            continue
        for record, _ in items:
            if isinstance(record, DncAdded):
                await add_dnc(session, [record.e164], DncList.INTERNAL, now=record.at)
            elif isinstance(record, RecordingSaved):
                result = await session.execute(
                    update(_calls).where(_calls.c.id == record.call_id)
                    .values(recording_path=record.path, recording_policy=record.policy)
                )
                if cast(Any, result).rowcount == 0:
                    raise queries.UnknownCall(record.call_id)
            elif isinstance(record, CallEngineChosen):
                result = await session.execute(
                    update(_calls).where(_calls.c.id == record.call_id)
                    .values(engine=record.engine[:64])
                )
                if cast(Any, result).rowcount == 0:
                    raise queries.UnknownCall(record.call_id)
