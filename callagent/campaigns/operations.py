"""Campaign operations as units of work: create, import, start, pause, status.

What ``callagent campaign ...`` (``commands.py``) and the console's JSON API call:
create, import, start (or resume), pause, finish, status. Each
function owns its transactions (the store's query functions never commit) and appends an
audit event in the same transaction as the change it records (actor: who asked, e.g.
``cli:alice``). Errors are the store's and the spec's: ``UnknownCampaign``,
``CampaignExists``, ``IllegalTransition``, ``CampaignSpecError``, ``ImportRefused``.

An import reads the CSV once (``importer.parse_contacts``) and commits every ``chunk`` good
rows, so a 100,000-row file never sits in one transaction and a failed import is finished by
running it again (importing is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.call.records import AuditRecord
from callagent.campaigns import store
from callagent.campaigns.importer import (
    ContactRow,
    ImportProgress,
    RowError,
    RowProblem,
    parse_contacts,
)
from callagent.campaigns.settings import (
    CampaignMove,
    CampaignSpec,
    CampaignState,
    IllegalTransition,
    transition,
)
from callagent.campaigns.store import CampaignProgress, StoredCampaign
from callagent.store.queries import append_audit

__all__ = [
    "ImportRefused",
    "ImportReport",
    "create",
    "finish",
    "import_csv",
    "pause",
    "start",
    "status",
]


class ImportRefused(Exception):
    """Nothing can be imported (a finished campaign, or a file without a usable header)."""


@dataclass(frozen=True, slots=True)
class ImportReport:
    campaign: StoredCampaign
    records: int                 # data records read
    good: int                    # rows that passed every rule
    added: int                   # new contacts (good rows already imported are not added)
    errors: tuple[RowError, ...]  # every bad row, in file order

    @property
    def already_present(self) -> int:
        return self.good - self.added


async def _audit(s: AsyncSession, action: str, actor: str, now: datetime,
                 details: dict[str, Any]) -> None:
    await append_audit(s, [AuditRecord(action=action, actor=actor, at=now, details=details)])


async def create(
    sessions: async_sessionmaker[AsyncSession], key: str, spec: CampaignSpec, *,
    actor: str, now: datetime,
) -> StoredCampaign:
    """A new ``draft`` campaign."""
    async with sessions.begin() as s:
        await store.create_campaign(s, key, spec, now=now)
        campaign = await store.campaign_by_key(s, key)
        await _audit(s, "campaign.created", actor, now,
                     {"campaign": key, "spec": store.spec_to_json(spec)})
    return campaign


async def _move(
    sessions: async_sessionmaker[AsyncSession], key: str, moves: Sequence[CampaignMove], *,
    actor: str, now: datetime,
) -> StoredCampaign:
    async with sessions.begin() as s:
        current = await store.campaign_by_key(s, key)
        move = moves[0]
        for candidate in moves:     # the first move the state allows (start = start|resume)
            try:
                transition(current.state, candidate)
            except IllegalTransition:
                continue
            move = candidate
            break
        campaign = await store.change_state(s, key, move)
        await _audit(s, f"campaign.{move.value}", actor, now,
                     {"campaign": key, "from": current.state.value, "to": campaign.state.value})
    return campaign


async def start(sessions: async_sessionmaker[AsyncSession], key: str, *, actor: str,
                now: datetime) -> StoredCampaign:
    """``draft -> running`` or ``paused -> running`` (``IllegalTransition`` otherwise)."""
    return await _move(sessions, key, (CampaignMove.START, CampaignMove.RESUME), actor=actor,
                       now=now)


async def pause(sessions: async_sessionmaker[AsyncSession], key: str, *, actor: str,
                now: datetime) -> StoredCampaign:
    """``running -> paused``: dialers stop claiming its contacts; calls under way go on."""
    return await _move(sessions, key, (CampaignMove.PAUSE,), actor=actor, now=now)


async def finish(sessions: async_sessionmaker[AsyncSession], key: str, *, actor: str,
                 now: datetime) -> StoredCampaign:
    """``running|paused -> finished`` (for good: no more calls, no more imports). Calls under
    way end and are recorded as usual; contacts not yet called stay as they are."""
    return await _move(sessions, key, (CampaignMove.FINISH,), actor=actor, now=now)


async def import_csv(
    sessions: async_sessionmaker[AsyncSession], key: str, lines: Iterable[str], *,
    actor: str, now: datetime, default_region: str = "US", chunk: int = 2000,
    on_progress: Callable[[ImportProgress], None] | None = None,
) -> ImportReport:
    """Import a CSV's good rows, report every bad one (see ``importer.py`` for the rules)."""
    async with sessions() as s:
        campaign = await store.campaign_by_key(s, key)
    if campaign.state is CampaignState.FINISHED:
        raise ImportRefused(f"campaign {key!r} is finished: nothing can be added to it")
    errors: list[RowError] = []
    batch: list[ContactRow] = []
    good = added = records = 0

    async def flush() -> int:
        if not batch:
            return 0
        async with sessions.begin() as s:
            count = await store.import_rows(s, campaign.id, batch, now=now)
        batch.clear()
        return count

    def progress(p: ImportProgress) -> None:
        nonlocal records
        records = p.records
        if on_progress is not None:
            on_progress(p)

    for item in parse_contacts(lines, campaign_key=key, default_region=default_region,
                               on_progress=progress):
        if isinstance(item, RowError):
            if item.reason in (RowProblem.NO_HEADER, RowProblem.BAD_HEADER):
                raise ImportRefused(str(item))
            errors.append(item)
            continue
        good += 1
        batch.append(item)
        if len(batch) >= chunk:
            added += await flush()
    added += await flush()
    async with sessions.begin() as s:
        await _audit(s, "campaign.imported", actor, now, {
            "campaign": key, "records": records, "good": good, "added": added,
            "rejected": len(errors),
        })
    return ImportReport(campaign, records, good, added, tuple(errors))


async def status(
    sessions: async_sessionmaker[AsyncSession], key: str | None = None, *, now: datetime,
) -> list[CampaignProgress]:
    """Progress of one campaign, or of every campaign (newest first)."""
    async with sessions() as s:
        if key is not None:
            ids = [(await store.campaign_by_key(s, key)).id]
        else:
            ids = await store.campaign_ids(s)
        return [await store.campaign_progress(s, cid, now=now) for cid in ids]
