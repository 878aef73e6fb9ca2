"""Benchmark of the local duplex backend's per-frame work: `scripts/bench duplex_frames`.

Feeds caller clips mixed with the agent's own echo (-20 dB, 150 ms late)
through the real speech thread pieces (AEC3 + watchdog, two-stage VAD,
pocketsphinx partials, the controller), one 20 ms frame at a time, and
prints the CPU per frame (median, p99, max) for the frames inside caller
speech and for the rest, plus the controller alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from callagent.agents.profile import load_profiles
from callagent.audio.wavfile import read_wav
from callagent.engines.duplex.policy import FrameIn, TurnPolicy
from callagent.engines.pipeline.models import shared_models
from callagent.speech.aec import EchoCanceller, ReferenceTimeline
from callagent.speech.stt_pocketsphinx import PocketsphinxStt
from callagent.speech.vad import TwoStageVad

__all__ = ["main"]


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench duplex_frames")
    ap.add_argument("--audio", default=str(Path(__file__).resolve().parents[4] / "shared" / "audio"))
    ap.add_argument("--profile", default="customer_service")
    args = ap.parse_args(argv)
    audio = Path(args.audio)
    models = shared_models(load_profiles(Path("config/agents")))
    agent = models.tts.prompt_8k("I can check the status of an order or change a delivery "
                                 "address. How can I help?").samples  # fmt: skip
    caller = np.concatenate([read_wav(audio / f"{n}.wav").samples
                             for n in ("01_order_status", "03_uh_huh", "05_barge_in_change_address")])  # fmt: skip
    n = max(len(agent) * 3, len(caller) + 8000)
    far = np.zeros(n, dtype=np.int16)
    for k in range(3):
        far[k * len(agent) : (k + 1) * len(agent)] = agent
    near = np.zeros(n, dtype=np.float64)
    near[1200 : 1200 + n - 1200] += far[: n - 1200] * 0.1  # echo: 150 ms late, -20 dB
    near[8000 : 8000 + len(caller)] += caller
    near16 = np.clip(near, -32768, 32767).astype(np.int16)
    reference = ReferenceTimeline()
    reference.add(0.0, far)
    aec, vad = EchoCanceller(), TwoStageVad(models.silero)
    stt = PocketsphinxStt(models.resources[args.profile])
    policy = TurnPolicy()
    speech_us: list[float] = []
    other_us: list[float] = []
    policy_us: list[float] = []
    in_utt = False
    for i in range(0, n - 159, 160):
        t_ms = i / 8.0
        t0 = time.perf_counter()
        e = aec.process(near16[i : i + 160], reference.frame(t_ms))
        v = vad.process(e.clean_8k)
        t1 = time.perf_counter()
        policy.agent_speaking(t_ms < reference.end_ms())
        policy.frame(FrameIn(t_ms, v.is_speech, e.echo, -20.0))
        t2 = time.perf_counter()
        if v.is_speech or in_utt:
            stt.process(e.clean_16k)
            in_utt = v.is_speech
            if not in_utt:
                stt.end_utterance()
        t3 = time.perf_counter()
        (speech_us if v.is_speech else other_us).append(1e6 * (t3 - t0))
        policy_us.append(1e6 * (t2 - t1))
    vad.close()
    print(f"frames: {len(speech_us) + len(other_us)} (20 ms each), speech {len(speech_us)}")
    for label, xs in (("speech frames (AEC+VAD+STT+policy)", speech_us),
                      ("other frames (AEC+VAD+policy)", other_us),
                      ("controller alone", policy_us)):  # fmt: skip
        print(f"{label:38s} median {statistics.median(xs):8.0f} us  p99 {_pct(xs, 99):8.0f} us"
              f"  max {max(xs):8.0f} us")  # fmt: skip
    print(f"echo watchdog trusted: {aec.guard.trusted}; erl {aec.guard.erl_db:.1f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
