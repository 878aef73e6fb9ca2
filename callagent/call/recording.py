"""A call's audio recording: two-channel WAV (caller left, agent right) on the call clock.

The session hands over audio with its position on the call clock (samples at
8 kHz since the media stream started): ``caller(at, pcm)`` / ``agent(at, pcm)``.
Both calls are O(1) and never block: chunks go on a bounded queue to a writer
thread (when the queue is full the chunk is dropped and counted). The thread
writes each channel to its own raw file at the chunk's offset, so gaps (a
pause, audio before consent) are silence; ``finish(keep=True)`` interleaves
the two into ``<directory>/<call id>.wav`` in the thread, ``keep=False``
removes everything.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from callagent.audio.pcm import Pcm
from callagent.audio.wavfile import write_wav

__all__ = ["CallRecording"]

log = logging.getLogger(__name__)
RATE = 8000


@dataclass(frozen=True, slots=True)
class _Chunk:
    channel: int  # 0 caller, 1 agent
    at: int  # sample offset on the call clock
    samples: bytes  # int16 little-endian


class CallRecording:
    def __init__(self, directory: Path, call_id: str, *, queue_chunks: int = 2000) -> None:
        if not call_id or "/" in call_id or call_id.startswith("."):
            raise ValueError(f"not a usable call id for a file name: {call_id!r}")
        self.path = directory / f"{call_id}.wav"
        self._raw = (directory / f".{call_id}.caller.raw", directory / f".{call_id}.agent.raw")
        self._queue: queue.Queue[_Chunk | None] = queue.Queue(maxsize=queue_chunks)
        self._thread = threading.Thread(target=self._run, name=f"recording-{call_id}", daemon=True)
        self._error: BaseException | None = None
        self.dropped = 0
        self.had_audio = False  # some audio reached the disk
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    # ---- the audio side: never blocks --------------------------------------------

    def caller(self, at: int, pcm: np.ndarray) -> None:
        self._put(_Chunk(0, at, pcm.astype("<i2", copy=False).tobytes()))

    def agent(self, at: int, pcm: np.ndarray) -> None:
        self._put(_Chunk(1, at, pcm.astype("<i2", copy=False).tobytes()))

    def _put(self, chunk: _Chunk) -> None:
        if self._closed or chunk.at < 0 or not chunk.samples:
            return
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            self.dropped += 1

    # ---- the writer thread ------------------------------------------------------

    def _run(self) -> None:
        files: list[BinaryIO] = []
        try:
            while (chunk := self._queue.get()) is not None:
                if not files:  # nothing touches the disk until there is audio to keep
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    files = [open(p, "wb") for p in self._raw]  # noqa: SIM115 (closed below)
                    self.had_audio = True
                f = files[chunk.channel]
                f.seek(2 * chunk.at)
                f.write(chunk.samples)
        except BaseException as exc:  # kept for finish(); the audio path never sees it
            self._error = exc
            while self._queue.get() is not None:
                pass
        finally:
            for f in files:
                f.close()

    def _assemble(self) -> None:
        left, right = (
            np.fromfile(p, dtype="<i2") if p.exists() else np.zeros(0, np.int16) for p in self._raw
        )
        n = max(len(left), len(right))
        channels = [np.pad(c, (0, n - len(c))).astype(np.int16) for c in (left, right)]
        tmp = self.path.with_suffix(".wav.part")
        write_wav(tmp, [Pcm(channels[0], RATE), Pcm(channels[1], RATE)])
        tmp.replace(self.path)

    def _remove(self, *, wav: bool) -> None:
        for p in (*self._raw, *((self.path,) if wav else ())):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("recording: could not remove %s: %s", p, exc)

    async def finish(self, *, keep: bool) -> Path | None:
        """Stop taking audio; the WAV's path when kept (None when discarded, empty or failed)."""
        if self._closed:
            return None
        self._closed = True
        while True:  # the end marker must get in: make room by waiting, off the audio path
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                await asyncio.sleep(0.01)
        if self._thread.is_alive() or self._thread.ident is not None:
            await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            log.error("recording %s failed: %r", self.path, self._error)
            await asyncio.to_thread(self._remove, wav=True)
            return None
        if not keep or not self.had_audio:
            await asyncio.to_thread(self._remove, wav=True)
            return None
        try:
            await asyncio.to_thread(self._assemble)
        except OSError as exc:
            log.error("recording %s could not be assembled: %s", self.path, exc)
            await asyncio.to_thread(self._remove, wav=True)
            return None
        await asyncio.to_thread(self._remove, wav=False)
        return self.path
