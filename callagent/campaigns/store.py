"""Campaign query functions: each takes an ``AsyncSession`` and never commits.

Rules the dialer relies on (see ``dialer.py`` for the loop):

* **Claim** (``claim_due_contacts``): one transaction per campaign. On PostgreSQL it first
  takes ``pg_advisory_xact_lock(CLAIM_LOCK_CLASS, campaign_id)``, so every dialer's cap
  check for a campaign is serialized; then it counts the contacts *in flight*
  (``claimed`` or ``in_call``) and claims at most ``cap - in_flight`` due ``pending``
  contacts with ``SELECT ... FOR UPDATE SKIP LOCKED``, setting ``claimed_by`` and
  ``lease_until``. On SQLite the engine's ``BEGIN IMMEDIATE`` serializes the whole
  transaction (one dialer is supported). The cap therefore holds across processes: a slot
  is taken in the same transaction that counts, and freed only when the outcome is stored.
* **Lease**: a ``claimed`` contact whose ``lease_until`` passed belongs to a dead (or
  stuck) dialer; ``reclaim_expired`` hands it to the caller with a fresh lease (SKIP
  LOCKED, so two recoverers never take the same one). Its open ``placing`` attempt, if
  any, must be reconciled before anything is dialed (``dialer.py``).
* **Idempotency**: ``begin_attempt`` (only while this worker's lease runs; it renews it)
  inserts the attempt row (unique
  ``idempotency_key`` = ``"<contact id>:<attempt no>"`` and unique (contact, attempt no))
  in state ``placing`` and is committed *before* the REST call; a second dialer can
  never create the same attempt again.

``batch.py`` applies the attempt rules to a whole dialer pass in a few statements.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Final, Protocol

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.campaigns.eligibility import DncList, InMemoryDnc, SkipReason
from callagent.campaigns.importer import ConsentType, ContactRow
from callagent.campaigns.settings import (
    CallingWindow,
    CallOutcome,
    CampaignMove,
    CampaignSpec,
    CampaignState,
    Purpose,
    RetryDelays,
    VoicemailPolicy,
    Weekday,
    transition,
)
from callagent.store.models import (
    AmdVerdict,
    CallAttempt,
    CallStatusEvent,
    Campaign,
    Contact,
    DncNumber,
)

__all__ = [
    "AttemptStatus",
    "CLAIM_LOCK_CLASS",
    "CampaignExists",
    "CampaignProgress",
    "ClaimedContact",
    "ContactState",
    "IN_FLIGHT",
    "LostClaim",
    "StoredCampaign",
    "TERMINAL_CALL_STATUSES",
    "UnknownCampaign",
    "add_dnc",
    "answered_by_of",
    "apply_status_events",
    "attempt_counts",
    "begin_attempt",
    "campaign_by_key",
    "campaign_ids",
    "campaign_outcome",
    "campaign_progress",
    "change_state",
    "claim_due_contacts",
    "create_campaign",
    "import_rows",
    "known_call_sids",
    "load_dnc",
    "mark_placed",
    "open_attempt",
    "outcome_of",
    "pending_work",
    "reclaim_expired",
    "record_attempt_outcome",
    "record_place_failure",
    "record_skip",
    "release_claim",
    "release_worker_claims",
    "renew_lease",
    "running_campaigns",
    "spec_from_json",
    "spec_to_json",
    "stale_placed_attempts",
    "withdraw_attempt",
]

CLAIM_LOCK_CLASS: Final = 0x43414D50   # "CAMP": pg_advisory_xact_lock(class, campaign_id)
TERMINAL_CALL_STATUSES: Final = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


class ContactState:
    PENDING: Final = "pending"
    CLAIMED: Final = "claimed"
    IN_CALL: Final = "in_call"
    DONE: Final = "done"
    SKIPPED: Final = "skipped"


class AttemptStatus:
    PLACING: Final = "placing"
    PLACED: Final = "placed"
    ENDED: Final = "ended"
    FAILED: Final = "failed"     # the REST create was refused
    SKIPPED: Final = "skipped"


IN_FLIGHT: Final = (ContactState.CLAIMED, ContactState.IN_CALL)


class UnknownCampaign(LookupError):
    """No campaign has this key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no campaign with key {key!r}")
        self.key = key


