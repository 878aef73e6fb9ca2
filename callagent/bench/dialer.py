"""Campaign benchmark: import, pre-dial checks, and dialer processes on PostgreSQL.

``scripts/bench dialer`` creates a fresh PostgreSQL database on ``--pg-url``'s server
(dropped afterwards), migrates it and measures three things:

1. **Import**: a generated CSV of ``--contacts`` rows (valid NANP numbers, a time zone
   column, PEC consent, a free field) read by ``importer.parse_contacts`` and stored by
   ``operations.import_csv`` (2000-row commits): contacts imported per second.
2. **Eligibility**: ``eligibility.check_eligibility`` (pure) over every imported row, with a
   do-not-call list of 1 % of them: checks per second, one core.
3. **Dialing**: for each count in ``--dialers`` (default 1, 2, 4), a campaign of ``--calls``
   contacts (the first rows of the same file) is started and that many
   ``callagent dialer --until-idle`` processes run it against the local Twilio REST server
   (``sim.twilio_rest``, in this process; calls last 5-20 ms, their final status callback
   is written to ``call_status_events`` as ``/twilio/status`` would). Calls placed per
   second (first to last create), per dialer, and the dialers' CPU per call; every run is
   checked for double dials and unfinished contacts.

Nothing is asserted on speed: figures are printed (``docs/benchmarks.md`` keeps them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time as clock, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from callagent.bench.media import machine_busy_seconds
from callagent.campaigns import operations, store
from callagent.campaigns.eligibility import InMemoryDnc, check_eligibility
from callagent.campaigns.importer import ContactRow, parse_contacts
from callagent.campaigns.settings import (
    CallingWindow,
    CampaignSpec,
    CampaignState,
    Purpose,
    RetryDelays,
    Weekday,
)
from callagent.sim.twilio_rest import FakeTwilioRest
from callagent.store.db import PROJECT_ROOT, create_engine_for, make_sessionmaker, sync_url, upgrade
from callagent.store.models import CallStatusEvent, Contact

__all__ = ["DialResult", "main", "run_dialers"]

TOKEN = "bench-token"
ACCOUNT = "AC" + "0" * 32
DEFAULT_PG = os.environ.get("CALLAGENT_TEST_PG_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def noon_zone(now: datetime) -> str:
    """An ``Etc/GMT`` zone where ``now`` is near local noon (every contact is callable)."""
    offset = 12 - now.hour
    offset = offset - 24 if offset > 14 else offset + 24 if offset < -12 else offset
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def csv_lines(n: int, zone: str, first: int = 0) -> Iterator[str]:
    """``n`` contacts with numbers ``first``, ``first + 1``, ... (distinct across runs: a
    number called today is not called again today, whatever the campaign)."""
    yield "phone,name,timezone,consent_type,consent_at,plan\n"
    for i in range(first, first + n):
        yield (f"+1212{200 + i // 10000:03d}{i % 10000:04d},Person {i},{zone},PEC,"
               f"2026-01-01T00:00:00Z,{'gold' if i % 3 else 'silver'}\n")


def bench_spec(cap: int) -> CampaignSpec:
    return CampaignSpec(
        name="bench", agent_profile="fixture", caller_id="+12125550100",
        purpose=Purpose.INFORMATIONAL, window=CallingWindow(clock(8), clock(21)),
        allowed_days=frozenset(Weekday), max_concurrent_calls=cap, max_attempts=1,
        retry_delays=RetryDelays())


class _Sink:
    """Final status callbacks -> call_status_events (what /twilio/status records)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(sync_url(url), pool_size=4)

    def __call__(self, params: Mapping[str, str]) -> None:
        if params["CallStatus"] not in store.TERMINAL_CALL_STATUSES:
            return
        with self.engine.begin() as conn:
            conn.execute(text("SET LOCAL synchronous_commit = off"))
            conn.execute(insert(CallStatusEvent).values(
                call_sid=params["CallSid"], sequence=int(params["SequenceNumber"]),
                status=params["CallStatus"], at=datetime.now(UTC),
                duration_s=int(params.get("CallDuration") or 0),
                answered_by=params.get("AnsweredBy")))


