"""The media benchmark runs end to end and prints sane figures (no speed thresholds here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from callagent.audio.pcm import Pcm
from callagent.bench.__main__ import available
from callagent.bench.media import RATE, ArrivalPlayout, caller_audio
from callagent.bench.wake_floor import measure_floor

FRAME = np.zeros(160, np.int16)  # 20 ms


def bench(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callagent.bench", *args],
        check=False, capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[2],
    )


def figure(out: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}\s+(.+)$", out, re.MULTILINE)
    assert match, f"{label!r} not in the output:\n{out}"
    return match.group(1)


def test_two_short_calls_print_every_figure_and_they_add_up(tmp_path: Path) -> None:
    run = bench("media", "--calls", "2", "--seconds", "2", "--idle-seconds", "1",
                "--warmup", "0", "--client-idle", "--floor-seconds", "1",
                "--json", str(tmp_path / "media.json"))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert figure(out, "calls completed / recorded by server") == "2 / 2 of 2"
    for label in ("CPU s per call-second, raw", "CPU s per call-second, minus idle",
                  "server peak RSS MB", "late frames, server pacer", "late frames, caller playout",
                  "client loop lag max ms, streaming", "outbound frames, server / callers"):
        figure(out, label)

    r = json.loads((tmp_path / "media.json").read_text())
    assert r["calls"] == r["completed"] == r["recorded"] == 2 and r["errors"] == []
    assert r["client_priority"] == "SCHED_IDLE" and "(SCHED_IDLE)" in out.splitlines()[
        next(i for i, line in enumerate(out.splitlines()) if line.startswith("media benchmark:"))]
    # Bounds from physics and bookkeeping, not from speed:
    assert 0 < r["server_cpu_s"] <= r["cores"] * r["window_s"]
    assert r["cpu_per_call_s_raw"] == r["server_cpu_s"] / (2 * 2.0)
    assert 0 <= r["cpu_per_call_s_net"] <= r["cpu_per_call_s_raw"]
    assert 0 < r["idle_rss_mb"] <= r["peak_rss_mb"] < 4096
    assert r["frames_in_server"] == 2 * 2 * 50  # every 20 ms the callers sent arrived
    assert 0 < r["frames_out_client"] <= r["frames_out_server"]  # the greeting played
    assert r["server_late_frames"] >= 0 and r["client_late_frames"] >= 0
    assert r["client_max_late_ms"] >= 0 and r["server_max_late_ms"] >= 0
    # The machine's yardstick ran, in a process of its own, and is printed beside the calls.
    assert 0 < r["floor_cpu_per_s"] < r["cores"] and r["floor_us_per_frame"] > 0
    assert figure(out, "minimal frame loop, this machine").startswith(f"{r['floor_cpu_per_s']:.5f} CPU s")


def test_the_minimal_frame_loop_reads_every_frame_sent() -> None:
    floor = measure_floor(1.0)
    assert floor.frames == 50 and 1.0 <= floor.seconds < 3.0
    # The child's CPU: more than nothing, less than all of it (bounds, not speed).
    assert 0 < floor.cpu_s < floor.seconds
    assert floor.us_per_frame == 1e6 * floor.cpu_s / 50
    run = bench("wake_floor", "--seconds", "0.5", timeout=30)
    assert run.returncode == 2 and "--seconds" in run.stderr


def test_the_dispatcher_finds_benchmarks_by_module_name() -> None:
    assert "media" in available()
    run = bench("no-such-bench", timeout=30)
    assert run.returncode == 2 and "media" in run.stderr


def test_bad_arguments_are_refused_before_a_server_starts() -> None:
    run = bench("media", "--calls", "0", timeout=30)
    assert run.returncode == 2 and "--calls" in run.stderr
    run = bench("media", "--wav", os.devnull + "-missing", timeout=30)
    assert run.returncode == 2 and "no caller audio" in run.stderr


def test_a_frame_arriving_after_the_audio_ahead_played_is_late() -> None:
    p = ArrivalPlayout()
    p.on_media(FRAME, 0.0)  # plays 0-20 ms
    p.on_media(FRAME, 0.010)  # queued: on time
    p.on_media(FRAME, 0.065)  # due at 40 ms: 25 ms late, the caller hears a gap
    p.on_media(FRAME, 0.090)  # due at 85 ms: 5 ms late, within the 20 ms allowed
    assert (p.frames, p.late_frames) == (4, 1)
    assert abs(p.max_late_ms - 25.0) < 1e-6


def test_a_pause_after_a_mark_or_a_clear_is_not_lateness() -> None:
    p = ArrivalPlayout()
    p.on_media(FRAME, 0.0)
    p.on_mark("a1:1", 0.005)  # end of a segment: the agent may pause
    p.on_media(FRAME, 1.0)
    p.on_clear(1.005)  # barge-in: the next turn starts afresh
    p.on_media(FRAME, 2.0)
    assert (p.late_frames, p.max_late_ms) == (0, 0.0)


def test_caller_audio_is_exactly_the_call_long_with_speech_and_pauses() -> None:
    speech = Pcm(np.full(RATE, 3000, np.int16), RATE)  # 1 s "speech"
    audio = caller_audio(speech, 7.25)
    assert audio.rate == RATE and len(audio) == 7.25 * RATE
    loud = audio.samples != 0
    assert not loud[: int(0.6 * RATE)].any() and loud[int(0.6 * RATE)]
    assert not caller_audio(None, 2.0).samples.any()