class CampaignExists(ValueError):
    """A campaign with this key already exists (keys are unique)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"a campaign with key {key!r} already exists")
        self.key = key


class LostClaim(Exception):
    """The contact is no longer claimed by this worker (its lease expired and another
    dialer took it over): do not dial."""


# --- campaign spec <-> JSON ----------------------------------------------------------------

def spec_to_json(spec: CampaignSpec) -> str:
    d = spec.retry_delays
    return json.dumps({
        "name": spec.name,
        "agent_profile": spec.agent_profile,
        "caller_id": spec.caller_id,
        "purpose": spec.purpose.value,
        "window": [spec.window.start.isoformat(), spec.window.end.isoformat()],
        "allowed_days": sorted(int(day) for day in spec.allowed_days),
        "max_concurrent_calls": spec.max_concurrent_calls,
        "max_attempts": spec.max_attempts,
        "max_attempts_per_day": spec.max_attempts_per_day,
        "retry_delays_s": {o.value: d.after(o).total_seconds() for o in CallOutcome},
        "voicemail": spec.voicemail.value,
        "voicemail_message": spec.voicemail_message,
        "ring_timeout_s": spec.ring_timeout_s,
        "honor_national_dnc": spec.honor_national_dnc,
    }, sort_keys=True)


def spec_from_json(raw: str) -> CampaignSpec:
    d: dict[str, Any] = json.loads(raw)
    delays = {k: timedelta(seconds=float(v)) for k, v in d["retry_delays_s"].items()}
    return CampaignSpec(
        name=d["name"],
        agent_profile=d["agent_profile"],
        caller_id=d["caller_id"],
        purpose=Purpose(d["purpose"]),
        window=CallingWindow(time.fromisoformat(d["window"][0]), time.fromisoformat(d["window"][1])),
        allowed_days=frozenset(Weekday(day) for day in d["allowed_days"]),
        max_concurrent_calls=int(d["max_concurrent_calls"]),
        max_attempts=int(d["max_attempts"]),
        max_attempts_per_day=int(d["max_attempts_per_day"]),
        retry_delays=RetryDelays(**delays),
        voicemail=VoicemailPolicy(d["voicemail"]),
        voicemail_message=d["voicemail_message"],
        ring_timeout_s=int(d["ring_timeout_s"]),
        honor_national_dnc=bool(d["honor_national_dnc"]),
    )


@dataclass(frozen=True, slots=True)
class StoredCampaign:
    id: int
    key: str
    state: CampaignState
    spec: CampaignSpec


def _stored(row: Campaign) -> StoredCampaign:
    return StoredCampaign(row.id, row.key, CampaignState(row.state), spec_from_json(row.spec))


async def create_campaign(
    s: AsyncSession, key: str, spec: CampaignSpec, *, now: datetime,
    state: CampaignState = CampaignState.DRAFT,
) -> int:
    """Insert a campaign (``draft`` unless told); returns its id. ``CampaignExists`` if the
    key is taken."""
    if not key.strip() or len(key) > 64:
        raise ValueError(f"campaign key must be 1-64 characters, got {key!r}")
    if await s.scalar(select(Campaign.id).where(Campaign.key == key)) is not None:
        raise CampaignExists(key)
    row = Campaign(
        key=key, name=spec.name, agent_profile=spec.agent_profile, caller_id=spec.caller_id,
        state=state.value, max_concurrent_calls=spec.max_concurrent_calls,
        spec=spec_to_json(spec), created_at=now,
    )
    s.add(row)
    await s.flush()
    return row.id


async def campaign_by_key(s: AsyncSession, key: str) -> StoredCampaign:
    """The campaign with this key; ``UnknownCampaign`` if there is none."""
    row = await s.scalar(select(Campaign).where(Campaign.key == key))
    if row is None:
        raise UnknownCampaign(key)
    return _stored(row)


async def change_state(s: AsyncSession, key: str, move: CampaignMove) -> StoredCampaign:
    """Apply a lifecycle move (``settings.transition``: ``IllegalTransition`` names the
    state and the move). Returns the campaign in its new state. Claims already held by a
    dialer are given back by it at its next pass (``release_claim``)."""
    row = await s.scalar(select(Campaign).where(Campaign.key == key).with_for_update())
    if row is None:
        raise UnknownCampaign(key)
    row.state = transition(CampaignState(row.state), move).value
    await s.flush()
    return _stored(row)


async def finish_done_campaigns(s: AsyncSession) -> list[str]:
    """Running campaigns with contacts, none of them pending, claimed or in a call,
    become ``finished``; returns their keys. One conditional UPDATE, so dialers
    racing over it finish each campaign once."""
    open_contacts = select(Contact.id).where(
        Contact.campaign_id == Campaign.id,
        Contact.state.in_((ContactState.PENDING, *IN_FLIGHT)),
    ).exists()
    any_contact = select(Contact.id).where(Contact.campaign_id == Campaign.id).exists()
    result = await s.execute(
        update(Campaign)
        .where(Campaign.state == CampaignState.RUNNING.value, ~open_contacts, any_contact)
        .values(state=CampaignState.FINISHED.value)
        .returning(Campaign.key)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def campaign_ids(s: AsyncSession) -> list[int]:
    """Every campaign's id, newest first."""
    return list(await s.scalars(select(Campaign.id).order_by(Campaign.id.desc())))


