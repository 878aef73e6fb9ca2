"""Console benchmark: the call list, a filtered list, a full-text search and a call detail
against a large generated history, on SQLite and on PostgreSQL.

``scripts/bench console [--calls 100000] [--turns 1000000] [--db sqlite|postgresql|both]``

1. Generates ``--calls`` calls and ``--turns`` turns (about a tenth of the caller turns
   say one of a few rare phrases; the rest draw words from a Zipf-like vocabulary),
   spread over the last 60 days, plus the transcript word index, and bulk-loads them into
   a fresh, migrated database: SQLite under ``--sqlite-dir`` (executemany in one
   transaction), PostgreSQL in a database of its own (``--pg-database``, created and
   dropped here, never the tests' database) with COPY. Then ANALYZE.
2. Starts ``callagent serve`` on it as a separate process, logs in an operator, and
   times ``--requests`` HTTP requests of each kind (after a warm-up): the first page of
   the list, a page deep in the list (keyset cursor), a filtered list, a number filter,
   a rare-phrase search, a common-word search, a call detail (which also appends to the
   audit log), and a JSON export.
3. Prints load time and p50/p95/max latency per kind; exits 1 if any p95 is over
   ``--target-ms`` (200 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import platform
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from callagent.bench._server import serve
from callagent.console.search_index import terms_of
from callagent.store.db import create_engine_for, make_sessionmaker, sync_url, upgrade

__all__ = ["main"]

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PASSWORD = "benchmark password"
RARE = ("my parcel never arrived", "the courier left it at the wrong door",
        "i was charged twice for delivery")
_VOCAB_SEED = ("order status delivery refund parcel address account payment card tracking "
               "number please thanks yes no hello help change cancel return item store week "
               "today tomorrow morning evening phone email name confirm").split()


@dataclass(frozen=True)
class Timing:
    kind: str
    samples: list[float]

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    words = list(_VOCAB_SEED)
    letters = "abcdefghijklmnopqrstuvwxyz"
    while len(words) < size:
        words.append("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return words


@dataclass(frozen=True)
class Generated:
    calls: list[tuple[object, ...]]
    turns: list[tuple[object, ...]]
    terms: list[tuple[str, int, str]]


def generate(n_calls: int, n_turns: int, *, seed: int = 7, chunk: int = 2000
             ) -> Iterator[Generated]:
    """Calls, turns and index rows in chunks of ``chunk`` calls (ids are dense from 1)."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    cum: list[float] = []
    for i in range(len(vocab)):
        cum.append((cum[-1] if cum else 0.0) + 1.0 / (i + 1))
    now = datetime.now(UTC)
    per_call = max(1, n_turns // max(1, n_calls))
    extra = n_turns - per_call * n_calls
    turn_id = 0
    agents, engines = ("customer_service", "sales", "billing", "returns", "fixture"), (
        "pipeline", "fixture", "realtime")
    statuses = ("completed",) * 8 + ("no-answer", "busy", "failed")
    for start in range(0, n_calls, chunk):
        calls: list[tuple[object, ...]] = []
        turns: list[tuple[object, ...]] = []
        terms: list[tuple[str, int, str]] = []
        for i in range(start, min(n_calls, start + chunk)):
            call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            started = now - timedelta(seconds=rng.uniform(0, 60 * 86400))
            direction = "outbound" if rng.random() < 0.4 else "inbound"
            number = f"+1415{rng.randrange(10**6, 10**7)}"
            ours = "+15005550001"
            n = per_call + (1 if i < extra else 0)
            calls.append((call_id, "CA" + call_id.replace("-", ""), direction,
                          number if direction == "inbound" else ours,
                          ours if direction == "inbound" else number,
                          rng.choice(agents), rng.choice(engines),
                          rng.randrange(1, 20) if direction == "outbound" else None,
                          rng.choice(statuses), started, started + timedelta(seconds=20 + 10 * n),
                          "caller hung up", 20 + 10 * n))
            clock = 500.0
            for seq in range(1, n + 1):
                turn_id += 1
                caller = seq % 2 == 1
                if caller and rng.random() < 0.02:
                    text = f"hello {rng.choice(RARE)} {rng.choice(vocab)}"
                else:
                    text = " ".join(rng.choices(vocab, cum_weights=cum, k=6 if caller else 10))
                length = 1500.0 if caller else 2500.0
                interrupted = not caller and rng.random() < 0.1
                turns.append((turn_id, call_id, seq, "caller" if caller else "agent", text,
                               clock, clock + length, interrupted,
                               None if caller else (text[: len(text) // 2] if interrupted else text),
                               None if caller else length,
                               None if caller else rng.uniform(400, 1500)))
                terms.extend((t, turn_id, call_id) for t in sorted(terms_of(text)))
                clock += length + 600
        yield Generated(calls, turns, terms)


_CALL_COLS = ("id", "twilio_call_sid", "direction", "from_number", "to_number", "agent", "engine",
              "campaign_id", "status", "started_at", "ended_at", "end_reason", "duration_s")
_TURN_COLS = ("id", "call_id", "seq", "speaker", "text", "start_ms", "end_ms", "interrupted",
              "heard_text", "heard_ms", "response_latency_ms")


def _sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def load_sqlite(path: Path, n_calls: int, n_turns: int) -> float:
    t0 = time.perf_counter()
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        for g in generate(n_calls, n_turns):
            conn.executemany(
                f"INSERT INTO calls ({','.join(_CALL_COLS)}) VALUES ({','.join('?' * 13)})",
                [tuple(_sqlite_time(v) if isinstance(v, datetime) else v for v in c)
                 for c in g.calls])
            conn.executemany(
                f"INSERT INTO turns ({','.join(_TURN_COLS)}) VALUES ({','.join('?' * 11)})",
                g.turns)
            conn.executemany(
                "INSERT INTO transcript_terms (term, turn_id, call_id) VALUES (?, ?, ?)",
                sorted(g.terms))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return time.perf_counter() - t0


def _tsv(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _copy(cur: psycopg.Cursor[tuple[object, ...]], table: str, cols: Sequence[str],
          rows: Sequence[Sequence[object]]) -> None:
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(_tsv(v) for v in row))
        buf.write("\n")
    with cur.copy(f"COPY {table} ({','.join(cols)}) FROM STDIN") as copy:
        copy.write(buf.getvalue())


def load_postgres(url: str, n_calls: int, n_turns: int) -> float:
    t0 = time.perf_counter()
    conninfo = sync_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur:
            for g in generate(n_calls, n_turns):
                _copy(cur, "calls", _CALL_COLS, g.calls)
                _copy(cur, "turns", _TURN_COLS, g.turns)
                _copy(cur, "transcript_terms", ("term", "turn_id", "call_id"), g.terms)
            cur.execute("SELECT setval('turns_id_seq', (SELECT max(id) FROM turns))")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - t0


async def _add_operator(url: str) -> None:
    from callagent.console.operator_store import add_operator
    from callagent.console.roles import Role

    engine = create_engine_for(url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            await add_operator(s, "bench", PASSWORD, Role.SUPERVISOR, now=datetime.now(UTC))
    finally:
        await engine.dispose()


async def measure(base: str, requests: int, ids: Sequence[str]) -> list[Timing]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        page = await http.get("/console/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        done = await http.post("/console/login", data={
            "username": "bench", "password": PASSWORD, "csrf_token": token.group(1)})
        if done.status_code != 303:
            raise RuntimeError(f"login failed: {done.status_code}")
        first = await http.get("/console/calls")
        deep = first
        for _ in range(20):  # a cursor 20 pages down
            m = re.search(r'id="next-page" href="([^"]+)"', deep.text)
            if not m:
                break
            deep = await http.get(m.group(1).replace("&amp;", "&"))
        deep_url = str(deep.url)
        number = re.search(r"<td>inbound</td><td>(\+\d+)</td>", first.text)
        kinds: list[tuple[str, list[str]]] = [
            ("list, first page", ["/console/calls"]),
            ("list, 20 pages deep", [deep_url]),
            ("filtered list", ["/console/calls?direction=outbound&engine=pipeline&outcome=no-answer"]),
            ("number filter", [f"/console/calls?number={number.group(1) if number else '+1'}"]),
            ("search, rare phrase", [f"/console/calls?q={p.replace(' ', '+')}" for p in RARE]),
            ("search, common word", ["/console/calls?q=order", "/console/calls?q=delivery"]),
            ("call detail", [f"/console/calls/{i}" for i in ids]),
            ("JSON export", [f"/console/calls/{i}/export.json" for i in ids]),
        ]
        out: list[Timing] = []
        for kind, urls in kinds:
            for url in urls[:3]:  # warm-up
                (await http.get(url)).raise_for_status()
            samples: list[float] = []
            for n in range(requests):
                t0 = time.perf_counter()
                response = await http.get(urls[n % len(urls)])
                samples.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{kind}: {urls[n % len(urls)]} -> {response.status_code}")
            out.append(Timing(kind, samples))
        return out


def _sample_ids(url: str, k: int) -> list[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            total = conn.execute(text("SELECT count(*) FROM calls")).scalar_one()
            rng = random.Random(11)
            offsets = [rng.randrange(total) for _ in range(k)]
            return [conn.execute(text("SELECT id FROM calls ORDER BY id LIMIT 1 OFFSET :o"),
                                 {"o": o}).scalar_one() for o in offsets]
    finally:
        engine.dispose()


def run_one(kind: str, url: str, args: argparse.Namespace) -> tuple[float, list[Timing]]:
    upgrade(url)
    load_s = (load_sqlite(Path(url.split("///", 1)[1]), args.calls, args.turns)
              if kind == "sqlite" else load_postgres(url, args.calls, args.turns))
    asyncio.run(_add_operator(url))
    ids = _sample_ids(url, 20)
    env = {"CALLAGENT_TWILIO_VERIFY_SIGNATURES": "false", "CALLAGENT_CONSOLE_SECRET_KEY": "b" * 64}
    with tempfile.TemporaryDirectory(prefix="callagent-console-") as tmp, serve(
        Path(tmp), env, db_url=url
    ) as server:
        timings = asyncio.run(measure(server.base_url, args.requests, ids))
    return load_s, timings


@contextlib.contextmanager
def pg_database(admin_url: str, name: str, *, keep: bool = False) -> Iterator[str]:
    conninfo = sync_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sync_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench console", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--turns", type=int, default=1_000_000)
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--requests", type=int, default=60, help="timed requests per kind")
    p.add_argument("--target-ms", type=float, default=200.0, help="p95 goal per kind")
    p.add_argument("--sqlite-dir", default="var/bench", help="where the SQLite file goes")
    p.add_argument("--pg-url", default=os.environ.get("CALLAGENT_TEST_PG_URL", DEFAULT_PG_URL),
                   help="server to create the benchmark database on")
    p.add_argument("--pg-database", default="callagent_bench_console",
                   help="database created (and dropped) for the run")
    p.add_argument("--keep", action="store_true",
                   help="keep the databases afterwards (to look into the figures)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.calls < 1 or args.turns < args.calls:
        print("scripts/bench console: need --calls >= 1 and --turns >= --calls", file=sys.stderr)
        return 2
    if args.requests < 1:
        print("scripts/bench console: --requests must be >= 1", file=sys.stderr)
        return 2
    print(f"console benchmark: {args.calls} calls, {args.turns} turns, {args.requests} requests "
          f"per kind; {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    worst = 0.0
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    for kind in kinds:
        if kind == "sqlite":
            directory = Path(args.sqlite_dir)
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / "console-bench.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            try:
                load_s, timings = run_one(kind, f"sqlite+aiosqlite:///{path}", args)
            finally:
                if not args.keep:
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            with pg_database(args.pg_url, args.pg_database, keep=args.keep) as url:
                load_s, timings = run_one(kind, url, args)
        print(f"\n[{kind}] generated and loaded in {load_s:.1f} s")
        print(f"  {'request':<22} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for t in timings:
            print(f"  {t.kind:<22} {t.pct(0.5):8.1f} {t.pct(0.95):8.1f} {max(t.samples):8.1f}")
            worst = max(worst, t.pct(0.95))
    verdict = "met" if worst <= args.target_ms else "MISSED"
    print(f"\nworst p95 {worst:.1f} ms: target {args.target_ms:.0f} ms {verdict}")
    return 0 if worst <= args.target_ms else 1
