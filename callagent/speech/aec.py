"""Echo of the agent's own voice in the caller's channel: cancel it, then watch it.

A phone line (or the caller's speakerphone) sends part of what we play back to
us, 100-300 ms late and 20-30 dB down. Without handling, the VADs call most of
that echo caller speech (duplex-design.md, section C), so the agent would
barge in on itself. Three small pieces, usable by any engine:

- `ReferenceTimeline`: what the agent played, on the call's audio clock (the
  clock of the caller audio fed so far). The engine adds each segment of
  agent audio at the time it starts playing and cuts it when playback is
  cleared; the worker reads the reference for each caller frame. Thread-safe
  (one writer on the event loop, one reader in the speech worker).
- `EchoCanceller`: WebRTC AEC3 (pywebrtc-audio `EchoCanceller`) at 16 kHz on
  20 ms frames of 8 kHz phone audio, fed the reference frame for the same
  20 ms. AEC3 finds the echo delay itself (measured: no hint needed for
  100-300 ms) and gives 40+ dB within the first seconds. Returns the cleaned
  frame at 8 kHz (for the VAD) and 16 kHz (for STT), plus the watchdog's flag.
- `EchoGuard`: a cheap energy watchdog. It predicts the echo level from the
  reference (echo return loss times the reference energy of the last
  `window_ms`) and flags a frame as *echo* when the raw caller frame is no
  louder than that prediction plus `margin_db`. The return loss starts at
  -20 dB and is learnt from the frames the canceller turned into near silence
  under loud reference (those were echo). On a line that stays silent while
  only we talk (no echo at all) it vetoes nothing, so onsets are not delayed.
- Until the guard has seen `trust_after_frames` such frames (2 s of echo:
  an echo path is proven), `EchoCanceller` passes the caller's audio through
  uncleaned and only the guard keeps the echo out: AEC3 with no echo path to
  model suppresses a caller who talks over us (measured on a line without
  echo: two thirds of a barge-in's speech frames lost). Afterwards the
  cleaned audio goes on, and the guard flags residual echo.
  Caller speech is louder than the predicted echo, so double talk gets
  through; a caller quieter than our echo + 6 dB does not.

Not thread-safe apart from `ReferenceTimeline`: one `EchoCanceller` per call,
used by the worker thread only.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

from callagent.speech._frames import check_frame

__all__ = ["EchoCanceller", "EchoFrame", "EchoGuard", "ReferenceTimeline"]

PHONE_RATE = 8_000
AEC_RATE = 16_000
FRAME_MS = 20
FRAME_8K = 160
FRAME_16K = 320

Samples = npt.NDArray[np.int16]


class ReferenceTimeline:
    """The agent's audio at 8 kHz, placed on the call's audio clock (ms).

    `add(start_ms, samples)` places a segment; a later segment overlapping an
    earlier one replaces it from its start; `holds_floor=False` marks an aside
    (an agent backchannel) that `end_ms()` does not count as the agent
    speaking. `cut(at_ms)` drops everything from `at_ms` on (playback was cleared). `frame(start_ms)` is the 20 ms of
    reference beginning at `start_ms` (zeros where nothing played). History
    older than `keep_ms` before the newest frame read is forgotten.
    """

    def __init__(self, keep_ms: float = 5_000.0) -> None:
        if keep_ms <= 0:
            raise ValueError(f"keep_ms must be > 0, got {keep_ms}")
        self._keep_ms = keep_ms
        self._lock = threading.Lock()
        # (start ms, samples, holds the floor), by start
        self._segments: list[tuple[float, Samples, bool]] = []

    def add(self, start_ms: float, samples: Samples, *, holds_floor: bool = True) -> None:
        if not math.isfinite(start_ms) or start_ms < 0:
            raise ValueError(f"start_ms must be a finite number >= 0, got {start_ms!r}")
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError("reference audio must be a 1-D int16 array at 8 kHz")
        if not len(samples):
            return
        self.cut(start_ms)
        with self._lock:
            self._segments.append((float(start_ms), samples, holds_floor))

    def cut(self, at_ms: float) -> None:
        with self._lock:
            kept: list[tuple[float, Samples, bool]] = []
            for start, samples, floor in self._segments:
                if start >= at_ms:
                    continue
                end = start + 1000.0 * len(samples) / PHONE_RATE
                if end > at_ms:
                    samples = samples[: int(round((at_ms - start) * PHONE_RATE / 1000.0))]
                kept.append((start, samples, floor))
            self._segments = kept

    def end_ms(self) -> float:
        """When the agent's last audio that holds the floor ends (0 with none)."""
        with self._lock:
            return max(
                (s + 1000.0 * len(a) / PHONE_RATE for s, a, floor in self._segments if floor),
                default=0.0,
            )

    def frame(self, start_ms: float) -> Samples:
        out = np.zeros(FRAME_8K, dtype=np.int16)
        with self._lock:
            self._segments = [
                seg for seg in self._segments
                if seg[0] + 1000.0 * len(seg[1]) / PHONE_RATE > start_ms - self._keep_ms
            ]  # fmt: skip
            segments = list(self._segments)
        for seg_start, samples, _ in segments:
            offset = int(round((seg_start - start_ms) * PHONE_RATE / 1000.0))
            a, b = max(0, offset), min(FRAME_8K, offset + len(samples))
            if a < b:
                out[a:b] = samples[a - offset : b - offset]
        return out


