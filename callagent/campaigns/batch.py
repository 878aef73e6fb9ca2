"""Query functions for one dialer pass over many held contacts at once.

The rules are ``store``'s single-contact ones (``open_attempt``, ``attempt_counts``,
``record_skip``, ``begin_attempt``, ``mark_placed``, ``record_place_failure``,
``withdraw_attempt``), applied to every contact of a pass in a statement or two each: a
pass of N contacts costs a few transactions instead of about five per contact. Each
function takes an ``AsyncSession`` and never commits. Rows are locked in id order,
attempts before contacts (as in ``store``), so two dialers' batches cannot deadlock.

What the dialer relies on:

* ``begin_attempts`` records every dial of the pass in ``placing`` (the caller commits it
  *before* any create: the idempotency rule of ``store.begin_attempt``), renewing each
  lease, and only for contacts this worker still holds with an unexpired lease; the others
  come back as lost and are never dialed.
* ``record_results`` writes what the creates returned. A sid is kept only on an attempt
  still in ``placing`` (like ``store.mark_placed``: one reconciled meanwhile is left as
  is). A refusal closes the attempt only while this worker still holds the contact: if
  the claim was taken over, the new holder reconciles the attempt (it finds no call and
  dials under the same key), so it is left in ``placing``. A create certainly never sent
  is withdrawn (``store.withdraw_attempt``).
* ``record_skips`` skips only contacts this worker still holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.campaigns.eligibility import SkipReason
from callagent.campaigns.settings import CallOutcome, CampaignSpec
from callagent.campaigns.store import (
    AttemptStatus,
    ContactState,
    _release,
    _schedule,
    _skip,
    spec_from_json,
    withdraw_attempt,
)
from callagent.store.models import CallAttempt, Campaign, Contact

__all__ = [
    "Attempt",
    "CreateResult",
    "NotSent",
    "Placed",
    "Refused",
    "Skip",
    "attempt_times",
    "begin_attempts",
    "counts_for",
    "open_attempts",
    "record_results",
    "record_skips",
]


@dataclass(frozen=True, slots=True)
class Attempt:
    """An attempt in ``placing``: what its create needs."""

    id: int
    contact_id: int
    idempotency_key: str
    call_id: str
    created_at: datetime

    @classmethod
    def of(cls, row: CallAttempt) -> Attempt:
        return cls(row.id, row.contact_id, row.idempotency_key, row.call_id, row.created_at)


@dataclass(frozen=True, slots=True)
class Skip:
    """A pre-dial verdict against calling: ``next_attempt_at`` None closes the contact."""

    contact_id: int
    reasons: tuple[SkipReason, ...]
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class Placed:
    """Twilio created the call."""

    attempt_id: int
    call_sid: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Twilio refused the create: no call exists."""

    attempt_id: int
    error: str


@dataclass(frozen=True, slots=True)
class NotSent:
    """The create was certainly never sent (shutdown, or the lease's deadline)."""

    attempt_id: int


CreateResult = Placed | Refused | NotSent


