"""Where signed audit checkpoints go, and the task that writes them.

Each checkpoint is kept in two places outside ``audit_events``:

- ``<checkpoint_dir>/checkpoints.jsonl``: one signed JSON line per checkpoint,
  appended under an ``flock`` with ``O_APPEND`` and fsynced (``CheckpointFile``);
  ship this file to write-once storage;
- the ``audit_checkpoints`` table, so the processes of a PostgreSQL deployment
  share them (append-only there, like the log).

``Checkpointer`` signs the current head of the chain. The recorder's writer
calls ``audit_committed()`` (synchronous, O(1)) after each transaction that
appended audit events; the checkpointer's own task then writes at most one
checkpoint per ``interval_s``, and ``close()`` writes a last one. Database
reads go through the session; file I/O runs in ``asyncio.to_thread``. Nothing
here ever runs on the audio path.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.compliance import checkpoint
from callagent.compliance.checkpoint import Checkpoint, CheckpointFormatError
from callagent.store import audit_queries

__all__ = ["CHECKPOINT_FILE", "AuditCheckpointer", "CheckpointFile", "Checkpointer", "FileLine"]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoints.jsonl"


class AuditCheckpointer(Protocol):
    """What ``call.recorder.Recorder`` calls (``Checkpointer`` fits; tests pass fakes)."""

    def audit_committed(self) -> None: ...  # after a commit with audit records; never blocks
    async def close(self) -> None: ...  # at recorder close: a final checkpoint


@dataclass(frozen=True, slots=True)
class FileLine:
    """One line of the checkpoint file: a parsed checkpoint, or why it is not one."""

    number: int  # 1-based
    checkpoint: Checkpoint | None
    error: str | None = None
    torn: bool = False  # the last line, without its newline (a crash mid-write)


class CheckpointFile:
    """The append-only JSON-lines file of checkpoints. Synchronous: call it
    through ``asyncio.to_thread`` from async code."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / CHECKPOINT_FILE

    def append(self, cp: Checkpoint) -> None:
        """Append one line durably (write + fsync), whole or not at all."""
        data = (checkpoint.to_json_line(cp) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        if created:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def lines(self) -> Iterator[FileLine]:
        """Every line, parsed (no signature check), streamed. A missing file has none."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return
        with f:
            for number, line in enumerate(f, start=1):
                torn = not line.endswith(b"\n")
                try:
                    cp = checkpoint.from_json_line(line.decode("utf-8"))
                except (CheckpointFormatError, UnicodeDecodeError) as exc:
                    yield FileLine(number, None, str(exc), torn=torn)
                    continue
                yield FileLine(number, cp)


class Checkpointer:
    """Signs the audit chain's head and stores it in the file and the table."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        key: bytes,
        directory: Path,
        *,
        interval_s: float = 60.0,
        timeout_s: float = 30.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not key:
            raise ValueError("Checkpointer: the checkpoint key is empty")
        self._sessions = sessions
        self._key = key
        self.file = CheckpointFile(directory)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._now = now
        self._last: tuple[int, str] | None = None  # the head we last signed
        self._last_write = float("-inf")  # loop time of that
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # the task is writing a checkpoint: let it finish
        self._closed = False
        self.written = 0

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the current head and store it now (None: the log is empty, or
        this head is the one last signed here). Raises when neither the file
        nor the table took it."""
        async with asyncio.timeout(self._timeout_s):
            async with self._sessions() as session:
                head = await audit_queries.audit_head(session)
        if head is None or head == self._last:
            return None
        cp = checkpoint.sign(self._key, head[0], head[1], self._now())
        errors: list[BaseException] = []
        try:
            await asyncio.to_thread(self.file.append, cp)
        except Exception as exc:
            log.error("audit checkpoint: could not append to %s: %s", self.file.path, exc)
            errors.append(exc)
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._sessions.begin() as session:
                    await audit_queries.add_checkpoint(session, cp)
        except Exception as exc:
            log.error("audit checkpoint: could not store it in audit_checkpoints: %s", exc)
            errors.append(exc)
        if len(errors) == 2:
            raise errors[1]
        self._last = head
        self.written += 1
        return cp

    # ---- driven by the recorder -------------------------------------------------------

    def audit_committed(self) -> None:
        """Audit events were committed: checkpoint within ``interval_s``. Never blocks."""
        if self._closed:
            return
        self._dirty.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="callagent.audit-checkpointer"
            )

    async def close(self) -> None:
        """Stop the task (letting a write in progress finish) and sign the current head."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            if not self._busy:
                task.cancel()  # it is waiting, not writing
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.checkpoint()
        except Exception:
            log.exception("audit checkpoint: the final checkpoint failed")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._dirty.wait()
            delay = self._last_write + self._interval_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._dirty.clear()
            self._last_write = loop.time()
            self._busy = True
            try:
                await self.checkpoint()
                failed = False
            except Exception:
                log.exception("audit checkpoint failed; retrying after the next interval")
                failed = True
            finally:
                self._busy = False
            if failed and not self._closed:
                self._dirty.set()
                await asyncio.sleep(max(self._interval_s, 1.0))
