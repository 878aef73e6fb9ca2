"""The machine's floor for a process that wakes once per 20 ms frame.

A server carrying one call sleeps between the caller's frames. On a virtual
machine each wake-up finds the caches cold, and that costs far more than the
frame's work: a decode-and-level task of 2.4 us, run after a 20 ms sleep,
was measured at 60-110 us on the project's VMs. So at one call the media
benchmark's figure is mostly what the machine charges for waking, and it
differs between machines of the same kind by two times and more.

``measure_floor`` runs the least a Python media server can do for a call, in
a process of its own on uvloop: read one Twilio media message per 20 ms from
a loopback socket (JSON, base64, mu-law decode, level), write three outbound
ones per 60 ms, nothing else. Its CPU per second, measured in the same run as
the calls, is the yardstick the one-call figure is read against.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

__all__ = ["FloorResult", "main", "measure_floor"]

FRAME_S = 0.02
_PAYLOAD = base64.b64encode(bytes(range(160))).decode()


def _message(sequence: int) -> bytes:
    return json.dumps({
        "event": "media", "sequenceNumber": str(sequence), "streamSid": "MZ" + "0" * 32,
        "media": {"track": "inbound", "chunk": str(sequence), "timestamp": str(20 * sequence),
                  "payload": _PAYLOAD},
    }, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class FloorResult:
    seconds: float
    frames: int
    cpu_s: float  # the minimal server's main thread

    @property
    def cpu_per_s(self) -> float:
        return self.cpu_s / self.seconds if self.seconds else 0.0

    @property
    def us_per_frame(self) -> float:
        return 1e6 * self.cpu_s / self.frames if self.frames else 0.0


def _minimal_server(conn: Connection) -> None:
    """The child: a uvloop server doing a media frame's least work per message."""
    import uvloop

    from callagent.audio.codec import pcm_rms, ulaw_to_pcm

    outbound = b"".join(_message(i) for i in range(3))

    class Reader(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""
            self.count = 0

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\n")) >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
                media = json.loads(line)["media"]
                pcm_rms(ulaw_to_pcm(base64.b64decode(media["payload"])))
                self.count += 1
                if self.count % 3 == 0:
                    self.transport.write(outbound)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Reader, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # the end

    uvloop.run(main())


def _thread_cpu_s(pid: int) -> float:
    """CPU seconds of a process's main thread, to the nanosecond (schedstat)."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9


def measure_floor(seconds: float = 10.0) -> FloorResult:
    """Send one media message per 20 ms for ``seconds`` to a minimal server; its CPU."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_minimal_server, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(60):
            raise RuntimeError(f"the minimal frame loop's process did not start (exit code {process.exitcode})")
        port = parent.recv()
        assert process.pid is not None
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setblocking(False)
            time.sleep(0.5)  # the child's start-up is not the floor
            frames, start = int(seconds / FRAME_S), time.monotonic()
            cpu = _thread_cpu_s(process.pid)
            for i in range(frames):
                time.sleep(max(0.0, start + i * FRAME_S - time.monotonic()))
                sock.sendall(_message(i))
                try:
                    while sock.recv(65536):
                        pass
                except BlockingIOError:
                    pass
            time.sleep(FRAME_S)  # the last frame's work
            cpu = _thread_cpu_s(process.pid) - cpu
            elapsed = time.monotonic() - start
        parent.send(None)
        process.join(timeout=5)
    finally:
        if process.is_alive():
            process.kill()
    return FloorResult(seconds=elapsed, frames=frames, cpu_s=cpu)


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/bench wake_floor [--seconds S]``: the minimal frame loop alone."""
    p = argparse.ArgumentParser(prog="scripts/bench wake_floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="how long to send frames (default 10)")
    args = p.parse_args(argv)
    if not args.seconds >= 1:
        print("scripts/bench wake_floor: --seconds must be at least 1", file=sys.stderr)
        return 2
    r = measure_floor(args.seconds)
    print(f"minimal frame loop: {r.frames} frames over {r.seconds:.1f} s, "
          f"{r.cpu_per_s:.5f} CPU s per second, {r.us_per_frame:.0f} us per frame")
    return 0