@dataclass(frozen=True, slots=True)
class EchoFrame:
    clean_8k: Samples  # 160 samples: for the VAD
    clean_16k: Samples  # 320 samples: for STT
    echo: bool  # the watchdog says this frame is (residual) echo, not the caller
    erle_db: float  # energy removed by the canceller in this frame


def _energy(x: Samples) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


class EchoGuard:
    """Energy watchdog: is a frame explained by our own echo?

    Feed every frame's raw and cleaned energy plus the reference energy;
    `erl` (echo return loss, a power ratio) is learnt from frames the
    canceller removed, starting at `initial_erl_db`.
    """

    def __init__(
        self,
        *,
        window_ms: int = 400,
        margin_db: float = 6.0,
        initial_erl_db: float = -20.0,
        silence_energy: float = 30.0**2,
        trust_after_frames: int = 100,
        max_erl_db: float = -6.0,
    ) -> None:
        if window_ms < FRAME_MS or margin_db <= 0:
            raise ValueError("need window_ms >= 20 and margin_db > 0")
        self._ref_energies: deque[float] = deque(maxlen=window_ms // FRAME_MS)
        self._margin = 10.0 ** (margin_db / 10.0)
        self.erl = self._initial = 10.0 ** (initial_erl_db / 10.0)
        self._silence = silence_energy
        self.echo_frames = 0
        self.frames_with_reference = 0
        self.cancelled_frames = 0
        self.silent_frames = 0
        self.echo_like_frames = 0
        self._trust_after = trust_after_frames
        self._loud = 1000.0**2  # reference this loud (rms) teaches the return loss
        self._max_erl = 10.0 ** (max_erl_db / 10.0)

    @property
    def erl_db(self) -> float:
        return 10.0 * math.log10(self.erl)

    def frame(self, raw: float, clean: float, reference: float, caller: bool = False) -> bool:
        """Energies (mean square) of the raw and cleaned caller frame and of the
        reference frame, and whether the caller was talking (the last frame's
        decision); True when the frame is our echo getting through."""
        self._ref_energies.append(reference)
        ref = max(self._ref_energies)
        if ref <= self._silence:
            return False
        self.frames_with_reference += 1
        if ref >= self._loud and raw <= self._silence:
            self.silent_frames += 1  # the line stays silent under our speech
        if not self.trusted and self.silent_line:
            return False  # no echo on this line: nothing to veto, onsets stay prompt
        if raw <= self._silence:
            return True  # under our speech, a near-silent frame holds no caller onset
        ratio = raw / ref
        # As loud as our echo could be. Before the path is proven the learnt
        # loss only ever widens the window: the raw echo is all there is.
        erl = self.erl if self.trusted else max(self.erl, self._initial)
        plausible = bool(ratio <= erl * self._margin)
        # Echo the canceller recognised comes out as near silence; the caller's
        # speech it merely attenuates (AEC3's suppressor at double talk) does
        # not. Only frames under loud reference teach the return loss.
        cancelled_well = (plausible and raw >= clean * self._margin and clean <= self._silence
                          and ref >= self._loud and raw >= self._margin * self._silence)  # fmt: skip
        if cancelled_well:
            self.erl = min(self._max_erl, 0.95 * self.erl + 0.05 * ratio)
            self.cancelled_frames += 1
            if self.trusted:
                return False  # the cleaned frame is what goes on, and it is clean
        if plausible and not caller and ref >= self._loud:
            self.echo_like_frames += 1
        self.echo_frames += plausible
        return plausible

    @property
    def silent_line(self) -> bool:
        """The line has stayed silent under our speech (>= 1 s of it) with
        hardly any echo-like sound: there is no echo path to guard against."""
        return self.silent_frames >= 50 and 10 * self.echo_like_frames < self.silent_frames

    @property
    def trusted(self) -> bool:
        """The canceller has shown an echo path on this line and removes it."""
        return self.cancelled_frames >= self._trust_after


class EchoCanceller:
    """AEC3 for one call's 8 kHz phone audio. `process(near, far)` per 20 ms frame."""

    def __init__(self, guard: EchoGuard | None = None) -> None:
        from pywebrtc_audio import EchoCanceller as Aec3

        self._aec = Aec3(AEC_RATE)
        self._up_near = _Stream(PHONE_RATE, AEC_RATE)
        self._up_far = _Stream(PHONE_RATE, AEC_RATE)
        self._down = _Stream(AEC_RATE, PHONE_RATE)
        self.guard = guard or EchoGuard()
        self._switch_frames = 10  # after the switch to cleaned audio: 200 ms of veto

    def process(self, near: Samples, far: Samples, caller: bool = False) -> EchoFrame:
        """`near`: the caller's 20 ms at 8 kHz; `far`: the reference for the same
        20 ms; `caller`: the caller was talking in the last frame."""
        check_frame(near, FRAME_8K, PHONE_RATE)
        check_frame(far, FRAME_8K, PHONE_RATE)
        near16 = self._up_near.frame(near, FRAME_16K)
        far16 = self._up_far.frame(far, FRAME_16K)
        clean16: Samples = np.asarray(self._aec.process(near16, far16), dtype=np.int16)
        clean8 = self._down.frame(clean16, FRAME_8K)
        raw_e, clean_e = _energy(near), _energy(clean8)
        erle = 10.0 * math.log10((raw_e + 1.0) / (clean_e + 1.0))
        echo = self.guard.frame(raw_e, clean_e, _energy(far), caller)
        if self.guard.trusted and self._switch_frames:
            self._switch_frames -= 1  # the VAD's state was built on the raw echo
            echo = True
        if not self.guard.trusted:
            # AEC3 without a learnt echo path suppresses the caller under our
            # speech (measured: 2/3 of a barge-in's frames lost on a line
            # with no echo). Until the path is proven, pass the caller through
            # and let the guard's level check keep the echo out.
            return EchoFrame(near.copy(), near16, echo, erle)
        return EchoFrame(clean8, clean16, echo, erle)


class _Stream:
    """Streaming soxr QQ (one frame out per frame in), cut into exact frames.

    QQ emits a few samples less on the very first chunk; the shortfall is
    filled with leading zeros once, so the two directions stay aligned.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self._rs = soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16", quality="QQ")
        self._pending = np.zeros(0, dtype=np.int16)

    def frame(self, x: Samples, size: int) -> Samples:
        out: Samples = self._rs.resample_chunk(x)
        self._pending = np.concatenate((self._pending, out))
        if len(self._pending) < size:
            pad = np.zeros(size - len(self._pending), dtype=np.int16)
            self._pending = np.concatenate((pad, self._pending))
        chunk, self._pending = self._pending[:size].copy(), self._pending[size:]
        return chunk
