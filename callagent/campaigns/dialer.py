"""The dialer loop: claim due contacts, check them, skip or dial, close attempts.

One ``tick()``:

1. **Outcomes**: placed attempts whose terminal status callback is in
   ``call_status_events`` (written by ``/twilio/status``) are closed; the contact is done, or
   rescheduled by outcome (``CampaignSpec.retry_delay``) while attempts remain. At most once a
   minute, calls placed longer than ``stale_after`` ago without an outcome (a lost callback)
   are looked up at Twilio (``calls(sid).fetch()``) and closed from its record.
2. **Recovery**: ``claimed`` contacts whose lease expired (a dialer died) are taken over.
3. **Claims**: for each running campaign, up to ``cap - in flight`` due contacts
   (``store.claim_due_contacts``: the cap holds across every dialer).

**A pass** over the held contacts (``batch`` holds its queries): one read finds the
contacts with an attempt left in ``placing`` (each is *reconciled* first, concurrently with
the rest), and for the others the DNC entries and the recent attempts of their numbers. The
pre-dial gate (``eligibility.check_eligibility``) then runs on each, in memory; a dial
counts against the number's caps for the contacts after it in the pass. The skips are
stored in one transaction with their reasons (rescheduled when time cures them; DNC hits
audited in it). The dials' attempts (idempotency key ``<contact>:<attempt>``) are all
committed in state ``placing`` in one transaction **before** the first ``calls.create``
(a contact whose claim was lost meanwhile is not dialed); then the creates go out,
``parallel_creates`` at a time, and what they return (sids, refusals, creates withdrawn
unsent) is recorded as it comes, a group per transaction. A failed transaction leaves its
contacts to the lease: claims expire, ``placing`` attempts are reconciled. The answered call
reaches ``/twilio/voice?call_id=&agent=`` like an inbound one, with the campaign's agent.

**Reconciliation rule** (an attempt found in ``placing`` after its lease expired: the dialer
died, or lost Twilio's answer, between recording the attempt and recording the sid):
list the calls ``To`` the contact ``From`` the campaign's caller id created since the
attempt was recorded (minus ``_CLOCK_SLACK``) and not already owned by another attempt.
If there is one, it *is* this attempt: adopt its sid (its status callbacks close it).
If there is none, the call was never created: dial now under the same attempt and key.
This is sound because a contact has at most one open attempt (the claim), and no create of the
dead claim can still be in flight: a create is sent only while the sender's lease has
``2 * rest_timeout_s`` left (checked in the SDK thread right before the request; the
request is bounded by ``rest_timeout_s`` per connect/read), and a lease is renewed when
the attempt is recorded. When Twilio cannot be reached, nothing is dialed and the
attempt waits for the next lease expiry. Residual risk (Twilio's ``calls.create`` takes no
idempotency key): a process frozen *between* that check and the bytes leaving the socket
for longer than ``2 * rest_timeout_s`` (SIGSTOP, swap; or a blocked stderr pipe, which the
SDK's request logging once caused in tests: its logger is now ours, at WARNING) could
still dial after its claim was reconciled. A matching call found later is then a second
call for the attempt; the ``attempt`` query parameter of its ``Url`` names it.

**Calls** ask for async AMD with ``MachineDetection=DetectMessageEnd`` whatever the voicemail
policy (machine verdicts then come after the greeting; see ``voicemail.py``); the verdict goes
to ``/twilio/amd`` with the campaign's policy and message in its signed query, and is kept in
``amd_verdicts``, where the call's outcome (``store.answered_by_of``) finds it.

**Shutdown** (SIGTERM/SIGINT sets ``stop``): the pass under way finishes, but nothing new is
dialed: a contact not yet recorded as an attempt is left alone, and an attempt whose create
has not been sent yet is withdrawn (``store.withdraw_attempt``; creates go out through at most
``parallel_creates`` at a time, each checked against ``stop`` right before it is sent).
Creates already sent are waited for and recorded. Then every claim of this worker without an
open attempt is given back (``store.release_worker_claims``), so other dialers take those
contacts at once instead of after the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import zoneinfo
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Final
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.campaigns import batch, store
from callagent.call.records import AuditRecord
from callagent.campaigns.eligibility import InMemoryDnc, SkipReason, check_eligibility
from callagent.campaigns.store import ClaimedContact, LostClaim, StoredCampaign
from callagent.campaigns.voicemail import AmdQuery, amd_callback_query
from callagent.compliance.events import CAMPAIGN_FINISHED, DNC_HIT
from callagent.config import Settings
from callagent.store.queries import append_audit
from callagent.store.db import create_engine_for, make_sessionmaker, sqlite_path
from callagent.store.models import CallAttempt
from callagent.telephony.twilio.rest import (
    DeadlinePassed,
    TwilioRest,
    TwilioRestError,
    TwilioUnavailable,
)

__all__ = ["AnotherDialer", "Dialer", "run_dialer", "sqlite_single_dialer", "worker_id"]

_DNC_REASONS: Final = frozenset({SkipReason.INTERNAL_DNC, SkipReason.NATIONAL_DNC})
log = logging.getLogger(__name__)

_CLOCK_SLACK: Final = timedelta(seconds=5)
# how long the create results of a pass may wait to be recorded together
_GROUP_WAIT: Final = timedelta(milliseconds=20)


def worker_id(configured: str = "") -> str:
    return configured or f"{socket.gethostname()}-{os.getpid()}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Dialer:
    sessions: async_sessionmaker[AsyncSession]
    rest: TwilioRest
    public_url: Callable[[str], str]
    worker: str
    lease: timedelta = timedelta(seconds=60)
    batch_size: int = 10
    poll_interval_s: float = 1.0
    rest_timeout_s: float = 10.0
    # a placed call without a final status callback for this long is looked up at Twilio
    stale_after: timedelta = timedelta(minutes=15)
    # where Twilio posts the async AMD verdict (None: not requested; AnsweredBy then comes
    # with the status callbacks only)
    amd_callback_path: str | None = "/twilio/amd"
    # creates in flight at once (each checked against ``stop`` right before it is sent)
    parallel_creates: int = 4
    clock: Callable[[], datetime] = _utc_now

    def __post_init__(self) -> None:
        if not 0 < 2 * self.rest_timeout_s < self.lease.total_seconds():
            raise ValueError("the lease must exceed twice the REST timeout")
        if self.parallel_creates < 1:
            raise ValueError("parallel_creates must be at least 1")
        self._next_sweep = datetime.min.replace(tzinfo=UTC)
        self._stop = asyncio.Event()
        self._creates = asyncio.Semaphore(self.parallel_creates)

    async def tick(self) -> int:
        """One pass; returns how many contacts or attempts it moved."""
        now = self.clock()
        async with self.sessions.begin() as s:
            moved = await store.apply_status_events(s, now=now)
            finished = await store.finish_done_campaigns(s)
            if finished:
                await append_audit(s, [AuditRecord(CAMPAIGN_FINISHED, "dialer", now, None,
                                                   {"campaign": key}) for key in finished])
            campaigns = {c.id: c for c in await store.running_campaigns(s)}
        async with self.sessions.begin() as s:
            recovered = await store.reclaim_expired(
                s, worker=self.worker, now=now, lease=self.lease, limit=self.batch_size)
        held: list[tuple[StoredCampaign | None, ClaimedContact]] = [
            (campaigns.get(c.campaign_id), c) for c in recovered]
        for campaign in campaigns.values():
            if self._stop.is_set():     # shutting down: claim nothing new
                break
            async with self.sessions.begin() as s:
                claimed = await store.claim_due_contacts(
                    s, campaign.id, campaign.spec.max_concurrent_calls, worker=self.worker,
                    now=now, lease=self.lease, limit=self.batch_size)
            held.extend((campaign, c) for c in claimed)
        await self._pass(held)
        if now >= self._next_sweep:
            self._next_sweep = now + min(self.stale_after, timedelta(minutes=1))
            moved += await self._sweep_stale(now)
        return moved + len(held)

    async def _sweep_stale(self, now: datetime) -> int:
        """Close placed calls whose final status callback never came, from Twilio's record."""
        async with self.sessions() as s:
            stale = await store.stale_placed_attempts(
                s, placed_before=now - self.stale_after, limit=self.batch_size * 10)
        closed = 0
        for attempt_id, sid in stale:
            try:
                call = await self.rest.fetch_call(sid)
            except (TwilioRestError, TwilioUnavailable) as exc:
                log.warning("dialer %s: cannot look up stale call %s (%s)", self.worker, sid, exc)
                continue
            if call.status in store.TERMINAL_CALL_STATUSES:
                async with self.sessions.begin() as s:
                    answered_by = call.answered_by or await store.answered_by_of(s, sid)
                    await store.record_attempt_outcome(
                        s, attempt_id, call.status, answered_by=answered_by,
                        duration_s=call.duration_s, now=self.clock())
                closed += 1
        return closed

    async def run(self, stop: asyncio.Event, *, until_idle: bool = False) -> None:
        """Pass after pass until ``stop`` is set (or, ``until_idle``, no work is left);
        then give back this worker's claims (see the module's **Shutdown**)."""
        self._stop = stop
        try:
            await self._loop(stop, until_idle=until_idle)
        finally:
            async with self.sessions.begin() as s:
                released = await store.release_worker_claims(s, worker=self.worker)
            if released:
                log.info("dialer %s: gave back %d claims", self.worker, released)

    async def _loop(self, stop: asyncio.Event, *, until_idle: bool) -> None:
        while not stop.is_set():
            try:
                moved = await self.tick()
            except Exception:       # e.g. the database is away: log, wait, try again
                log.exception("dialer %s: tick failed", self.worker)
                moved = 0
            if until_idle and moved == 0:
                async with self.sessions() as s:
                    if await store.pending_work(s, at_most=1) == 0:
                        return
            if moved == 0:
                try:
                    await asyncio.wait_for(stop.wait(), self.poll_interval_s)
                except TimeoutError:
                    pass

    # --- one pass over the held contacts -----------------------------------------------------

    async def _pass(self, held: list[tuple[StoredCampaign | None, ClaimedContact]]) -> None:
        """Reconcile the contacts with an open attempt; check the others and skip or dial
        them in batches (see the module's **A pass**)."""
        gone = [c for campaign, c in held if campaign is None]
        if gone:                        # recovered from a campaign that is no longer running
            try:
                async with self.sessions.begin() as s:
                    for contact in gone:
                        await store.release_claim(s, contact.id, worker=self.worker)
            except Exception:
                log.exception("dialer %s: could not give back %d claims; their leases will "
                              "expire", self.worker, len(gone))
        live = [(campaign, c) for campaign, c in held if campaign is not None]
        if not live:
            return
        now = self.clock()
        async with self.sessions() as s:
            open_ = await batch.open_attempts(s, [c.id for _, c in live])
            fresh = [(campaign, c) for campaign, c in live if c.id not in open_]
            dnc = await store.load_dnc(s, [c.e164 for _, c in fresh])   # these numbers' only
            day_starts = {c.id: _local_day_start(c, now) for _, c in fresh}
            times = await batch.attempt_times(
                s, {c.e164 for _, c in fresh},
                since=min([*day_starts.values(), now - timedelta(days=1)]))
        done = await asyncio.gather(
            self._check_and_dial(fresh, dnc, times, day_starts, now),
            *(self._guarded(c.id, self._reconcile(campaign, c, open_[c.id]))
              for campaign, c in live if c.id in open_),
            return_exceptions=True)         # every part ends before the pass does
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _guarded(self, contact_id: int, work: Awaitable[None]) -> None:
        try:
            await work
        except LostClaim as exc:
            log.info("dialer %s: %s", self.worker, exc)
        except Exception:
            log.exception("dialer %s: contact %s failed; its lease will expire",
                          self.worker, contact_id)

    async def _check_and_dial(
        self, fresh: list[tuple[StoredCampaign, ClaimedContact]], dnc: InMemoryDnc,
        times: dict[str, list[datetime]], day_starts: dict[int, datetime], now: datetime,
    ) -> None:
        if self._stop.is_set() or not fresh:    # shutting down: claims go back in run()
            return
        skips: list[tuple[int, batch.Skip]] = []
        dials: list[tuple[StoredCampaign, ClaimedContact]] = []
        for campaign, contact in fresh:
            today, recent = batch.counts_for(times[contact.e164],
                                             since_day_start=day_starts[contact.id], now=now)
            verdict = check_eligibility(
                contact, campaign.spec, now, state=campaign.state, dnc=dnc,
                attempts_today=today, attempts_total=contact.attempts, recent_attempts=recent)
            if verdict.ok:
                dials.append((campaign, contact))
                times[contact.e164].append(now)     # a second contact with this number
            else:
                skips.append((campaign.id, batch.Skip(contact.id, tuple(verdict.reasons),
                                                      verdict.next_window_start)))
        if skips:
            campaign_of = {skip.contact_id: cid for cid, skip in skips}
            async with self.sessions.begin() as s:
                done = await batch.record_skips(s, [k for _, k in skips], worker=self.worker,
                                                now=now)
                # A do-not-call hit is a compliance event: audited in the same transaction
                # as the skip (the number itself stays out of the log).
                hits = [AuditRecord(DNC_HIT, "dialer", now, None, {
                    "campaign_id": campaign_of[k.contact_id], "contact_id": k.contact_id,
                    "lists": [r.value for r in k.reasons if r in _DNC_REASONS]})
                    for k in done if _DNC_REASONS.intersection(k.reasons)]
                if hits:
                    await append_audit(s, hits)
        if not dials or self._stop.is_set():
            return
        now = self.clock()
        async with self.sessions.begin() as s:     # committed before any create
            attempts, lost = await batch.begin_attempts(
                s, [c.id for _, c in dials], worker=self.worker, now=now, lease=self.lease)
        for contact_id in lost:
            log.info("dialer %s: contact %s is no longer held; not dialed", self.worker,
                     contact_id)
        await self._dial([(campaign, c, attempts[c.id]) for campaign, c in dials
                          if c.id in attempts], lease_from=now)

    async def _dial(
        self, items: list[tuple[StoredCampaign, ClaimedContact, batch.Attempt]], *,
        lease_from: datetime,
    ) -> None:
        """Create the calls, ``parallel_creates`` at a time; record what they returned in
        groups, one transaction each, one group at a time. A group is recorded once it has
        ``parallel_creates`` results, when no create is left, or ``_GROUP_WAIT`` after the
        recorder started on it, whichever comes first (a sid waits that little longer to be
        known; until then the call is found and adopted by reconciliation, as before)."""
        loop = asyncio.get_running_loop()
        results: list[batch.CreateResult] = []
        grew = asyncio.Event()
        waiting = len(items)                # creates whose result has not come yet
        recorder: asyncio.Task[None] | None = None

        async def record() -> None:
            while results:
                until = loop.time() + _GROUP_WAIT.total_seconds()
                while len(results) < self.parallel_creates and waiting and loop.time() < until:
                    grew.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(grew.wait(), until - loop.time())
                group = results[:]
                results.clear()
                await self._record(group)

        async def one(campaign: StoredCampaign, contact: ClaimedContact,
                      attempt: batch.Attempt) -> None:
            nonlocal recorder, waiting
            try:
                result = await self._create(campaign, contact, attempt, lease_from=lease_from)
            except Exception:
                log.exception("dialer %s: attempt %s failed; it is reconciled after the lease",
                              self.worker, attempt.idempotency_key)
                result = None
            finally:
                waiting -= 1
                grew.set()
            if result is not None:
                results.append(result)
                if recorder is None or recorder.done():
                    recorder = asyncio.create_task(record())

        try:
            await asyncio.gather(*(one(*item) for item in items))
        finally:
            if recorder is not None:
                await recorder

    async def _create(
        self, campaign: StoredCampaign, contact: ClaimedContact, attempt: batch.Attempt, *,
        lease_from: datetime,
    ) -> batch.CreateResult | None:
        """Send the create only while the lease (renewed at ``lease_from``) still has
        ``2 * rest_timeout_s`` to run, so no create can reach Twilio after it expired.
        None: no answer from Twilio (the attempt is reconciled after the lease)."""
        spec = campaign.spec
        query = urlencode({"call_id": attempt.call_id, "agent": spec.agent_profile,
                           "campaign": campaign.id, "attempt": attempt.idempotency_key})
        amd_url = None
        if self.amd_callback_path:
            amd_url = self.public_url(self.amd_callback_path) + "?" + amd_callback_query(
                AmdQuery(campaign.id, attempt.idempotency_key, spec.voicemail,
                         spec.voicemail_message))
        deadline = (lease_from + self.lease).timestamp() - 2 * self.rest_timeout_s
        try:
            async with self._creates:
                if self._stop.is_set():
                    raise DeadlinePassed("the dialer is shutting down")
                placed = await self.rest.place_call(
                    to=contact.e164, from_=spec.caller_id,
                    url=self.public_url("/twilio/voice") + "?" + query,
                    status_callback=self.public_url("/twilio/status"),
                    machine_detection="DetectMessageEnd", async_amd=True,
                    async_amd_status_callback=amd_url,
                    timeout=spec.ring_timeout_s,
                    send_before=deadline,
                )
        except TwilioRestError as exc:       # refused: no call exists
            return batch.Refused(attempt.id, str(exc))
        except DeadlinePassed as exc:        # certainly not sent: undo the attempt
            log.info("dialer %s: attempt %s not sent (%s)", self.worker,
                     attempt.idempotency_key, exc)
            return batch.NotSent(attempt.id)
        except TwilioUnavailable as exc:     # unknown: reconcile after the lease
            log.warning("dialer %s: attempt %s unconfirmed (%s); reconciling after the lease",
                        self.worker, attempt.idempotency_key, exc)
            return None
        return batch.Placed(attempt.id, placed.sid)

    async def _record(self, results: list[batch.CreateResult]) -> None:
        """One transaction. If it fails, the attempts stay ``placing``: after the lease they
        are reconciled (a created call is adopted, a call never created is dialed)."""
        try:
            async with self.sessions.begin() as s:
                withdrawn = await batch.record_results(s, results, worker=self.worker,
                                                       now=self.clock())
        except Exception:
            log.exception("dialer %s: could not record %d create results; their attempts "
                          "are reconciled after the lease", self.worker, len(results))
            return
        if withdrawn:
            log.info("dialer %s: withdrew %d attempts not sent", self.worker, len(withdrawn))

    async def _reconcile(
        self, campaign: StoredCampaign, contact: ClaimedContact, attempt: CallAttempt,
    ) -> None:
        try:
            found = await self.rest.find_calls(
                to=contact.e164, from_=campaign.spec.caller_id,
                created_after=attempt.created_at - _CLOCK_SLACK)
        except (TwilioRestError, TwilioUnavailable) as exc:
            log.warning("dialer %s: cannot reconcile %s (%s)", self.worker,
                        attempt.idempotency_key, exc)
            return
        async with self.sessions() as s:
            owned = await store.known_call_sids(s, [c.sid for c in found])
        candidates = sorted((c for c in found if c.sid not in owned),
                            key=lambda c: c.date_created or attempt.created_at)
        if candidates:
            log.info("dialer %s: attempt %s adopted call %s", self.worker,
                     attempt.idempotency_key, candidates[0].sid)
            async with self.sessions.begin() as s:
                await store.mark_placed(s, attempt.id, candidates[0].sid, now=self.clock())
            return
        log.info("dialer %s: attempt %s was never placed; dialing it now", self.worker,
                 attempt.idempotency_key)
        async with self.sessions.begin() as s:
            now = self.clock()
            await store.renew_lease(s, contact.id, worker=self.worker, now=now, lease=self.lease)
        result = await self._create(campaign, contact, batch.Attempt.of(attempt), lease_from=now)
        if result is not None:
            await self._record([result])