async def running_campaigns(s: AsyncSession) -> list[StoredCampaign]:
    rows = await s.scalars(
        select(Campaign).where(Campaign.state == CampaignState.RUNNING.value).order_by(Campaign.id)
    )
    return [_stored(r) for r in rows]


# --- import ----------------------------------------------------------------------------------

async def import_rows(
    s: AsyncSession, campaign_id: int, rows: Iterable[ContactRow], *, now: datetime,
    batch_size: int = 500,
) -> int:
    """Insert-or-ignore on ``dedupe_key``, ``batch_size`` rows per statement.

    Returns the number of new contacts; importing the same rows again adds none."""
    dialect = s.get_bind().dialect.name
    inserted = 0
    batch: list[dict[str, Any]] = []

    async def flush() -> int:
        if not batch:
            return 0
        ins = postgresql.insert(Contact) if dialect == "postgresql" else sqlite.insert(Contact)
        stmt = ins.values(batch).on_conflict_do_nothing(index_elements=["dedupe_key"])
        result = await s.execute(stmt.returning(Contact.id))
        count = len(result.all())
        batch.clear()
        return count

    for row in rows:
        batch.append({
            "campaign_id": campaign_id,
            "dedupe_key": row.dedupe_key,
            "e164": row.e164,
            "name": row.name,
            "timezones": json.dumps(list(row.timezones)),
            "consent_type": row.consent_type.value if row.consent_type else None,
            "consent_at": row.consent_at,
            "fields": json.dumps(dict(row.fields), sort_keys=True),
            "state": ContactState.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
        })
        if len(batch) >= batch_size:
            inserted += await flush()
    inserted += await flush()
    return inserted


# --- DNC ---------------------------------------------------------------------------------------

async def add_dnc(s: AsyncSession, e164s: Iterable[str], source: DncList, *, now: datetime) -> None:
    values = [{"e164": e, "source": source.value, "added_at": now} for e in e164s]
    if not values:
        return
    ins = postgresql.insert(DncNumber) if s.get_bind().dialect.name == "postgresql" else sqlite.insert(
        DncNumber)
    await s.execute(ins.values(values).on_conflict_do_nothing(index_elements=["e164", "source"]))


async def load_dnc(s: AsyncSession, e164s: Sequence[str] | None = None) -> InMemoryDnc:
    """The do-not-call lists, whole or (``e164s``) only the entries for these numbers: the
    dialer asks for the numbers it holds, so a national list of millions is never loaded."""
    internal: set[str] = set()
    national: set[str] = set()
    query = select(DncNumber.e164, DncNumber.source)
    if e164s is not None:
        if not e164s:
            return InMemoryDnc()
        query = query.where(DncNumber.e164.in_(sorted(set(e164s))))
    for e164, source in await s.execute(query):
        (internal if source == DncList.INTERNAL.value else national).add(e164)
    return InMemoryDnc(frozenset(internal), frozenset(national))


# --- claim and lease --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClaimedContact:
    """A contact held by this dialer (implements ``eligibility.Callee``)."""

    id: int
    campaign_id: int
    e164: str
    name: str
    timezones: tuple[str, ...]
    consent_type: ConsentType | None
    consent_at: datetime | None
    attempts: int


