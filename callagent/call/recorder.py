"""The recorder: call records -> bounded queue -> batched SQL writes, never blocking.

``submit(record)`` is synchronous and O(1): it puts the record on a bounded
``asyncio.Queue`` or, when that is full, on an in-memory overflow list (from
then on every record goes to the overflow until the writer has taken it, so
order holds). One writer task does all I/O:

- It takes up to ``batch_size`` records (waiting at most ``flush_interval_ms``
  for a batch to fill) and writes them in one transaction
  (``call.apply.apply_all``: ``store.queries.apply_records`` plus the
  do-not-call and recording-link records).
- Overflow: when the overflow list is non-empty, the writer spills everything
  queued (queue first, then overflow) to the journal in order and replays it
  from disk, so memory stays bounded by about one queue's worth of records.
- Database unavailable (connection, lock and timeout errors): the batch goes
  to the journal, and so does every later batch; every ``retry_interval_ms``
  the writer replays the journal in order, and only when it is empty do new
  records go straight to the database again. The file is then removed.
- A batch that fails for any other reason (a bad record) is retried record by
  record; records that still fail go to ``rejected.jsonl`` (never dropped
  silently) and the rest are written.

Journal: ``<journal_dir>/recorder-<uuid>.jsonl``, one JSON line per batch
``{"id": batch id, "start": n, "records": [record_to_json(...), ...]}``,
fsynced per append, all file I/O in ``asyncio.to_thread``. Each process holds
an ``flock`` on its own journal; at start, journals whose lock is free (their
process died) are adopted and replayed before anything else. Replays are
idempotent: rows have unique keys and each audit record carries the key
``<batch id>:<position>`` (``audit_events.source_key``), so a batch whose
commit outcome was unknown can be replayed safely.

Audit checkpoints: an optional ``checkpointer`` is told (``audit_committed()``,
synchronous) after every transaction that contained audit records commits,
and closed (a final checkpoint) when the recorder closes; it decides when to
sign the chain's head (``compliance.checkpointer.Checkpointer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.call.apply import apply_all
from callagent.call.records import AuditRecord, Record, record_from_json, record_to_json
from callagent.compliance.checkpointer import AuditCheckpointer
from callagent.config import RecorderSettings

__all__ = ["Recorder", "RecorderClosed", "is_unavailable"]

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "recorder-"
JOURNAL_SUFFIX = ".jsonl"
REJECTED_FILE = "rejected.jsonl"

# PostgreSQL SQLSTATEs meaning "the schema is not there (yet)": wait, don't reject.
_SCHEMA_MISSING = {"42P01", "42703", "3F000", "42883"}


class RecorderClosed(RuntimeError):
    """``submit`` after ``close()``."""


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means "the database cannot take writes now" (retry later),
    False when the data itself was refused (a bad record)."""
    if isinstance(exc, (TimeoutError, OSError, sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return isinstance(exc, sa_exc.ProgrammingError) and sqlstate in _SCHEMA_MISSING
    return False


@dataclass(frozen=True, slots=True)
class _Entry:
    """A batch: ``records[i]`` has the idempotency key ``f"{id}:{start + i}"``."""

    id: str
    start: int
    records: tuple[Record, ...]

    def keys(self) -> list[str | None]:
        return [f"{self.id}:{self.start + i}" for i in range(len(self.records))]

    def tail(self, i: int) -> _Entry:
        return _Entry(self.id, self.start + i, self.records[i:])


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _encode(entry: _Entry) -> bytes:
    data = {
        "id": entry.id,
        "start": entry.start,
        "records": [record_to_json(r) for r in entry.records],
    }
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return text.encode("utf-8") + b"\n"


def _decode(line: bytes) -> _Entry:
    data = json.loads(line)
    return _Entry(
        str(data["id"]),
        int(data.get("start", 0)),
        tuple(record_from_json(r) for r in data["records"]),
    )


@dataclass(eq=False)
class _Segment:
    path: Path
    fd: int  # holds the flock
    adopted: bool
    offset: int = 0
    reader: IO[bytes] | None = field(default=None)


class _Journal:
    """The on-disk backlog. Synchronous: called through ``asyncio.to_thread``,
    one call at a time (only the writer task uses it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segments: list[_Segment] = []  # replay order: adopted ones, then our own
        self._own: _Segment | None = None
        self._next_offset = 0

    @property
    def pending(self) -> bool:
        return bool(self._segments)

    def adopt(self) -> int:
        """Lock and queue the journals of dead processes; returns how many."""
        if not self.directory.is_dir():
            return 0
        found: list[tuple[int, str, Path]] = []
        for path in self.directory.glob(f"{JOURNAL_PREFIX}*{JOURNAL_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                found.append((path.stat().st_mtime_ns, path.name, path))
        adopted = 0
        known = {s.path for s in self._segments}
        for _, _, path in sorted(found):
            if path in known:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            if not self._lock(fd, path):
                continue
            log.warning("recorder: replaying journal %s left by an earlier process", path)
            before_own = len(self._segments) - (self._own is not None)
            self._segments.insert(before_own, _Segment(path, fd, True))
            adopted += 1
        return adopted

    @staticmethod
    def _lock(fd: int, path: Path) -> bool:
        """Take the file's lock; False (fd closed) if it is held or the file is gone."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return False
        return True

    def _create_own(self) -> _Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            path = self.directory / f"{JOURNAL_PREFIX}{uuid.uuid4().hex}{JOURNAL_SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            if self._lock(fd, path):
                break
        _fsync_dir(self.directory)
        seg = _Segment(path, fd, False)
        self._own = seg
        self._segments.append(seg)
        return seg

    def append(self, entries: Sequence[_Entry]) -> None:
        """Append batches durably (write + fsync) or not at all."""
        data = b"".join(_encode(e) for e in entries)
        seg = self._own or self._create_own()
        size = os.fstat(seg.fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(seg.fd, view) :]
            os.fsync(seg.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(seg.fd, size)
            raise

    def peek(self) -> _Entry | None:
        """The oldest batch not yet replayed (None: the journal is empty and removed)."""
        while self._segments:
            seg = self._segments[0]
            if seg.reader is None:
                seg.reader = open(seg.path, "rb")  # noqa: SIM115 (closed in _finish)
            seg.reader.seek(seg.offset)
            line = seg.reader.readline()
            if not line:
                self._finish(seg)
                continue
            if not line.endswith(b"\n"):
                # only a crash mid-write leaves this (our own appends truncate on failure)
                log.error("recorder: torn last line in journal %s, kept in %s",
                          seg.path, REJECTED_FILE)
                self._keep_line("torn journal line", line)
                self._finish(seg)
                continue
            next_offset = seg.offset + len(line)
            try:
                entry = _decode(line)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("recorder: unreadable journal line in %s (%s), kept in %s",
                          seg.path, exc, REJECTED_FILE)
                self._keep_line(f"unreadable journal line: {exc}", line)
                seg.offset = next_offset
                continue
            self._next_offset = next_offset
            return entry
        return None

    def _keep_line(self, error: str, line: bytes) -> None:
        self.write_rejected([{"error": error, "raw": line.decode("utf-8", "replace")}])

    def advance(self) -> None:
        """The batch ``peek`` returned is in the database."""
        self._segments[0].offset = self._next_offset

    def _finish(self, seg: _Segment) -> None:
        if seg.reader is not None:
            seg.reader.close()
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        os.close(seg.fd)
        self._segments.remove(seg)
        if seg is self._own:
            self._own = None

    def write_rejected(self, items: Sequence[dict[str, Any]]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = b"".join(
            json.dumps(i, ensure_ascii=False, default=_json_default).encode("utf-8") + b"\n"
            for i in items
        )
        fd = os.open(self.directory / REJECTED_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Release locks; the files stay for the next start."""
        for seg in self._segments:
            if seg.reader is not None:
                seg.reader.close()
            os.close(seg.fd)
        self._segments.clear()
        self._own = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Recorder:
    """Takes call records from the audio path and gets every one into the database."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: RecorderSettings,
        *,
        write_timeout_s: float = 30.0,
        checkpointer: AuditCheckpointer | None = None,
    ) -> None:
        self._sessions = sessions
        self._checkpointer = checkpointer
        self._batch_size = settings.batch_size
        self._flush_s = settings.flush_interval_ms / 1000
        self._retry_s = settings.retry_interval_ms / 1000
        self._write_timeout_s = write_timeout_s
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=settings.queue_size)
        self._overflow: deque[Record] = deque()
        self._journal = _Journal(Path(settings.journal_dir))
        self._mem_tail: list[_Entry] = []  # batches the journal could not take (disk error)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._next_retry = 0.0
        self._down_since: float | None = None  # for logging an outage once
        self._written = self._journaled = self._replayed = 0
        self._batches = self._rejected = self._overflowed = 0

    # ---- the audio side: never awaits ---------------------------------------------

    def submit(self, record: Record) -> None:
        if self._closed:
            raise RecorderClosed(f"recorder is closed; record not taken: {record!r}")
        if not self._overflow:
            try:
                self._queue.put_nowait(record)
                self._wakeup.set()
                return
            except asyncio.QueueFull:
                pass
        self._overflow.append(record)  # keeps order: once here, all later records follow
        self._overflowed += 1
        self._wakeup.set()

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("recorder already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="callagent.recorder")

    async def close(self) -> None:
        """Write everything taken so far (to the journal if the database is down)."""
        if self._closed and self._task is None:
            return
        self._closed = True
        self._wakeup.set()
        if self._task is None:
            self.start()
        assert self._task is not None
        try:
            await asyncio.shield(self._task)
        finally:
            if self._task.done():
                self._task = None
                await asyncio.to_thread(self._journal.close)
                await self._close_checkpointer()

    async def _close_checkpointer(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is None:
            return
        try:
            await checkpointer.close()
        except Exception:
            log.exception("recorder: closing the audit checkpointer failed")

    async def __aenter__(self) -> Recorder:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- figures ---------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Records submitted but not yet taken by the writer."""
        return self._queue.qsize() + len(self._overflow)

    @property
    def journal_pending(self) -> bool:
        """Records wait in the journal (or in memory behind it) for the database."""
        return self._journal.pending or bool(self._mem_tail)

    @property
    def written(self) -> int:
        """Records written straight from the queue."""
        return self._written

    @property
    def journaled(self) -> int:
        """Records appended to the journal (database down, or overflow spilled)."""
        return self._journaled

    @property
    def replayed(self) -> int:
        """Records written to the database from the journal."""
        return self._replayed

    @property
    def batches(self) -> int:
        """Committed write transactions."""
        return self._batches

    @property
    def rejected(self) -> int:
        """Records the database refused (kept in ``rejected.jsonl``)."""
        return self._rejected

    @property
    def overflowed(self) -> int:
        """Records that found the queue full (held in the overflow list, then spilled)."""
        return self._overflowed

    # ---- the writer task ---------------------------------------------------------

    async def _run(self) -> None:
        try:
            if await asyncio.to_thread(self._journal.adopt):
                self._next_retry = 0.0
        except Exception:
            log.exception("recorder: could not look for journals left by earlier processes")
        while True:
            try:
                if await self._step():
                    break
            except Exception:  # the writer must outlive any bug; records stay queued
                log.exception("recorder: unexpected error in the writer")
                if self._closed:
                    break
                await asyncio.sleep(self._retry_s)
        self._last_resort()

    def _last_resort(self) -> None:
        """Closing with records neither in the database nor in the journal: log them."""
        stranded = [r for e in self._mem_tail for r in e.records]
        stranded += self._take(self.queue_depth)
        if stranded:
            log.error("recorder: closing with %d records not written anywhere; they follow",
                      len(stranded))
            for r in stranded:
                log.error("recorder: unwritten record %s",
                          json.dumps(record_to_json(r), default=_json_default))

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _take(self, n: int) -> list[Record]:
        out: list[Record] = []
        while len(out) < n:
            try:
                out.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        while len(out) < n and self._overflow:
            out.append(self._overflow.popleft())
        return out

    async def _wait(self, timeout: float | None) -> None:
        self._wakeup.clear()
        if timeout is not None and timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()

    async def _step(self) -> bool:
        """One round of the writer; True when closed and done."""
        if self._overflow:
            await self._spill()
        if self.journal_pending and not self._closed and self._now() >= self._next_retry:
            await self._drain()
        if not self.queue_depth:
            if self._closed:
                if self.journal_pending:
                    await self._drain()  # one last try; what fails stays journaled
                return True
            self._wakeup.clear()
            if not self.queue_depth:
                timeout = max(0.0, self._next_retry - self._now()) if self.journal_pending else None
                await self._wait(timeout)
            return False
        deadline = self._now() + self._flush_s
        while self.queue_depth < self._batch_size and not self._closed and not self._overflow:
            remaining = deadline - self._now()
            if remaining <= 0:
                break
            await self._wait(remaining)
        records = self._take(self._batch_size)
        if records:
            await self._persist(_Entry(uuid.uuid4().hex, 0, tuple(records)))
        return False

    async def _spill(self) -> None:
        entries: list[_Entry] = []
        while self.queue_depth:
            entries.append(_Entry(uuid.uuid4().hex, 0, tuple(self._take(self._batch_size))))
        if not self.journal_pending:
            self._next_retry = self._now()  # the database may be fine: replay at once
        log.warning("recorder: queue full, spilling %d records to the journal",
                    sum(len(e.records) for e in entries))
        await self._append_backlog(entries)

    async def _persist(self, entry: _Entry) -> None:
        if self.journal_pending:
            await self._append_backlog([entry])
            return
        remainder = await self._write_entry(entry, replay=False)
        if remainder is not None:
            self._next_retry = self._now() + self._retry_s
            await self._append_backlog([remainder])

    async def _append_backlog(self, entries: Sequence[_Entry]) -> None:
        """Journal ``entries`` after everything already waiting; never raises."""
        if not entries:
            return
        pending = [*self._mem_tail, *entries]
        try:
            await asyncio.to_thread(self._journal.append, pending)
        except Exception:
            log.exception(
                "recorder: journal write failed; holding %d batches in memory", len(pending)
            )
            self._mem_tail = pending
            return
        self._mem_tail = []
        self._journaled += sum(len(e.records) for e in pending)

    async def _drain(self) -> None:
        """Replay the backlog in order until it is empty or the database fails."""
        while True:
            if self._overflow:
                await self._spill()
            entry = await asyncio.to_thread(self._journal.peek) if self._journal.pending else None
            from_memory = entry is None
            if entry is None:
                if not self._mem_tail:
                    log.info("recorder: journal replayed; writing directly again")
                    return
                entry = self._mem_tail[0]
            remainder = await self._write_entry(entry, replay=True)
            if remainder is not None:
                self._next_retry = self._now() + self._retry_s
                if from_memory:
                    self._mem_tail[0] = remainder
                return  # a journal line is retried whole next time (writes are idempotent)
            if from_memory:
                self._mem_tail.pop(0)
            else:
                self._journal.advance()

    async def _write_entry(self, entry: _Entry, *, replay: bool) -> _Entry | None:
        """Write one batch; returns what is still unwritten when the database is down."""
        try:
            await self._transaction(entry.records, entry.keys())
            self._count(len(entry.records), replay)
            return None
        except Exception as exc:
            if is_unavailable(exc):
                self._note_down(exc)
                return entry
            log.warning("recorder: batch refused (%s); writing its records one by one", _brief(exc))
        for i, (record, key) in enumerate(zip(entry.records, entry.keys())):
            try:
                await self._transaction((record,), [key])
                self._count(1, replay)
            except Exception as exc:
                if is_unavailable(exc):
                    self._note_down(exc)
                    return entry.tail(i)
                await self._reject(record, exc)
        return None

    async def _transaction(self, records: Sequence[Record], keys: Sequence[str | None]) -> None:
        async with asyncio.timeout(self._write_timeout_s):
            async with self._sessions.begin() as session:
                await apply_all(session, records, list(keys))
        self._batches += 1
        if self._checkpointer is not None and any(isinstance(r, AuditRecord) for r in records):
            try:
                self._checkpointer.audit_committed()
            except Exception:  # the batch is committed: never report it as failed
                log.exception("recorder: the audit checkpointer failed")
        if self._down_since is not None:
            log.warning("recorder: database back after %.1f s", self._now() - self._down_since)
            self._down_since = None

    def _note_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = self._now()
            log.warning("recorder: database unavailable (%s); journaling until it returns",
                        _brief(exc))
        else:
            log.debug("recorder: database still unavailable (%s)", _brief(exc))

    def _count(self, n: int, replay: bool) -> None:
        if replay:
            self._replayed += n
        else:
            self._written += n

    async def _reject(self, record: Record, exc: BaseException) -> None:
        self._rejected += 1
        item = {"error": _brief(exc), "record": record_to_json(record)}
        log.error("recorder: record refused by the database (%s): %r", _brief(exc), record)
        try:
            await asyncio.to_thread(self._journal.write_rejected, [item])
        except Exception:
            log.exception("recorder: could not write %s; the record was: %r", REJECTED_FILE, item)


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]
