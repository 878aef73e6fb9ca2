"""``callagent audit verify`` and ``callagent audit checkpoint``: the commands' logic.

``verify`` reads the signed checkpoints (the file under ``audit.checkpoint_dir``
first, then the ``audit_checkpoints`` table) and checks every signature: a
checkpoint that fails its signature is itself tampering. It then walks the
chain in ``seq`` order, ``chunk_size`` rows at a time, inside one read
snapshot, and stops at the first broken row. Every validly signed checkpoint
``(seq, hash)`` must still be in the chain, and the chain must reach the
newest one: a log that ends before it lost its tail.

Exit codes: 0 the log is intact, 1 it is broken (or a checkpoint is forged),
2 the command could not run (configuration, database, usage).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.compliance.audit import AuditRow, verify_chain
from callagent.compliance.checkpoint import Checkpoint, signature_problem
from callagent.compliance.checkpointer import Checkpointer, CheckpointFile
from callagent.config import ConfigError, Settings, load_settings
from callagent.store import audit_queries
from callagent.store.db import create_engine_for, make_sessionmaker, sqlite_path

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EXIT_BROKEN",
    "EXIT_OK",
    "EXIT_USAGE",
    "NO_KEY",
    "CheckpointSet",
    "Found",
    "Report",
    "UsageError",
    "checkpoint_main",
    "describe_break",
    "render",
    "verify",
    "verify_main",
    "write_checkpoint",
]

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2

DEFAULT_CHUNK_SIZE = 10_000
_LISTED = 5  # bad checkpoints named one by one; the rest are counted
NO_KEY = (
    "CALLAGENT_AUDIT_CHECKPOINT_KEY is not set: the signed checkpoints cannot be checked, "
    "so a log whose newest rows were cut off would pass. Set it to the key the service "
    "signs with, or pass --no-checkpoint to check the hash chain alone."
)


class UsageError(Exception):
    """The command cannot run (configuration, database, arguments): exit 2."""


@dataclass(frozen=True, slots=True)
class Found:
    checkpoint: Checkpoint
    where: str  # "var/audit/checkpoints.jsonl line 3", "audit_checkpoints id 7"

    def describe(self) -> str:
        cp = self.checkpoint
        return f"checkpoint at seq {cp.seq} (signed at {cp.at_text}, {self.where})"


@dataclass
class CheckpointSet:
    """Checkpoints from both places with their signatures checked (no I/O)."""

    key: bytes
    read: int = 0
    valid: int = 0
    by_seq: dict[int, dict[str, Found]] = field(default_factory=dict)
    newest: Found | None = None
    bad: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, cp: Checkpoint, where: str) -> None:
        self.read += 1
        problem = signature_problem(self.key, cp)
        if problem is not None:
            self._bad(f"{where}: {problem}")
            return
        self.valid += 1
        found = Found(cp, where)
        self.by_seq.setdefault(cp.seq, {}).setdefault(cp.hash, found)
        if self.newest is None or (cp.seq, cp.at) > (self.newest.checkpoint.seq,
                                                       self.newest.checkpoint.at):
            self.newest = found

    def add_malformed(self, where: str, error: str, *, torn: bool) -> None:
        self.read += 1
        if torn:
            self.warnings.append(
                f"{where}: torn last line ignored (a crash while writing it?): {error}"
            )
            return
        self._bad(f"{where}: malformed checkpoint ({error}): the file was altered")

    def _bad(self, text: str) -> None:
        self.bad += 1
        if self.bad <= _LISTED:
            self.problems.append(text)

    def all_problems(self) -> list[str]:
        extra = self.bad - _LISTED
        more = [f"... and {extra} more bad checkpoints"] if extra > 0 else []
        return [*self.problems, *more]


@dataclass
class Report:
    events: int = 0
    head: tuple[int, str] | None = None
    first_seq: int | None = None
    broken: str | None = None  # the first broken row
    problems: list[str] = field(default_factory=list)  # everything wrong, broken first
    warnings: list[str] = field(default_factory=list)
    checkpoints: CheckpointSet | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def describe_break(seq: int, reason: str) -> str:
    """The first broken row, named with what its symptom means."""
    if reason.startswith("hash does not match"):
        return f"row seq {seq}: hash does not match its content: the row was edited"
    if reason.startswith("prev_hash does not match"):
        return (f"row seq {seq}: prev_hash does not match the previous row's hash: "
                "a row was inserted, deleted or reordered before it")
    if " missing (next is " in reason:
        first = int(reason.split()[1])
        gap = f"seq {first}" if first == seq - 1 else f"seq {first} to {seq - 1}"
        return f"row seq {seq}: seq gap, {gap} missing: rows were deleted"
    if "out of order" in reason:
        return f"row seq {seq}: {reason}: rows were inserted or renumbered"
    return f"row seq {seq}: {reason}: the row was edited"


# ---- verify -----------------------------------------------------------------------------


def _read_file(cps: CheckpointSet, file: CheckpointFile) -> None:
    for line in file.lines():
        where = f"{file.path} line {line.number}"
        if line.checkpoint is None:
            cps.add_malformed(where, line.error or "unreadable", torn=line.torn)
        else:
            cps.add(line.checkpoint, where)


def _snapshot_options(session: AsyncSession) -> dict[str, Any]:
    if session.get_bind().dialect.name == "postgresql":
        return {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    return {"sqlite_begin": "DEFERRED"}


async def _walk(
    session: AsyncSession, cps: CheckpointSet | None, chunk_size: int, report: Report
) -> None:
    start: tuple[int, str] | None = None
    mismatches = _Mismatches()
    async for rows in audit_queries.audit_chunks(session, chunk_size=chunk_size):
        if report.first_seq is None:
            report.first_seq = rows[0].seq
        result = verify_chain(rows, start=start)
        report.events += result.checked
        if result.head_seq is not None and result.head_hash is not None:
            start = (result.head_seq, result.head_hash)
        if cps is not None and cps.by_seq:
            mismatches.compare(rows[: result.checked], cps)
        if not result.ok:
            assert result.broken_seq is not None and result.reason is not None
            report.broken = describe_break(result.broken_seq, result.reason)
            report.problems.append(report.broken)
            break
    report.head = start  # the last good row
    report.problems.extend(mismatches.problems())


@dataclass
class _Mismatches:
    """Checkpointed heads the chain no longer holds (the first one named)."""

    first: str | None = None
    count: int = 0
    last_match: int | None = None  # highest checkpointed seq still held before the first miss

    def compare(self, rows: Sequence[AuditRow], cps: CheckpointSet) -> None:
        for row in rows:
            hashes = cps.by_seq.get(row.seq)
            if not hashes:
                continue
            for found in hashes.values():
                if found.checkpoint.hash == row.hash:
                    if self.first is None:
                        self.last_match = row.seq
                    continue
                self.count += 1
                if self.first is None:
                    since = (f" and after seq {self.last_match} (the last checkpoint it still "
                             "matches)" if self.last_match is not None else "")
                    self.first = (
                        f"rewritten: {found.describe()} has hash {found.checkpoint.hash[:16]}... "
                        f"but row seq {row.seq} has {row.hash[:16]}...: the log was rewritten "
                        f"at or before seq {row.seq}{since}"
                    )

    def problems(self) -> list[str]:
        if self.first is None:
            return []
        more = [f"... and {self.count - 1} more checkpoints do not match"] if self.count > 1 else []
        return [self.first, *more]


async def verify(
    url: str,
    *,
    key: bytes | None,
    checkpoint_dir: Path,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Report:
    """Verify the audit log at ``url``; ``key=None`` checks the hash chain alone."""
    if chunk_size < 1:
        raise UsageError(f"--chunk-size: expected at least 1, got {chunk_size}")
    _require_database(url)
    report = Report()
    cps: CheckpointSet | None = None
    if key is not None:
        cps = CheckpointSet(key)
        # the file before the database snapshot: every head it names is committed by then
        await asyncio.to_thread(_read_file, cps, CheckpointFile(checkpoint_dir))
    engine = create_engine_for(url)
    try:
        async with make_sessionmaker(engine)() as session:
            await session.connection(execution_options=_snapshot_options(session))
            if cps is not None:
                async for row_id, cp in audit_queries.stored_checkpoints(session):
                    cps.add(cp, f"audit_checkpoints id {row_id}")
            await _walk(session, cps, chunk_size, report)
    except sa_exc.DBAPIError as exc:
        raise UsageError(
            f"database error: {_brief(exc)} (is the database migrated? "
            "`callagent db upgrade`)"
        ) from None
    finally:
        await engine.dispose()
    if cps is None:
        report.warnings.append(
            "checkpoints not checked (--no-checkpoint): a log whose newest rows were cut "
            "off would pass"
        )
        return report
    report.checkpoints = cps
    report.warnings.extend(cps.warnings)
    if report.broken is None:
        end = report.head[0] if report.head is not None else 0
        newest = cps.newest
        if newest is not None and newest.checkpoint.seq > end:
            report.problems.append(
                f"missing tail: checkpoint at seq {newest.checkpoint.seq} (signed at "
                f"{newest.checkpoint.at_text}, {newest.where}) but the log ends at seq {end}",
            )
    report.problems.extend(cps.all_problems())
    if report.broken is None and cps.newest is None and report.head is not None:
        report.problems.append(
            f"no validly signed checkpoint in {checkpoint_dir} or audit_checkpoints: "
            "cannot tell whether the newest rows were cut off"
        )
    return report


def render(report: Report) -> str:
    lines: list[str] = []
    if report.ok:
        if report.head is None:
            lines.append("audit log OK: empty (no events)")
        else:
            lines.append(f"audit log OK: {report.events} events (seq {report.first_seq} to "
                         f"{report.head[0]})")
    else:
        lines.append(f"audit log BROKEN: {report.problems[0]}")
        lines.extend(f"  also: {p}" for p in report.problems[1:])
        if report.broken is not None:
            lines.append(f"events verified before the first broken row: {report.events}")
        else:
            lines.append(f"hash chain intact: {report.events} events")
    if report.head is not None:
        label = "last good row" if report.broken is not None else "head"
        lines.append(f"{label}: seq {report.head[0]} hash {report.head[1]}")
    cps = report.checkpoints
    if cps is not None:
        text = f"checkpoints: {cps.read} read, {cps.valid} validly signed"
        if cps.bad:
            text += f", {cps.bad} bad"
        if cps.newest is not None:
            text += f"; newest: {cps.newest.describe()}"
        lines.append(text)
    lines.extend(f"warning: {w}" for w in report.warnings)
    return "\n".join(lines)


# ---- checkpoint -------------------------------------------------------------------------


async def write_checkpoint(url: str, *, key: bytes, checkpoint_dir: Path) -> Checkpoint | None:
    """Sign the current head now (None: the log is empty)."""
    _require_database(url)
    engine = create_engine_for(url)
    try:
        return await Checkpointer(make_sessionmaker(engine), key, checkpoint_dir).checkpoint()
    except sa_exc.DBAPIError as exc:
        raise UsageError(f"database error: {_brief(exc)}") from None
    finally:
        await engine.dispose()


# ---- the commands -------------------------------------------------------------------------


def _require_database(url: str) -> None:
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise UsageError(f"no database at {path}")


def _load(url: str | None, checkpoint_dir: str | None) -> tuple[Settings, str, Path]:
    try:
        settings = load_settings(for_service=False)
    except ConfigError as exc:
        raise UsageError(f"configuration error: {exc}") from None
    return (
        settings,
        url or settings.database.url,
        Path(checkpoint_dir or settings.audit.checkpoint_dir),
    )


def verify_main(
    *,
    url: str | None = None,
    checkpoint_dir: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    use_checkpoints: bool = True,
) -> int:
    try:
        settings, db_url, directory = _load(url, checkpoint_dir)
        key = settings.audit.checkpoint_key.encode("utf-8") or None
        if use_checkpoints and key is None:
            raise UsageError(NO_KEY)
        report = asyncio.run(verify(
            db_url,
            key=key if use_checkpoints else None,
            checkpoint_dir=directory,
            chunk_size=chunk_size,
        ))
    except UsageError as exc:
        print(f"callagent audit verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(render(report))
    return EXIT_OK if report.ok else EXIT_BROKEN


def checkpoint_main(*, url: str | None = None, checkpoint_dir: str | None = None) -> int:
    try:
        settings, db_url, directory = _load(url, checkpoint_dir)
        if not settings.audit.checkpoint_key:
            raise UsageError(
                "CALLAGENT_AUDIT_CHECKPOINT_KEY is not set: there is no key to sign with"
            )
        cp = asyncio.run(write_checkpoint(
            db_url, key=settings.audit.checkpoint_key.encode("utf-8"), checkpoint_dir=directory
        ))
    except UsageError as exc:
        print(f"callagent audit checkpoint: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sa_exc.SQLAlchemyError) as exc:
        print(f"callagent audit checkpoint: could not store the checkpoint: {_brief(exc)}",
              file=sys.stderr)
        return EXIT_BROKEN
    if cp is None:
        print("audit log is empty: nothing to checkpoint")
    else:
        print(f"checkpoint written: seq {cp.seq} hash {cp.hash} signed at {cp.at_text} "
              f"({directory / 'checkpoints.jsonl'} and audit_checkpoints)")
    return EXIT_OK


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]