class _ContactFields(Protocol):
    """A ``Contact`` row or a row of ``_CLAIMED_COLUMNS``."""

    @property
    def id(self) -> int: ...
    @property
    def campaign_id(self) -> int: ...
    @property
    def e164(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def timezones(self) -> str: ...
    @property
    def consent_type(self) -> str | None: ...
    @property
    def consent_at(self) -> datetime | None: ...
    @property
    def attempts(self) -> int: ...


def _claimed(row: _ContactFields) -> ClaimedContact:
    return ClaimedContact(
        id=row.id, campaign_id=row.campaign_id, e164=row.e164, name=row.name,
        timezones=tuple(json.loads(row.timezones)),
        consent_type=ConsentType(row.consent_type) if row.consent_type else None,
        consent_at=row.consent_at, attempts=row.attempts,
    )


_CLAIMED_COLUMNS: Final = (Contact.id, Contact.campaign_id, Contact.e164, Contact.name,
                           Contact.timezones, Contact.consent_type, Contact.consent_at,
                           Contact.attempts)


async def claim_due_contacts(
    s: AsyncSession, campaign_id: int, cap: int, *, worker: str, now: datetime,
    lease: timedelta, limit: int,
) -> list[ClaimedContact]:
    """Claim up to ``min(limit, cap - in flight)`` due contacts (see the module rules): the
    rows are locked (SKIP LOCKED) and read, then claimed in one UPDATE."""
    if s.get_bind().dialect.name == "postgresql":
        await s.execute(
            text("SELECT pg_advisory_xact_lock(:cls, :cid)"),
            {"cls": CLAIM_LOCK_CLASS, "cid": campaign_id},
        )
    in_flight = await s.scalar(
        select(func.count()).select_from(Contact).where(
            Contact.campaign_id == campaign_id, Contact.state.in_(IN_FLIGHT)
        )
    ) or 0
    free = min(limit, cap - in_flight)
    if free <= 0:
        return []
    rows = (await s.execute(
        select(*_CLAIMED_COLUMNS)
        .where(
            Contact.campaign_id == campaign_id,
            Contact.state == ContactState.PENDING,
            Contact.next_attempt_at <= now,
        )
        .order_by(Contact.next_attempt_at, Contact.id)
        .limit(free)
        .with_for_update(skip_locked=True)
    )).all()
    if rows:
        await s.execute(
            update(Contact).where(Contact.id.in_([r.id for r in rows]))
            .values(state=ContactState.CLAIMED, claimed_by=worker, lease_until=now + lease)
            .execution_options(synchronize_session=False))
    return [_claimed(r) for r in rows]


async def reclaim_expired(
    s: AsyncSession, *, worker: str, now: datetime, lease: timedelta, limit: int,
) -> list[ClaimedContact]:
    """Take over ``claimed`` contacts whose lease expired (their dialer died)."""
    rows = list(await s.scalars(
        select(Contact)
        .where(Contact.state == ContactState.CLAIMED, Contact.lease_until < now)
        .order_by(Contact.lease_until, Contact.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ))
    for row in rows:
        row.claimed_by, row.lease_until = worker, now + lease
    await s.flush()
    return [_claimed(r) for r in rows]


@dataclass(frozen=True, slots=True)
class CampaignProgress:
    """Where a campaign stands (``campaign_progress``)."""

    campaign: StoredCampaign
    contacts: dict[str, int]            # by ``ContactState``
    attempts: dict[str, int]            # placed attempts by outcome ("" while in progress)
    skips: dict[str, int]               # final skips by reason code (a skip has >= 1 reason)
    waiting: dict[str, int]             # pending contacts rescheduled by a time rule, by reason
    in_flight: int                      # claimed or in a call: counts against the cap
    due_now: int                        # pending contacts whose next attempt is due
    next_due_at: datetime | None        # earliest next attempt among pending contacts

    @property
    def total(self) -> int:
        return sum(self.contacts.values())

    @property
    def finished(self) -> int:
        return self.contacts.get(ContactState.DONE, 0) + self.contacts.get(ContactState.SKIPPED, 0)


async def campaign_progress(s: AsyncSession, campaign_id: int, *, now: datetime) -> CampaignProgress:
    """Counts for one campaign, read in one snapshot-free pass of small GROUP BY queries."""
    campaign = _stored(await s.get_one(Campaign, campaign_id))
    where = Contact.campaign_id == campaign_id
    contacts = {str(k): int(v) for k, v in (await s.execute(
        select(Contact.state, func.count()).where(where).group_by(Contact.state))).all()}
    attempts = {str(k or ""): int(v) for k, v in (await s.execute(
        select(CallAttempt.outcome, func.count())
        .where(CallAttempt.campaign_id == campaign_id,
               CallAttempt.status != AttemptStatus.SKIPPED)
        .group_by(CallAttempt.outcome))).all()}
    skips: dict[str, int] = {}
    for codes, count in (await s.execute(
            select(CallAttempt.skip_reason, func.count())
            .where(CallAttempt.campaign_id == campaign_id,
                   CallAttempt.status == AttemptStatus.SKIPPED)
            .group_by(CallAttempt.skip_reason))).all():
        for code in str(codes or "").split(","):
            if code:
                skips[code] = skips.get(code, 0) + int(count)
    waiting: dict[str, int] = {}
    for codes, count in (await s.execute(
            select(Contact.skip_reason, func.count())
            .where(where, Contact.state == ContactState.PENDING,
                   Contact.skip_reason.is_not(None))
            .group_by(Contact.skip_reason))).all():
        for code in str(codes or "").split(","):
            if code:
                waiting[code] = waiting.get(code, 0) + int(count)
    pending = Contact.state == ContactState.PENDING
    due_now = await s.scalar(select(func.count()).select_from(Contact).where(
        where, pending, Contact.next_attempt_at <= now)) or 0
    next_due = await s.scalar(select(func.min(Contact.next_attempt_at)).where(where, pending))
    return CampaignProgress(
        campaign=campaign, contacts=contacts, attempts=attempts, skips=skips, waiting=waiting,
        in_flight=sum(contacts.get(state, 0) for state in IN_FLIGHT), due_now=int(due_now),
        next_due_at=next_due,
    )


async def pending_work(s: AsyncSession, *, at_most: int | None = None) -> int:
    """Contacts of running campaigns not yet finished (pending, claimed or in a call);
    counted up to ``at_most`` (``at_most=1``: is there any? without counting a large
    campaign's every row)."""
    unfinished = select(Contact.id).join(Campaign).where(
        Campaign.state == CampaignState.RUNNING.value,
        Contact.state.in_((ContactState.PENDING, *IN_FLIGHT)),
    )
    if at_most is not None:
        unfinished = unfinished.limit(at_most)
    return await s.scalar(select(func.count()).select_from(unfinished.subquery())) or 0


async def attempt_counts(
    s: AsyncSession, e164: str, *, since_day_start: datetime, now: datetime,
) -> tuple[int, list[datetime]]:
    """(dials to this number since the local day started, start times in the last 24 h);
    all campaigns, skipped attempts excluded."""
    since = min(since_day_start, now - timedelta(days=1))
    times = list(await s.scalars(
        select(CallAttempt.created_at).where(
            CallAttempt.e164 == e164,
            CallAttempt.created_at > since,
            CallAttempt.status != AttemptStatus.SKIPPED,
        )
    ))
    today = sum(1 for t in times if t >= since_day_start)
    return today, [t for t in times if t > now - timedelta(days=1)]


# --- attempts ------------------------------------------------------------------------------------

def _release(row: Contact, state: str) -> None:
    row.state, row.claimed_by, row.lease_until = state, None, None


async def record_skip(
    s: AsyncSession, contact_id: int, reasons: Sequence[SkipReason],
    next_attempt_at: datetime | None, *, worker: str, now: datetime,
) -> None:
    """A waiting skip reschedules the contact; a final one (``next_attempt_at`` None)
    closes it with a ``skipped`` attempt row carrying the reasons."""
    row = await s.get_one(Contact, contact_id, with_for_update=True)
    _skip(s, row, reasons, next_attempt_at, worker=worker, now=now)


def _skip(
    s: AsyncSession, row: Contact, reasons: Sequence[SkipReason],
    next_attempt_at: datetime | None, *, worker: str, now: datetime,
) -> None:
    """``record_skip`` on a loaded, locked row (also ``batch.record_skips``)."""
    codes = ",".join(r.value for r in reasons)
    row.skip_reason = codes
    if next_attempt_at is not None:
        _release(row, ContactState.PENDING)
        row.next_attempt_at = next_attempt_at
        return
    no = row.attempts + 1
    s.add(CallAttempt(
        campaign_id=row.campaign_id, contact_id=row.id, attempt_no=no,
        idempotency_key=f"{row.id}:{no}", e164=row.e164, call_id=str(uuid.uuid4()),
        worker=worker, status=AttemptStatus.SKIPPED, skip_reason=codes, created_at=now,
        ended_at=now,
    ))
    _release(row, ContactState.SKIPPED)
    row.next_attempt_at = None


async def begin_attempt(
    s: AsyncSession, contact_id: int, *, worker: str, now: datetime, lease: timedelta,
) -> CallAttempt:
    """Record the next attempt in state ``placing`` (commit before dialing).
    ``LostClaim`` if another dialer took the contact over meanwhile."""
    row = await s.get_one(Contact, contact_id, with_for_update=True, populate_existing=True)
    if row.state != ContactState.CLAIMED or row.claimed_by != worker:
        raise LostClaim(f"contact {contact_id} is {row.state} by {row.claimed_by}")
    if row.lease_until is None or row.lease_until <= now:
        raise LostClaim(f"contact {contact_id}: the lease of {worker} expired")
    row.lease_until = now + lease      # the whole lease covers the REST create
    row.attempts += 1
    no = row.attempts
    attempt = CallAttempt(
        campaign_id=row.campaign_id, contact_id=row.id, attempt_no=no,
        idempotency_key=f"{row.id}:{no}", e164=row.e164, call_id=str(uuid.uuid4()),
        worker=worker, status=AttemptStatus.PLACING, created_at=now,
    )
    s.add(attempt)
    await s.flush()
    return attempt


async def open_attempt(s: AsyncSession, contact_id: int) -> CallAttempt | None:
    """The contact's attempt left in ``placing`` (a dialer died around the REST call)."""
    return await s.scalar(
        select(CallAttempt).where(
            CallAttempt.contact_id == contact_id, CallAttempt.status == AttemptStatus.PLACING
        )
    )


async def mark_placed(
    s: AsyncSession, attempt_id: int, call_sid: str, *, now: datetime,
) -> None:
    """Idempotent: an attempt no longer ``placing`` (reconciled by another dialer) is kept."""
    attempt = await s.get_one(CallAttempt, attempt_id, with_for_update=True)
    if attempt.status != AttemptStatus.PLACING:
        return
    attempt.call_sid, attempt.status, attempt.placed_at = call_sid, AttemptStatus.PLACED, now
    contact = await s.get_one(Contact, attempt.contact_id, with_for_update=True)
    if contact.state == ContactState.CLAIMED:
        _release(contact, ContactState.IN_CALL)


async def renew_lease(
    s: AsyncSession, contact_id: int, *, worker: str, now: datetime, lease: timedelta,
) -> None:
    """Extend this worker's unexpired claim; ``LostClaim`` otherwise."""
    row = await s.get_one(Contact, contact_id, with_for_update=True, populate_existing=True)
    if (row.state != ContactState.CLAIMED or row.claimed_by != worker
            or row.lease_until is None or row.lease_until <= now):
        raise LostClaim(f"contact {contact_id} is no longer held by {worker}")
    row.lease_until = now + lease


async def release_claim(s: AsyncSession, contact_id: int, *, worker: str) -> None:
    """Give a claimed contact back (its campaign is no longer running)."""
    row = await s.get_one(Contact, contact_id, with_for_update=True)
    if row.state == ContactState.CLAIMED and row.claimed_by == worker:
        _release(row, ContactState.PENDING)


async def withdraw_attempt(s: AsyncSession, attempt_id: int, *, worker: str) -> bool:
    """Undo a ``placing`` attempt whose create was certainly never sent (the dialer checked
    before sending: shutdown, or the lease's deadline): the row goes, the contact's attempt
    count goes back and the claim is given back (``pending``, due as before). False when the
    attempt is no longer this worker's ``placing`` one (nothing is changed)."""
    attempt = await s.get(CallAttempt, attempt_id, with_for_update=True, populate_existing=True)
    if attempt is None or attempt.status != AttemptStatus.PLACING or attempt.worker != worker:
        return False
    contact = await s.get_one(Contact, attempt.contact_id, with_for_update=True,
                              populate_existing=True)
    if contact.state != ContactState.CLAIMED or contact.claimed_by != worker:
        return False
    await s.delete(attempt)
    contact.attempts -= 1
    _release(contact, ContactState.PENDING)
    await s.flush()
    return True


async def release_worker_claims(s: AsyncSession, *, worker: str) -> int:
    """Give back every contact this worker holds in ``claimed`` with no open ``placing``
    attempt (a dialer shutting down). A contact with an open attempt keeps its claim: a
    create may have reached Twilio, so it is reconciled after the lease, never re-dialed
    at once. Returns how many were released."""
    placing = select(CallAttempt.contact_id).where(CallAttempt.status == AttemptStatus.PLACING)
    rows = list(await s.scalars(
        select(Contact)
        .where(Contact.state == ContactState.CLAIMED, Contact.claimed_by == worker,
               Contact.id.not_in(placing))
        .with_for_update()
    ))
    for row in rows:
        _release(row, ContactState.PENDING)
    await s.flush()
    return len(rows)


async def known_call_sids(s: AsyncSession, sids: Sequence[str]) -> set[str]:
    if not sids:
        return set()
    found = await s.scalars(select(CallAttempt.call_sid).where(CallAttempt.call_sid.in_(sids)))
    return {sid for sid in found if sid is not None}


async def answered_by_of(s: AsyncSession, call_sid: str) -> str | None:
    """Who answered the call, when the final status callback does not say: the async AMD
    verdict (``amd_verdicts``), else ``AnsweredBy`` on any earlier status callback."""
    verdict = await s.scalar(select(AmdVerdict.answered_by).where(AmdVerdict.call_sid == call_sid))
    if verdict is not None:
        return verdict
    return await s.scalar(
        select(CallStatusEvent.answered_by).where(
            CallStatusEvent.call_sid == call_sid, CallStatusEvent.answered_by.is_not(None),
        ).limit(1)
    )


def outcome_of(call_status: str, answered_by: str | None) -> CallOutcome | None:
    """None: the call was answered by a person (or AMD could not tell): the contact is done."""
    if call_status == "completed":
        machine = answered_by is not None and (
            answered_by.startswith("machine") or answered_by == "fax")
        return CallOutcome.VOICEMAIL if machine else None
    if call_status == "busy":
        return CallOutcome.BUSY
    if call_status in ("no-answer", "canceled"):
        return CallOutcome.NO_ANSWER
    return CallOutcome.FAILED


def campaign_outcome(outcome: CallOutcome | None) -> str:
    return "answered" if outcome is None else outcome.value


def _after(attempts: int, spec: CampaignSpec, outcome: CallOutcome | None,
           now: datetime) -> tuple[str, datetime | None]:
    """A contact's (state, next attempt) once its attempt number ``attempts`` closed."""
    if outcome is None or attempts >= spec.max_attempts:
        return ContactState.DONE, None
    return ContactState.PENDING, now + spec.retry_delay(outcome)


def _schedule(contact: Contact, spec: CampaignSpec, outcome: CallOutcome | None,
              now: datetime) -> None:
    state, next_attempt_at = _after(contact.attempts, spec, outcome, now)
    _release(contact, state)
    contact.next_attempt_at = next_attempt_at


async def _spec_of(s: AsyncSession, campaign_id: int) -> CampaignSpec:
    return spec_from_json((await s.get_one(Campaign, campaign_id)).spec)


async def record_attempt_outcome(
    s: AsyncSession, attempt_id: int, call_status: str, *, answered_by: str | None,
    duration_s: int | None, now: datetime,
) -> CallOutcome | None:
    """Close a placed attempt and schedule the contact's retry by outcome
    (``CampaignSpec.retry_delay``) or finish it. Idempotent: an ended attempt is left as is."""
    attempt = await s.get_one(CallAttempt, attempt_id, with_for_update=True)
    outcome = outcome_of(call_status, answered_by)
    if attempt.status not in (AttemptStatus.PLACED, AttemptStatus.PLACING):
        return outcome
    attempt.status, attempt.ended_at = AttemptStatus.ENDED, now
    attempt.outcome = campaign_outcome(outcome)
    attempt.answered_by, attempt.duration_s = answered_by, duration_s
    contact = await s.get_one(Contact, attempt.contact_id, with_for_update=True)
    _schedule(contact, await _spec_of(s, attempt.campaign_id), outcome, now)
    return outcome


async def record_place_failure(
    s: AsyncSession, attempt_id: int, error: str, *, now: datetime,
) -> None:
    """The REST create was refused: the attempt failed and the retry follows ``failed``."""
    attempt = await s.get_one(CallAttempt, attempt_id, with_for_update=True)
    attempt.status, attempt.ended_at = AttemptStatus.FAILED, now
    attempt.outcome, attempt.error = CallOutcome.FAILED.value, error[:1000]
    contact = await s.get_one(Contact, attempt.contact_id, with_for_update=True)
    _schedule(contact, await _spec_of(s, attempt.campaign_id), CallOutcome.FAILED, now)


async def stale_placed_attempts(
    s: AsyncSession, *, placed_before: datetime, limit: int,
) -> list[tuple[int, str]]:
    """(attempt id, call sid) of placed calls with no outcome since ``placed_before``: their
    final status callback may be lost; the dialer asks Twilio."""
    rows = await s.execute(
        select(CallAttempt.id, CallAttempt.call_sid)
        .where(CallAttempt.status == AttemptStatus.PLACED, CallAttempt.placed_at < placed_before)
        .order_by(CallAttempt.placed_at)
        .limit(limit)
    )
    return [(attempt_id, sid) for attempt_id, sid in rows.all() if sid is not None]


async def apply_status_events(s: AsyncSession, *, now: datetime, limit: int = 200) -> int:
    """Close placed attempts whose terminal status callback arrived (``call_status_events``,
    written by ``/twilio/status``), with who answered (``answered_by_of``). Safe from
    several dialers (SKIP LOCKED). Up to ``limit`` attempts in a few statements: the
    attempts, who answered the calls whose callback does not say, their contacts (locked in
    id order) and campaigns, then one UPDATE of each table."""
    rows = (await s.execute(
        select(CallAttempt.id, CallAttempt.call_sid, CallAttempt.contact_id,
               CallAttempt.campaign_id, CallStatusEvent.status, CallStatusEvent.answered_by,
               CallStatusEvent.duration_s)
        .join(CallStatusEvent, CallStatusEvent.call_sid == CallAttempt.call_sid)
        .where(CallAttempt.status == AttemptStatus.PLACED,
               CallStatusEvent.status.in_(TERMINAL_CALL_STATUSES))
        .order_by(CallAttempt.id)
        .limit(limit)
        .with_for_update(of=CallAttempt, skip_locked=True)
    )).all()
    closing = {row.id: row for row in reversed(rows)}      # the first event of each wins
    if not closing:
        return 0
    answered = await _answered_by_many(s, sorted(
        {r.call_sid for r in closing.values() if r.answered_by is None and r.call_sid}))
    tries: dict[int, int] = dict((await s.execute(
        select(Contact.id, Contact.attempts)
        .where(Contact.id.in_(sorted({r.contact_id for r in closing.values()})))
        .order_by(Contact.id).with_for_update())).all())
    specs = {cid: spec_from_json(raw) for cid, raw in (await s.execute(
        select(Campaign.id, Campaign.spec).where(
            Campaign.id.in_(sorted({r.campaign_id for r in closing.values()}))))).all()}
    ended: list[dict[str, Any]] = []
    contacts: list[dict[str, Any]] = []
    for row in sorted(closing.values(), key=lambda r: r.id):
        answered_by = row.answered_by
        if answered_by is None and row.call_sid is not None:
            answered_by = answered.get(row.call_sid)
        outcome = outcome_of(row.status, answered_by)
        ended.append({"id": row.id, "status": AttemptStatus.ENDED, "ended_at": now,
                      "outcome": campaign_outcome(outcome), "answered_by": answered_by,
                      "duration_s": row.duration_s})
        state, next_attempt_at = _after(tries[row.contact_id], specs[row.campaign_id],
                                        outcome, now)
        contacts.append({"id": row.contact_id, "state": state, "claimed_by": None,
                         "lease_until": None, "next_attempt_at": next_attempt_at})
    await s.execute(update(CallAttempt), ended)
    await s.execute(update(Contact), contacts)
    return len(closing)


async def _answered_by_many(s: AsyncSession, call_sids: Sequence[str]) -> dict[str, str]:
    """``answered_by_of`` for many calls (those with no answer left out)."""
    if not call_sids:
        return {}
    found: dict[str, str] = dict((await s.execute(
        select(AmdVerdict.call_sid, AmdVerdict.answered_by)
        .where(AmdVerdict.call_sid.in_(call_sids)))).all())
    rest = [sid for sid in call_sids if sid not in found]
    if rest:
        for sid, by in (await s.execute(
                select(CallStatusEvent.call_sid, CallStatusEvent.answered_by)
                .where(CallStatusEvent.call_sid.in_(rest),
                       CallStatusEvent.answered_by.is_not(None))
                .order_by(CallStatusEvent.id))).all():
            if by is not None:
                found.setdefault(sid, by)
    return found