async def _contacts(s: AsyncSession, ids: Iterable[int]) -> dict[int, Contact]:
    """Lock and load these contacts, in id order, fresh from the database."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await s.scalars(
        select(Contact).where(Contact.id.in_(wanted)).order_by(Contact.id)
        .with_for_update().execution_options(populate_existing=True))
    return {row.id: row for row in rows}


async def open_attempts(s: AsyncSession, contact_ids: Collection[int]) -> dict[int, CallAttempt]:
    """The attempts left in ``placing`` for these contacts, by contact id (at most one each:
    a contact has one open attempt, held under its claim)."""
    if not contact_ids:
        return {}
    rows = await s.scalars(select(CallAttempt).where(
        CallAttempt.contact_id.in_(sorted(contact_ids)),
        CallAttempt.status == AttemptStatus.PLACING))
    return {row.contact_id: row for row in rows}


async def attempt_times(
    s: AsyncSession, e164s: Collection[str], *, since: datetime,
) -> dict[str, list[datetime]]:
    """Start times after ``since`` of the dials (skips excluded) to these numbers, all
    campaigns; feed ``counts_for`` (``store.attempt_counts`` for many numbers)."""
    times: dict[str, list[datetime]] = {e164: [] for e164 in e164s}
    if not times:
        return times
    rows = await s.execute(select(CallAttempt.e164, CallAttempt.created_at).where(
        CallAttempt.e164.in_(sorted(times)),
        CallAttempt.created_at > since,
        CallAttempt.status != AttemptStatus.SKIPPED))
    for e164, created_at in rows.all():
        times[e164].append(created_at)
    return times


def counts_for(
    times: Sequence[datetime], *, since_day_start: datetime, now: datetime,
) -> tuple[int, list[datetime]]:
    """What ``store.attempt_counts`` answers, from ``attempt_times``' list for the number
    (read with ``since`` at or before ``min(since_day_start, now - 1 day)``)."""
    since = min(since_day_start, now - timedelta(days=1))
    kept = [t for t in times if t > since]
    today = sum(1 for t in kept if t >= since_day_start)
    return today, [t for t in kept if t > now - timedelta(days=1)]


async def record_skips(
    s: AsyncSession, skips: Sequence[Skip], *, worker: str, now: datetime,
) -> list[Skip]:
    """``store.record_skip`` for each contact this worker still holds; returns those."""
    contacts = await _contacts(s, (k.contact_id for k in skips))
    done: list[Skip] = []
    for skip in skips:
        row = contacts.get(skip.contact_id)
        if row is None or row.state != ContactState.CLAIMED or row.claimed_by != worker:
            continue
        done.append(skip)
        _skip(s, row, skip.reasons, skip.next_attempt_at, worker=worker, now=now)
    await s.flush()
    return done


async def begin_attempts(
    s: AsyncSession, contact_ids: Sequence[int], *, worker: str, now: datetime,
    lease: timedelta,
) -> tuple[dict[int, Attempt], list[int]]:
    """``store.begin_attempt`` for many contacts: (the new ``placing`` attempts by contact
    id, the contacts no longer held by this worker with a running lease: not to dial)."""
    wanted = sorted(set(contact_ids))
    rows = {r.id: r for r in (await s.execute(
        select(Contact.id, Contact.campaign_id, Contact.e164, Contact.state,
               Contact.claimed_by, Contact.lease_until, Contact.attempts)
        .where(Contact.id.in_(wanted)).order_by(Contact.id).with_for_update())).all()
    } if wanted else {}
    new: dict[int, dict[str, Any]] = {}
    lost: list[int] = []
    for contact_id in contact_ids:
        row = rows.get(contact_id)
        if (row is None or row.state != ContactState.CLAIMED or row.claimed_by != worker
                or row.lease_until is None or row.lease_until <= now or contact_id in new):
            lost.append(contact_id)
            continue
        no = row.attempts + 1
        new[contact_id] = {
            "campaign_id": row.campaign_id, "contact_id": row.id, "attempt_no": no,
            "idempotency_key": f"{row.id}:{no}", "e164": row.e164,
            "call_id": str(uuid.uuid4()), "worker": worker, "status": AttemptStatus.PLACING,
            "created_at": now}
    if not new:
        return {}, lost
    # The rows are locked, so attempts + 1 is the number above; the whole lease covers the
    # REST create.
    await s.execute(
        update(Contact).where(Contact.id.in_(sorted(new)))
        .values(attempts=Contact.attempts + 1, lease_until=now + lease)
        .execution_options(synchronize_session=False))
    ids = dict((await s.execute(
        insert(CallAttempt).returning(CallAttempt.contact_id, CallAttempt.id),
        list(new.values()))).all())
    return {contact_id: Attempt(ids[contact_id], contact_id, v["idempotency_key"], v["call_id"],
                                now)
            for contact_id, v in new.items()}, lost


async def _specs(s: AsyncSession, campaign_ids: Iterable[int]) -> dict[int, CampaignSpec]:
    wanted = sorted(set(campaign_ids))
    if not wanted:
        return {}
    rows = await s.execute(select(Campaign.id, Campaign.spec).where(Campaign.id.in_(wanted)))
    return {cid: spec_from_json(raw) for cid, raw in rows.all()}


async def record_results(
    s: AsyncSession, results: Sequence[CreateResult], *, worker: str, now: datetime,
) -> list[int]:
    """Store what the creates returned (see the module's rules); returns the ids of the
    attempts withdrawn."""
    placed = {r.attempt_id: r.call_sid for r in results if isinstance(r, Placed)}
    refused = {r.attempt_id: r.error for r in results if isinstance(r, Refused)}
    if placed or refused:
        open_ = (await s.execute(
            select(CallAttempt.id, CallAttempt.contact_id)
            .where(CallAttempt.id.in_(sorted(placed.keys() | refused)),
                   CallAttempt.status == AttemptStatus.PLACING)
            .order_by(CallAttempt.id).with_for_update())).all()
        await _lock_contacts(s, (contact_id for _, contact_id in open_))
        calls = [(attempt_id, contact_id) for attempt_id, contact_id in open_
                 if attempt_id in placed]
        if calls:
            await s.execute(update(CallAttempt), [
                {"id": attempt_id, "call_sid": placed[attempt_id],
                 "status": AttemptStatus.PLACED, "placed_at": now}
                for attempt_id, _ in calls])
            await s.execute(
                update(Contact)
                .where(Contact.id.in_(sorted(c for _, c in calls)),
                       Contact.state == ContactState.CLAIMED)
                .values(state=ContactState.IN_CALL, claimed_by=None, lease_until=None)
                .execution_options(synchronize_session=False))
        failed = [attempt_id for attempt_id, _ in open_ if attempt_id in refused]
        if failed:
            await _record_refusals(s, {a: refused[a] for a in failed}, worker=worker, now=now)
    withdrawn: list[int] = []
    for result in results:
        if isinstance(result, NotSent) and await withdraw_attempt(
                s, result.attempt_id, worker=worker):
            withdrawn.append(result.attempt_id)
    return withdrawn


async def _lock_contacts(s: AsyncSession, ids: Iterable[int]) -> None:
    wanted = sorted(set(ids))
    if wanted:
        await s.execute(select(Contact.id).where(Contact.id.in_(wanted)).order_by(Contact.id)
                        .with_for_update())


async def _record_refusals(
    s: AsyncSession, refused: dict[int, str], *, worker: str, now: datetime,
) -> None:
    """``store.record_place_failure`` for the attempts (locked, ``placing``) whose contact
    this worker still holds."""
    attempts = list(await s.scalars(
        select(CallAttempt).where(CallAttempt.id.in_(sorted(refused)))
        .order_by(CallAttempt.id).execution_options(populate_existing=True)))
    contacts = await _contacts(s, (a.contact_id for a in attempts))
    specs = await _specs(s, (a.campaign_id for a in attempts))
    for attempt in attempts:
        contact = contacts[attempt.contact_id]
        if contact.state != ContactState.CLAIMED or contact.claimed_by != worker:
            continue        # taken over: its new holder reconciles the attempt
        attempt.status, attempt.ended_at = AttemptStatus.FAILED, now
        attempt.outcome, attempt.error = CallOutcome.FAILED.value, refused[attempt.id][:1000]
        _schedule(contact, specs[attempt.campaign_id], CallOutcome.FAILED, now)
    await s.flush()