@dataclass(frozen=True, slots=True)
class DialResult:
    dialers: int
    calls: int
    wall_s: float              # first dialer started -> last one exited
    span_s: float              # first create -> last create
    per_dialer: dict[str, int]
    cpu_s: float               # the dialer processes' user + system CPU
    fake_cpu_s: float          # this process: the fake Twilio and its status sink
    machine_cpu_s: float       # every process on the machine (PostgreSQL and others too)
    double_dials: int
    unfinished: int
    peak_in_progress: int = 0  # calls in progress at the fake at once, at most (cap check)

    @property
    def calls_per_s(self) -> float:
        return (self.calls - 1) / self.span_s if self.span_s > 0 and self.calls > 1 else 0.0


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_dialers(url: str, campaign_id: int, dialers: int, *, batch: int, parallel: int,
                timeout_s: float) -> DialResult:
    """Run ``dialers`` processes until the campaign is idle; the fake runs in this process."""
    sink = _Sink(url)
    try:
        with FakeTwilioRest(auth_token=TOKEN, sink=sink, duration_s=(0.005, 0.02)) as fake:
            env = {**os.environ, "CALLAGENT_DATABASE_URL": url,
                   "CALLAGENT_TWILIO_API_BASE_URL": fake.base_url,
                   "CALLAGENT_TWILIO_AUTH_TOKEN": TOKEN,
                   "CALLAGENT_SERVER_PUBLIC_ORIGIN": "https://bench.invalid",
                   "CALLAGENT_DIALER_POLL_INTERVAL_S": "0.05",
                   "CALLAGENT_DIALER_LEASE_S": "60", "CALLAGENT_DIALER_REST_TIMEOUT_S": "10",
                   "CALLAGENT_DIALER_BATCH_SIZE": str(batch),
                   "CALLAGENT_DIALER_PARALLEL_CREATES": str(parallel)}
            cpu0, own0, busy0 = _children_cpu(), _own_cpu(), machine_busy_seconds()
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory() as logs:
                procs = []
                for i in range(dialers):
                    with open(Path(logs) / f"d{i}.log", "wb") as log:
                        procs.append(subprocess.Popen(
                            [sys.executable, "-m", "callagent", "dialer", "--until-idle",
                             "--worker-id", f"bench-{dialers}-{i}"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log))
                try:
                    for p in procs:
                        p.wait(timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
                finally:
                    for p in procs:
                        if p.poll() is None:
                            p.kill()
                            p.wait()
                failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode]
                if failed:
                    tails = [(Path(logs) / f"d{i}.log").read_text()[-1500:] for i, _ in failed]
                    raise RuntimeError(f"dialers failed: {failed}: {tails}")
            wall = time.monotonic() - t0
            cpu = _children_cpu() - cpu0
            own, busy = _own_cpu() - own0, machine_busy_seconds() - busy0
            creates = list(fake.creates)
            per_key = fake.creates_per_key()
            peak = fake.max_in_progress[str(campaign_id)]
    finally:
        sink.engine.dispose()
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            unfinished = conn.scalar(select(func.count()).select_from(Contact).where(
                Contact.campaign_id == campaign_id, Contact.state != "done")) or 0
            workers: dict[str, int] = dict(conn.execute(text(
                "SELECT worker, count(*) FROM call_attempts WHERE campaign_id = :c "
                "AND call_sid IS NOT NULL GROUP BY worker"), {"c": campaign_id}).all())
    finally:
        engine.dispose()
    stamps = sorted(c.created_at for c in creates)
    span = (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0.0
    return DialResult(dialers, len(creates), wall, span, {str(k): int(v) for k, v in
                                                          workers.items()},
                      cpu, own, busy, sum(n - 1 for n in per_key.values() if n > 1),
                      int(unfinished), peak)


async def _import(url: str, key: str, lines: Iterator[str], spec: CampaignSpec,
                  state: CampaignState) -> tuple[int, int, float]:
    engine = create_engine_for(url)
    sessions = make_sessionmaker(engine)
    try:
        now = datetime.now(UTC)
        await operations.create(sessions, key, spec, actor="bench", now=now)
        started = time.perf_counter()
        report = await operations.import_csv(sessions, key, lines, actor="bench", now=now)
        took = time.perf_counter() - started
        if state is CampaignState.RUNNING:
            await operations.start(sessions, key, actor="bench", now=now)
        return report.campaign.id, report.added, took
    finally:
        await engine.dispose()


def eligibility_rate(rows: Sequence[ContactRow], spec: CampaignSpec) -> tuple[int, float, int]:
    dnc = InMemoryDnc(internal=frozenset(r.e164 for r in rows[::100]))
    now = datetime.now(UTC)
    started = time.perf_counter()
    ok = sum(1 for row in rows if check_eligibility(
        row, spec, now, state=CampaignState.RUNNING, dnc=dnc, attempts_today=0,
        attempts_total=0, recent_attempts=()).ok)
    return len(rows), time.perf_counter() - started, ok


def _machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench dialer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000,
                        help="rows imported and checked (default %(default)s)")
    parser.add_argument("--calls", type=int, default=100_000,
                        help="contacts dialed per dialer count, at most --contacts "
                             "(default %(default)s)")
    parser.add_argument("--dialers", default="1,2,4",
                        help="dialer process counts (default %(default)s)")
    parser.add_argument("--pg-url", default=DEFAULT_PG,
                        help="a PostgreSQL server to create the benchmark database on")
    parser.add_argument("--cap", type=int, default=200,
                        help="campaign max concurrent calls (default %(default)s)")
    parser.add_argument("--batch", type=int, default=50,
                        help="dialer.batch_size (default %(default)s)")
    parser.add_argument("--parallel", type=int, default=8,
                        help="dialer.parallel_creates (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds allowed for one dialing run (default %(default)s)")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.dialers.split(",") if x.strip()]
    if args.contacts < 1 or not 1 <= args.calls <= args.contacts or not counts or min(counts) < 1:
        parser.error("need --contacts >= --calls >= 1 and dialer counts >= 1")
    if (len(counts) + 1) * args.contacts > 7_000_000:
        parser.error("at most 7,000,000 numbers: lower --contacts or the dialer counts")

    name = f"callagent_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(args.pg_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        zone = noon_zone(datetime.now(UTC))
        spec = bench_spec(args.cap)
        print(f"machine: {_machine()}")
        print(f"database: PostgreSQL at {make_url(args.pg_url).host}, fresh database {name}")

        _, added, took = asyncio.run(_import(url, "bench-import", csv_lines(args.contacts, zone),
                                             spec, CampaignState.DRAFT))
        print(f"import: {added:,} contacts in {took:.2f} s = {added / took:,.0f} contacts/s "
              f"(parse + validate + store, 2000-row commits)")

        rows = [r for r in parse_contacts(csv_lines(args.contacts, zone), campaign_key="e")
                if isinstance(r, ContactRow)]
        checked, took, ok = eligibility_rate(rows, spec)
        print(f"eligibility: {checked:,} checks in {took:.2f} s = {checked / took:,.0f} checks/s "
              f"(one core; {ok:,} eligible, {checked - ok:,} on the DNC list)")

        for run, dialers in enumerate(counts, start=1):
            key = f"bench-dial-{run}-{dialers}"
            cid, _, _ = asyncio.run(_import(url, key, csv_lines(args.calls, zone,
                                                                run * args.contacts),
                                            spec, CampaignState.RUNNING))
            r = run_dialers(url, cid, dialers, batch=args.batch, parallel=args.parallel,
                            timeout_s=args.timeout)
            shares = ", ".join(f"{n:,}" for _, n in sorted(r.per_dialer.items()))
            print(f"dialers={dialers}: {r.calls:,} calls placed, {r.calls_per_s:,.1f} calls/s "
                  f"({r.calls_per_s / dialers:,.1f} per dialer; first to last create "
                  f"{r.span_s:.1f} s, wall {r.wall_s:.1f} s with process start); per dialer "
                  f"[{shares}]; dialer CPU {1000 * r.cpu_s / max(r.calls, 1):.1f} ms per call; "
                  f"double dials {r.double_dials}, unfinished {r.unfinished}")
            others = r.machine_cpu_s - r.cpu_s - r.fake_cpu_s
            print(f"  CPU over the run ({r.wall_s:.0f} s, {os.cpu_count()} CPUs): dialers "
                  f"{r.cpu_s:.0f} s, fake Twilio + sink {r.fake_cpu_s:.0f} s, everything else "
                  f"(PostgreSQL, other users) {others:.0f} s; peak calls in progress "
                  f"{r.peak_in_progress} (cap {args.cap})")
        return 0
    finally:
        with psycopg.connect(_conninfo(args.pg_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    raise SystemExit(main())
