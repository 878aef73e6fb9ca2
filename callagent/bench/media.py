"""Media-path benchmark: N simulated calls against one server process.

``scripts/bench media --calls N --seconds S`` starts ``callagent serve`` as a
process of its own (SQLite in a temporary directory, or ``--database-url``),
measures its idle CPU, then drives N real-time calls of S seconds each from
one or more separate client processes (the simulator never runs inside the
server it measures) and prints:

- the server's CPU-seconds per call-second (``/proc/<pid>/stat``), raw and
  minus the idle baseline measured in the same run;
- its peak memory (``VmHWM``);
- late frames: the server pacer's own count (frames sent more than 20 ms
  after their schedule, ``call_metrics.late_frames``) and the callers' count
  (frames arriving more than 20 ms after the audio ahead of them had played,
  inside one run of agent speech: a gap the caller hears);
- the same machine's minimal frame loop (``bench/wake_floor.py``): what a
  Python process doing the least possible work per 20 ms frame costs per
  second here, the yardstick for the one-call figure, which is mostly the
  machine's price for waking a sleeping process 50 times a second;
- how late the client processes' event loops ran, so that a late frame can be
  blamed on the server or on the simulator, and how busy the rest of the
  machine was (other processes' CPU, CPU pressure from /proc/pressure/cpu).

The callers say a speech WAV (looped, with pauses, to S seconds) so the
fixture engine greets, replies, and gets barged in on; ``--silence`` sends
silence instead (the greeting is then the only agent audio). Call starts are
spread at random over ``--stagger`` seconds; the client processes run at nice
10 (or, with ``--client-idle``, under SCHED_IDLE) so that on a small machine
the simulator yields the CPU to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import websockets

import callagent.sim.caller as caller_module
from callagent.audio.pcm import Pcm, Samples
from callagent.audio.resample import make_resampler
from callagent.audio.wavfile import read_wav
from callagent.bench._server import TOKEN, proc_cpu_seconds, proc_status_number, serve, settle
from callagent.bench.wake_floor import measure_floor
from callagent.sim.caller import SimulatedCall, run_simulated_call
from callagent.sim.playout import CallerPlayout
from callagent.store.db import PROJECT_ROOT, sync_url
from callagent.store.models import CallMetric

__all__ = ["ArrivalPlayout", "MediaResult", "caller_audio", "main", "run"]

RATE = 8000
LATE_MS = 20.0  # the definition of a late frame, on both sides
DEFAULT_WAV = PROJECT_ROOT.parent / "shared" / "audio" / "05_barge_in_change_address.wav"
CPU_TARGET = 0.004  # CPU-seconds per call-second (reported against, never asserted)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- the machine around it -------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU-seconds all processes on the machine have used since boot (/proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK  # all but idle and iowait


def cpu_pressure_s() -> float:
    """Seconds in which some runnable task waited for a CPU, machine-wide (PSI)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(some.rsplit("total=", 1)[1]) / 1e6
    return math.nan


# ---- what the callers say -------------------------------------------------------