def _local_day_start(contact: ClaimedContact, now: datetime) -> datetime:
    """Midnight of today in the contact's first zone (UTC midnight if it is unknown)."""
    try:
        zone: zoneinfo.ZoneInfo | None = zoneinfo.ZoneInfo(contact.timezones[0])
    except (IndexError, zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = None
    local = now.astimezone(zone or UTC)
    return datetime.combine(local.date(), time(0), tzinfo=zone or UTC).astimezone(UTC)


class AnotherDialer(RuntimeError):
    """A second dialer on a SQLite database (SQLite supports one)."""


@contextlib.contextmanager
def sqlite_single_dialer(database_url: str) -> Iterator[None]:
    """On SQLite, hold an exclusive lock on ``<database>.dialer-lock`` for the process's life:
    a second dialer on the same file refuses to start (claims there are serialized by the
    database lock, not by SKIP LOCKED, and the cap check assumes one dialer). No-op on
    PostgreSQL. The lock goes with the process, however it ends."""
    path = sqlite_path(database_url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.dialer-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise AnotherDialer(
                f"another dialer ({holder}) runs against the SQLite database {path}; SQLite "
                "supports one dialer: use PostgreSQL (database.url) to run several"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)


async def run_dialer(settings: Settings, *, until_idle: bool = False) -> None:
    """The ``callagent dialer`` process: runs until SIGTERM/SIGINT (or idle).
    ``AnotherDialer`` on a SQLite database another dialer holds."""
    with sqlite_single_dialer(settings.database.url):
        await _run_dialer(settings, until_idle=until_idle)


async def _run_dialer(settings: Settings, *, until_idle: bool) -> None:
    cfg = settings.dialer
    engine = create_engine_for(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with TwilioRest(settings.twilio.account_sid, settings.twilio.auth_token,
                              base_url=settings.twilio.api_base_url,
                              timeout_s=cfg.rest_timeout_s) as rest:
            dialer = Dialer(
                sessions=make_sessionmaker(engine), rest=rest, public_url=settings.public_url,
                worker=worker_id(cfg.worker_id), lease=timedelta(seconds=cfg.lease_s),
                batch_size=cfg.batch_size, poll_interval_s=cfg.poll_interval_s,
                rest_timeout_s=cfg.rest_timeout_s, parallel_creates=cfg.parallel_creates)
            log.info("dialer %s started", dialer.worker)
            await dialer.run(stop, until_idle=until_idle)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await engine.dispose()
