"""Campaigns from the console: create from fields, import a CSV, start, pause, progress.

Uses ``campaigns.settings`` (the spec), ``campaigns.importer`` (CSV rows and row errors)
and ``campaigns.store`` (create, import, state changes, progress). Query functions take an
``AsyncSession`` and never commit.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.campaigns.importer import ContactRow, RowError, parse_contacts
from callagent.campaigns.settings import (
    CallingWindow,
    CampaignMove,
    CampaignSpec,
    CampaignSpecError,
    CampaignState,
    Purpose,
)
from callagent.campaigns.store import (
    CampaignExists,
    campaign_progress,
    change_state,
    create_campaign,
    import_rows,
)
from callagent.store.models import Campaign

__all__ = [
    "BadCampaign",
    "CampaignSummary",
    "Imported",
    "Progress",
    "UnknownCampaign",
    "create",
    "import_csv",
    "list_campaigns",
    "move",
    "parse_campaign",
    "progress",
]

_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_CSV_BYTES = 20 * 1024 * 1024
MAX_ROW_ERRORS_SHOWN = 200


class BadCampaign(ValueError):
    """A campaign field with a bad value (or a spec rule broken); the message names it."""


class UnknownCampaign(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class CampaignSummary:
    id: int
    key: str
    name: str
    state: str
    agent_profile: str
    caller_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Imported:
    imported: int
    rejected: int
    errors: list[str]          # the first MAX_ROW_ERRORS_SHOWN, "line N: reason"


@dataclass(frozen=True, slots=True)
class Progress:
    campaign: CampaignSummary
    contacts: int
    by_state: list[tuple[str, int]]
    by_outcome: list[tuple[str, int]]  # placed attempts; "in progress" until they end
    attempts: int
    skipped: list[tuple[str, int]]  # contacts skipped for good, by reason


def _int(fields: Mapping[str, object], name: str, default: int) -> int:
    raw = fields.get(name, default)
    if raw in ("", None):
        return default
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise BadCampaign(f"{name}: expected an integer, got {raw!r}")
    try:
        return int(raw)
    except ValueError:
        raise BadCampaign(f"{name}: expected an integer, got {raw!r}") from None


def _time(fields: Mapping[str, object], name: str, default: time) -> time:
    raw = fields.get(name, "")
    if raw in ("", None):
        return default
    try:
        return time.fromisoformat(str(raw))
    except ValueError:
        raise BadCampaign(f"{name}: expected a time HH:MM, got {raw!r}") from None


def parse_campaign(fields: Mapping[str, object]) -> tuple[str, CampaignSpec]:
    """(key, spec) from form or JSON fields; ``BadCampaign`` names the first bad one."""
    key = str(fields.get("key", "")).strip().lower()
    if not _KEY.fullmatch(key):
        raise BadCampaign(f"key: 1-64 characters of a-z, 0-9, '_' or '-', got {key!r}")
    try:
        purpose = Purpose(str(fields.get("purpose", "informational")))
    except ValueError:
        raise BadCampaign(f"purpose: expected informational or telemarketing, got "
                          f"{fields.get('purpose')!r}") from None
    try:
        spec = CampaignSpec(
            name=str(fields.get("name", "")),
            agent_profile=str(fields.get("agent_profile", "")),
            caller_id=str(fields.get("caller_id", "")).strip(),
            purpose=purpose,
            window=CallingWindow(_time(fields, "window_start", time(9)),
                                 _time(fields, "window_end", time(20))),
            max_concurrent_calls=_int(fields, "max_concurrent_calls", 1),
            max_attempts=_int(fields, "max_attempts", 3),
        )
    except CampaignSpecError as exc:
        raise BadCampaign(str(exc)) from None
    return key, spec


def _summary(row: Campaign) -> CampaignSummary:
    return CampaignSummary(row.id, row.key, row.name, row.state, row.agent_profile,
                           row.caller_id, row.created_at)


async def create(s: AsyncSession, key: str, spec: CampaignSpec, *, now: datetime) -> int:
    try:
        async with s.begin_nested():
            return await create_campaign(s, key, spec, now=now)
    except (IntegrityError, CampaignExists):  # checked first, and raced by the unique key
        raise BadCampaign(f"key: a campaign {key!r} already exists") from None


async def _row(s: AsyncSession, campaign_id: int) -> Campaign:
    row = await s.get(Campaign, campaign_id)
    if row is None:
        raise UnknownCampaign(f"no campaign with id {campaign_id}")
    return row


async def import_csv(s: AsyncSession, campaign_id: int, data: bytes, *, now: datetime) -> Imported:
    row = await _row(s, campaign_id)
    if len(data) > MAX_CSV_BYTES:
        raise BadCampaign(f"contacts: the file is larger than {MAX_CSV_BYTES // 2**20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadCampaign(f"contacts: not UTF-8 text (byte {exc.start})") from None
    good: list[ContactRow] = []
    errors: list[RowError] = []
    for event in parse_contacts(io.StringIO(text, newline=""), campaign_key=row.key):
        if isinstance(event, RowError):
            errors.append(event)
        else:
            good.append(event)
    imported = await import_rows(s, campaign_id, good, now=now)
    return Imported(imported, len(errors), [str(e) for e in errors[:MAX_ROW_ERRORS_SHOWN]])


async def move(s: AsyncSession, campaign_id: int, wanted: str) -> CampaignSummary:
    """``start`` (draft or paused -> running) or ``pause``; ``IllegalTransition`` otherwise."""
    row = await _row(s, campaign_id)
    if wanted == "start":
        step = CampaignMove.RESUME if row.state == CampaignState.PAUSED.value else CampaignMove.START
    elif wanted == "pause":
        step = CampaignMove.PAUSE
    else:
        raise BadCampaign(f"unknown action {wanted!r}: start or pause")
    await change_state(s, row.key, step)  # updates ``row``, the session's one copy
    return _summary(row)


async def list_campaigns(s: AsyncSession) -> list[CampaignSummary]:
    return [_summary(r) for r in await s.scalars(select(Campaign).order_by(Campaign.id.desc()))]


async def progress(s: AsyncSession, campaign_id: int, *, now: datetime) -> Progress:
    """The campaigns store's ``campaign_progress``, as the console shows it."""
    row = await _row(s, campaign_id)
    p = await campaign_progress(s, campaign_id, now=now)
    by_outcome = sorted((outcome or "in progress", n) for outcome, n in p.attempts.items())
    return Progress(_summary(row), p.total, sorted(p.contacts.items()), by_outcome,
                    sum(p.attempts.values()), sorted(p.skips.items()))