def caller_audio(speech: Pcm | None, seconds: float) -> Pcm:
    """``seconds`` of caller audio at 8 kHz: silence, or ``speech`` looped with pauses.

    The pattern (0.6 s pause, speech, 4.5 s pause, speech, 1.5 s pause, ...)
    barges in on the greeting, lets one reply play out, cuts the next one
    short, and so on: greeting, full replies and barge-ins in every call.
    """
    total = round(seconds * RATE)
    if speech is None:
        return Pcm(np.zeros(total, np.int16), RATE)
    samples = speech.samples
    if speech.rate != RATE:
        rs = make_resampler(speech.rate, RATE)
        samples = np.concatenate([rs.process(samples), rs.flush()])
    parts: list[Samples] = [np.zeros(int(0.6 * RATE), np.int16)]
    pauses = (4.5, 1.5)
    n = len(parts[0])
    while n < total:
        pause = np.zeros(int(pauses[len(parts) // 2 % 2] * RATE), np.int16)
        parts += [samples, pause]
        n += len(samples) + len(pause)
    return Pcm(np.concatenate(parts)[:total].astype(np.int16), RATE)


# ---- the client processes -----------------------------------------------------------


@dataclass
class ArrivalPlayout(CallerPlayout):
    """The caller's playback buffer, also timing each frame against its playout schedule.

    Inside one run of agent audio (no mark or ``clear`` between two frames) a
    frame is due when the audio queued ahead of it has finished playing; one
    that arrives more than ``late_after_ms`` after that leaves a gap the
    caller hears. The first frame of a run has no schedule to miss.
    """

    late_after_ms: float = LATE_MS
    frames: int = 0
    late_frames: int = 0
    max_late_ms: float = 0.0
    _due: float | None = None

    def on_media(self, samples: Samples, now: float) -> float:
        self.frames += 1
        if self._due is not None and now > self._due:
            late_ms = 1000.0 * (now - self._due)
            self.max_late_ms = max(self.max_late_ms, late_ms)
            if late_ms > self.late_after_ms:
                self.late_frames += 1
        start = super().on_media(samples, now)
        self._due = start + len(samples) / RATE
        return start

    def on_mark(self, name: str, now: float) -> None:
        super().on_mark(name, now)
        self._due = None  # the end of a segment: a pause may follow

    def on_clear(self, now: float) -> list[str]:
        self._due = None
        return super().on_clear(now)


@dataclass
class ClientSpec:
    base_url: str
    wav: str | None
    seconds: float
    calls: list[tuple[int, float]]  # (call number, start offset in s)
    deflate: bool = True
    nice: int = 0
    idle: bool = False  # SCHED_IDLE: the CPU only when the server leaves it idle


@dataclass
class CallOutcome:
    number: int
    call_id: str
    completed: bool
    error: str
    frames: int
    late_frames: int
    max_late_ms: float
    clears: int


@dataclass
class ClientReport:
    calls: list[CallOutcome]
    ramp_lag_max_ms: float  # event-loop lag while calls were being set up
    loop_lag_max_ms: float  # ... and once all were streaming
    loop_lag_late: int  # steady-state wake-ups more than LATE_MS behind
    cpu_s: float


def _client_main(conn: Connection, spec: ClientSpec) -> None:
    """A client process: reports ready, waits for the start time, runs its calls."""
    # The simulator must not take the CPU from the server it measures.
    if spec.idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(spec.nice)
    # run_simulated_call builds its playout from this module global. (setattr:
    # mypy refuses assignments to a class name.)
    setattr(caller_module, "CallerPlayout", ArrivalPlayout)  # noqa: B010
    if not spec.deflate:  # offer no permessage-deflate: neither side then compresses
        setattr(websockets, "connect", functools.partial(websockets.connect, compression=None))  # noqa: B010
    audio = caller_audio(read_wav(spec.wav) if spec.wav else None, spec.seconds)
    conn.send("ready")
    start_at = float(conn.recv())
    conn.send(asyncio.run(_run_client(spec, audio, start_at)))
    conn.close()


async def _run_client(spec: ClientSpec, audio: Pcm, start_at: float) -> ClientReport:
    # Loop lag, split at the end of the ramp-up (every call of this process
    # started, plus 0.5 s for the handshakes): call set-up blocks the loop.
    ramp_max, steady_max, steady_late = 0.0, 0.0, 0
    ramp_end = math.inf
    started = 0
    done = asyncio.Event()

    async def watch_loop(period: float = 0.01) -> None:
        nonlocal ramp_max, steady_max, steady_late
        while not done.is_set():
            t = time.monotonic()
            await asyncio.sleep(period)
            late_ms = 1000.0 * (time.monotonic() - t - period)
            if t < ramp_end:
                ramp_max = max(ramp_max, late_ms)
            else:
                steady_max = max(steady_max, late_ms)
                steady_late += late_ms > LATE_MS

    async def one(number: int, offset: float) -> CallOutcome:
        nonlocal started, ramp_end
        await asyncio.sleep(max(0.0, start_at + offset - time.monotonic()))
        started += 1
        if started == len(spec.calls):
            ramp_end = time.monotonic() + 0.5
        call = SimulatedCall(
            base_url=spec.base_url, public_origin=spec.base_url, auth_token=TOKEN,
            audio=audio, lead_s=0.0, tail_s=0.0,
        )
        try:
            result = await run_simulated_call(call)
        except Exception as exc:  # noqa: BLE001 - a failed call is a figure, not the end of the run
            return CallOutcome(number, "", False, f"{type(exc).__name__}: {exc}", 0, 0, 0.0, 0)
        playout = result.playout
        assert isinstance(playout, ArrivalPlayout)
        return CallOutcome(
            number, result.call_id, result.completed, result.error, playout.frames,
            playout.late_frames, playout.max_late_ms, result.clears,
        )

    cpu0 = _own_cpu_seconds()
    watcher = asyncio.create_task(watch_loop())
    outcomes = await asyncio.gather(*(one(n, off) for n, off in spec.calls))
    done.set()
    await watcher
    return ClientReport(list(outcomes), ramp_max, steady_max, steady_late, _own_cpu_seconds() - cpu0)


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_clients(base_url: str, wav: Path | None, calls: int, seconds: float, clients: int,
                stagger_s: float, deflate: bool = True, nice: int = 0, idle: bool = False,
                on_start: Callable[[], None] = lambda: None) -> list[ClientReport]:
    """N calls from ``clients`` processes, starting at random moments in the first ``stagger_s``.

    Random (seeded) rather than evenly spaced: N calls k * stagger / N apart
    would send their frames in lockstep whenever stagger / N divides 20 ms.
    """
    offsets = sorted(random.Random(20).uniform(0.0, stagger_s) for _ in range(calls))
    ctx = multiprocessing.get_context("spawn")
    procs: list[tuple[multiprocessing.context.SpawnProcess, Connection]] = []
    try:
        for c in range(clients):
            mine = [(n, offsets[n]) for n in range(c, calls, clients)]
            parent, child = ctx.Pipe()
            spec = ClientSpec(base_url, str(wav) if wav else None, seconds, mine, deflate, nice, idle)
            proc = ctx.Process(target=_client_main, args=(child, spec), daemon=True)
            proc.start()
            child.close()
            procs.append((proc, parent))
        for proc, conn in procs:
            if not conn.poll(60) or conn.recv() != "ready":
                raise RuntimeError(f"client process {proc.pid} did not get ready")
        on_start()
        start_at = time.monotonic() + 0.2
        for _, conn in procs:
            conn.send(start_at)
        reports: list[ClientReport] = []
        timeout = 0.2 + stagger_s + seconds + 60.0
        for proc, conn in procs:
            if not conn.poll(max(1.0, start_at + timeout - time.monotonic())):
                raise RuntimeError(f"client process {proc.pid} did not finish its calls")
            reports.append(conn.recv())
        return reports
    finally:
        for proc, conn in procs:
            conn.close()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


# ---- what the server recorded ------------------------------------------------------------


def server_call_metrics(db_url: str, call_ids: Sequence[str], timeout_s: float = 60.0) -> dict[str, dict[str, float]]:
    """call_metrics of these calls, once every one of them has its late_frames row."""
    engine = sa.create_engine(sync_url(db_url))
    query = sa.select(CallMetric.call_id, CallMetric.name, CallMetric.value).where(
        CallMetric.call_id.in_(list(call_ids)), CallMetric.turn_id == ""  # call-level figures
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as conn:
                metrics: dict[str, dict[str, float]] = {}
                for call_id, name, value in conn.execute(query):
                    metrics.setdefault(call_id, {})[name] = value
            if all("late_frames" in metrics.get(c, {}) for c in call_ids) or time.monotonic() > deadline:
                return metrics
            time.sleep(0.1)
    finally:
        engine.dispose()


# ---- one run -------------------------------------------------------------------------------


@dataclass
class MediaResult:
    calls: int
    seconds: float
    clients: int
    audio: str
    database: str
    deflate: bool
    client_priority: str  # "nice N" or "SCHED_IDLE"
    completed: int
    recorded: int  # calls whose metrics the server wrote
    window_s: float
    server_cpu_s: float
    server_system_cpu_s: float  # of which in the kernel
    idle_window_s: float
    idle_cpu_s: float  # measured over idle_window_s with no calls
    cpu_per_call_s_raw: float
    cpu_per_call_s_net: float  # minus the idle rate over the same window
    idle_rss_mb: float
    peak_rss_mb: float
    server_late_frames: int
    server_max_late_ms: float
    client_late_frames: int
    client_max_late_ms: float
    client_ramp_lag_max_ms: float
    client_loop_lag_max_ms: float
    client_loop_late_wakeups: int
    client_cpu_s: float
    others_cpu_s: float  # everything else on the machine in the window: noise
    cpu_pressure_pct: float  # share of the window some runnable task waited for a CPU
    server_preempted: int  # the server main thread's involuntary context switches
    frames_out_server: int
    frames_out_client: int
    frames_in_server: int
    clears: int
    cores: int
    machine: str
    # The least a Python process pays per call-second here (wake_floor), same run; None: not run.
    floor_cpu_per_s: float | None = None
    floor_us_per_frame: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def cpu_us_per_message(self) -> float:
        messages = self.frames_in_server + self.frames_out_server
        net_cpu_s = max(0.0, self.server_cpu_s - self.idle_cpu_in_window_s)
        return 1e6 * net_cpu_s / messages if messages else 0.0

    @property
    def idle_cpu_in_window_s(self) -> float:
        return self.idle_cpu_s / self.idle_window_s * self.window_s if self.idle_window_s else 0.0


def machine() -> str:
    model = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, Python {platform.python_version()}"


def run(args: argparse.Namespace) -> MediaResult:
    clients = args.clients or max(1, math.ceil(args.calls / 100))
    wav = None if args.silence else Path(args.wav)
    cprofile = Path(args.profile).resolve() if args.profile and args.profile.endswith(".prof") else None
    # The media path is measured with the prepared-audio engine, whatever the default.
    fixture = {"CALLAGENT_AGENT_DEFAULT_PROFILE": "fixture"}
    with tempfile.TemporaryDirectory(prefix="callagent-bench-") as tmp, serve(
        Path(tmp), fixture, db_url=args.database_url, port=args.port, cprofile=cprofile
    ) as server:
        _say(f"server pid {server.pid} on {server.base_url} ({server.log}); warm-up call {args.warmup:g} s")
        if args.warmup > 0:  # first-call imports and caches are not the media path
            asyncio.run(run_simulated_call(SimulatedCall(
                base_url=server.base_url, public_origin=server.base_url, auth_token=TOKEN,
                audio=caller_audio(read_wav(wav) if wav else None, args.warmup),
                lead_s=0.0, tail_s=0.0,
            )))
        _say(f"settled after {settle(server):.0f} s")
        idle_s = args.idle_seconds if args.idle_seconds is not None else args.seconds
        _say(f"idle baseline {idle_s:g} s")
        cpu, t = server.cpu_seconds(), time.monotonic()
        time.sleep(idle_s)
        idle_cpu, idle_window = server.cpu_seconds() - cpu, time.monotonic() - t
        idle_rss = proc_status_number(server.pid, "VmRSS") / 1024.0
        floor = None
        if args.floor_seconds > 0:
            _say(f"minimal frame loop {args.floor_seconds:g} s (what this machine charges per call)")
            floor = measure_floor(args.floor_seconds)

        mark: dict[str, float] = {}
        profiler: list[subprocess.Popen[bytes]] = []

        def start_window() -> None:
            if args.profile and not cprofile:
                profiler.append(_start_profiler(server.pid, Path(args.profile)))
            mark["user"], mark["system"] = proc_cpu_seconds(server.pid)
            mark["cpu"], mark["t"] = mark["user"] + mark["system"], time.monotonic()
            mark["busy"], mark["psi"] = machine_busy_seconds(), cpu_pressure_s()
            mark["preempted"] = proc_status_number(server.pid, "nonvoluntary_ctxt_switches")

        _say(f"{args.calls} calls x {args.seconds:g} s from {clients} client process(es)")
        reports = run_clients(server.base_url, wav, args.calls, args.seconds, clients,
                              args.stagger, not args.no_deflate,
                              args.client_nice, args.client_idle, start_window)
        outcomes = [o for r in reports for o in r.calls]
        ids = [o.call_id for o in outcomes if o.call_id]
        metrics = server_call_metrics(server.db_url, ids)
        user, system = proc_cpu_seconds(server.pid)
        cpu_s, window_s = user + system - mark["cpu"], time.monotonic() - mark["t"]
        busy_s = machine_busy_seconds() - mark["busy"]
        pressure_s = cpu_pressure_s() - mark["psi"]
        preempted = proc_status_number(server.pid, "nonvoluntary_ctxt_switches") - mark["preempted"]
        peak_rss = proc_status_number(server.pid, "VmHWM") / 1024.0
        for p in profiler:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=60)

    completed = sum(o.completed for o in outcomes)
    call_seconds = args.calls * args.seconds  # the calls asked for, failed ones included
    idle_in_window = idle_cpu / idle_window * window_s

    def total(name: str) -> float:
        return sum(m.get(name, 0.0) for m in metrics.values())

    errors = [f"call {o.number}: {o.error}" for o in outcomes if not o.completed]
    errors += [f"call {c}: the server recorded no metrics" for c in ids if "late_frames" not in metrics.get(c, {})]
    return MediaResult(
        calls=args.calls, seconds=args.seconds, clients=clients,
        audio=wav.name if wav else "silence", deflate=not args.no_deflate,
        client_priority="SCHED_IDLE" if args.client_idle else f"nice {args.client_nice}",
        database=sa.make_url(server.db_url).get_backend_name(),
        completed=completed, recorded=sum("late_frames" in metrics.get(c, {}) for c in ids),
        window_s=window_s, server_cpu_s=cpu_s, server_system_cpu_s=system - mark["system"],
        idle_window_s=idle_window, idle_cpu_s=idle_cpu,
        cpu_per_call_s_raw=cpu_s / call_seconds,
        cpu_per_call_s_net=max(0.0, cpu_s - idle_in_window) / call_seconds,
        idle_rss_mb=idle_rss, peak_rss_mb=peak_rss,
        server_late_frames=int(total("late_frames")),
        server_max_late_ms=max((m.get("max_late_ms", 0.0) for m in metrics.values()), default=0.0),
        client_late_frames=sum(o.late_frames for o in outcomes),
        client_max_late_ms=max((o.max_late_ms for o in outcomes), default=0.0),
        client_ramp_lag_max_ms=max(r.ramp_lag_max_ms for r in reports),
        client_loop_lag_max_ms=max(r.loop_lag_max_ms for r in reports),
        client_loop_late_wakeups=sum(r.loop_lag_late for r in reports),
        client_cpu_s=sum(r.cpu_s for r in reports),
        others_cpu_s=max(0.0, busy_s - cpu_s - sum(r.cpu_s for r in reports)),
        cpu_pressure_pct=100.0 * pressure_s / window_s, server_preempted=int(preempted),
        frames_out_server=int(total("frames_out")), frames_out_client=sum(o.frames for o in outcomes),
        frames_in_server=int(total("frames_in")), clears=sum(o.clears for o in outcomes),
        cores=len(os.sched_getaffinity(0)), machine=machine(),
        floor_cpu_per_s=floor.cpu_per_s if floor else None,
        floor_us_per_frame=floor.us_per_frame if floor else None, errors=errors,
    )


def _say(message: str) -> None:
    print(f"bench media: {message}", file=sys.stderr, flush=True)


def _start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fmt = {".svg": "flamegraph", ".txt": "raw"}.get(out.suffix, "speedscope")
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--output", str(out), "--format", fmt, "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def render(r: MediaResult) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rows = [
        ("calls completed / recorded by server", f"{r.completed} / {r.recorded} of {r.calls}"),
        ("seconds per call", f"{r.seconds:g}"),
        ("measured window s", f"{r.window_s:.1f}"),
        ("server CPU s", f"{r.server_cpu_s:.2f}  (of which system {r.server_system_cpu_s:.2f})"),
        ("server CPU s idle, same window", (f"{r.idle_cpu_in_window_s:.2f}  "
         f"({r.idle_cpu_s:.2f} s over {r.idle_window_s:.0f} s with no calls)")),
        ("CPU s per call-second, raw", f"{r.cpu_per_call_s_raw:.5f}"),
        ("CPU s per call-second, minus idle", (f"{r.cpu_per_call_s_net:.5f}  "
         f"(target <= {CPU_TARGET}: {verdict(r.cpu_per_call_s_net <= CPU_TARGET)})")),
        ("CPU us per media frame, minus idle", f"{r.cpu_us_per_message:.0f}  (per frame in or out)"),
        *([] if r.floor_cpu_per_s is None or r.floor_us_per_frame is None else [
            # The yardstick for few calls: at one call the machine's wake-up cost dominates.
            ("minimal frame loop, this machine", (f"{r.floor_cpu_per_s:.5f} CPU s per second, "
             f"{r.floor_us_per_frame:.0f} us per frame (least per call; calls here: "
             f"{r.cpu_per_call_s_net / r.floor_cpu_per_s:.1f} x)" if r.floor_cpu_per_s else "-")),
        ]),
        ("server peak RSS MB", f"{r.peak_rss_mb:.1f}  (idle before calls {r.idle_rss_mb:.1f})"),
        # The figure: frames that *arrived* late, i.e. a gap the caller hears.
        ("late frames, caller playout", (f"{r.client_late_frames}  (max {r.client_max_late_ms:.1f} ms; "
         f"target 0: {verdict(r.client_late_frames == 0)})")),
        # Stricter, and a diagnostic: frames the server handed out > 20 ms after a
        # punctual pacer would have; inaudible while the lead at Twilio lasts.
        ("late frames, server pacer", (f"{r.server_late_frames}  (max late {r.server_max_late_ms:.1f} ms; "
         f"sent late against the pacer's schedule)")),
        ("client loop lag max ms, streaming", (f"{r.client_loop_lag_max_ms:.1f}  "
         f"({r.client_loop_late_wakeups} wake-ups > {LATE_MS:g} ms late; client CPU {r.client_cpu_s:.1f} s)")),
        ("client loop lag max ms, ramp-up", f"{r.client_ramp_lag_max_ms:.1f}"),
        ("outbound frames, server / callers", f"{r.frames_out_server} / {r.frames_out_client}"),
        ("inbound frames, server", f"{r.frames_in_server}"),
        ("barge-ins (clears)", f"{r.clears}"),
        ("other processes' CPU s in window", (f"{r.others_cpu_s:.1f}  (machine noise; "
         f"{r.cores} cores x {r.window_s:.0f} s = {r.cores * r.window_s:.0f} CPU s available)")),
        ("CPU pressure, some waiting %", (f"{r.cpu_pressure_pct:.0f}  "
         f"(server main thread preempted {r.server_preempted} times)")),
    ]
    head = (
        f"media benchmark: {r.calls} calls x {r.seconds:g} s on one server process, "
        f"{r.clients} client process{'es' if r.clients > 1 else ''} ({r.client_priority})\n"
        f"caller audio: {r.audio}; permessage-deflate: {'on' if r.deflate else 'off'}; "
        f"database: {r.database}; machine: {r.cores} cores, {r.machine}\n"
    )
    width = max(len(k) for k, _ in rows)
    body = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    tail = "".join(f"\nerror: {e}" for e in r.errors[:10])
    return head + body + tail


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench media", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=1, help="concurrent calls (default 1)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each call (default 20)")
    p.add_argument("--clients", type=int, default=0,
                   help="client processes (default: one per 100 calls)")
    p.add_argument("--stagger", type=float, default=1.0, help="spread call starts over this many s")
    p.add_argument("--wav", default=str(DEFAULT_WAV), help="what the callers say, looped")
    p.add_argument("--silence", action="store_true", help="callers send silence instead")
    p.add_argument("--client-idle", action="store_true",
                   help="run the client processes under SCHED_IDLE (Linux): they get only the CPU "
                        "the server leaves idle, as Twilio's callers take none of ours")
    p.add_argument("--client-nice", type=int, default=10,
                   help="niceness of the client processes, so they yield the CPU to the server (default 10)")
    p.add_argument("--no-deflate", action="store_true",
                   help="callers offer no permessage-deflate (the simulator offers it by default)")
    p.add_argument("--idle-seconds", type=float, help="idle baseline window (default: --seconds)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of one unmeasured call first")
    p.add_argument("--floor-seconds", type=float, default=10.0,
                   help="run the minimal frame loop (bench/wake_floor.py) this long before the calls, "
                        "as the machine's yardstick (0: skip)")
    p.add_argument("--database-url", help="run against this database (default: SQLite in a temp dir)")
    p.add_argument("--port", type=int, help="server port (default: a free one)")
    p.add_argument("--profile", help="profile the server into this file: *.prof runs it under cProfile "
                                     "(all its life; CPU figures then include cProfile's overhead), "
                                     "otherwise py-spy records the calls (.svg flamegraph, "
                                     ".txt collapsed stacks, else speedscope)")
    p.add_argument("--json", help="also write the figures here as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.calls < 1 or args.seconds <= 0 or args.clients < 0 or args.stagger < 0:
        print("scripts/bench media: --calls must be >= 1, --seconds > 0, --clients and --stagger >= 0",
              file=sys.stderr)
        return 2
    if not args.silence and not Path(args.wav).is_file():
        print(f"scripts/bench media: no caller audio at {args.wav} (use --wav or --silence)", file=sys.stderr)
        return 2
    result = run(args)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    return 0 if not result.errors else 1
