"""Echo cancellation (WebRTC AEC3) and its energy watchdog, with the real VADs.

The agent's own audio (clips 01, 02, 06) comes back into the caller's channel
100-300 ms late, 20-30 dB down, through a pure delay or a short reverberant
path, then the G.711 mu-law round trip. What counts is what barge-in sees:
runs of at least 140 ms of speech (the barge-in onset) after the cleaning.
"""

from __future__ import annotations

import numpy as np
import pytest

from callagent.audio.codec import pcm_to_ulaw, ulaw_to_pcm
from callagent.speech.aec import EchoCanceller, EchoGuard, ReferenceTimeline
from callagent.speech.vad import SileroModel, TwoStageVad

from .helpers import Int16

RATE = 8000
FRAME = 160
ONSET_FRAMES = 7  # 140 ms: the barge-in onset


def _path(kind: str) -> np.ndarray:
    if kind == "pure":
        return np.array([1.0])
    rng = np.random.default_rng(7)  # a short room: direct sound plus a decaying tail
    tail = rng.standard_normal(400) * np.exp(-np.arange(400) / 60.0) * 0.25
    return np.concatenate([[1.0], tail])


def echo_of(agent: Int16, delay_ms: int, gain_db: float, kind: str) -> np.ndarray:
    wet = np.convolve(agent.astype(np.float64), _path(kind))[: len(agent)]
    wet *= 10 ** (gain_db / 20) / np.sqrt(np.sum(_path(kind) ** 2))
    return np.concatenate([np.zeros(delay_ms * RATE // 1000), wet])[: len(agent)]


def phone(x: np.ndarray) -> Int16:
    return ulaw_to_pcm(pcm_to_ulaw(np.clip(x, -32768, 32767).astype(np.int16)))


def speech_runs(flags: list[bool], min_frames: int = ONSET_FRAMES) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start >= min_frames:
                runs.append((start, i))
            start = None
    return runs


def detect(near: Int16, far: Int16, silero: SileroModel, *, aec: bool) -> list[bool]:
    """Per 20 ms frame: speech as the pipeline's worker decides it."""
    canceller = EchoCanceller()
    flags: list[bool] = []
    in_speech = False
    with TwoStageVad(silero) as vad:
        for i in range(0, len(near) - FRAME + 1, FRAME):
            frame = near[i : i + FRAME]
            echo = False
            if aec:
                cleaned = canceller.process(frame, far[i : i + FRAME], in_speech)
                frame, echo = cleaned.clean_8k, cleaned.echo
            v = vad.process(frame)
            in_speech = v.is_speech and (in_speech or not echo)
            flags.append(in_speech)
    return flags


@pytest.fixture(scope="module")
def agent(clips: dict[str, tuple[Int16, str]]) -> Int16:
    return np.concatenate([clips[n][0] for n in ("01", "02", "06")] * 2)


@pytest.mark.parametrize("kind", ["pure", "room"])
@pytest.mark.parametrize(("delay_ms", "gain_db"), [(100, -20), (300, -20), (150, -30), (250, -25)])
def test_our_echo_alone_never_looks_like_caller_speech(
    agent: Int16, silero: SileroModel, delay_ms: int, gain_db: float, kind: str
) -> None:
    near = phone(echo_of(agent, delay_ms, gain_db, kind))
    assert speech_runs(detect(near, agent, silero, aec=True)) == []


def test_without_the_canceller_the_echo_would_barge_in(agent: Int16, silero: SileroModel) -> None:
    # The scenario is a real problem: the same echo, uncancelled, is "speech".
    near = phone(echo_of(agent, 150, -20, "pure"))
    assert len(speech_runs(detect(near, agent, silero, aec=False))) >= 5


@pytest.mark.parametrize(("delay_ms", "gain_db", "kind"), [(150, -20, "pure"), (300, -20, "room"),
                                                          (100, -30, "room")])  # fmt: skip
def test_the_caller_is_still_heard_over_our_echo(
    agent: Int16, clips: dict[str, tuple[Int16, str]], silero: SileroModel,
    delay_ms: int, gain_db: float, kind: str,
) -> None:  # fmt: skip
    near = echo_of(agent, delay_ms, gain_db, kind)
    spans = []
    at = 3 * RATE
    for name in ("03", "05", "04"):  # "uh-huh", the barge-in sentence, "yes"
        words = clips[name][0]
        near[at : at + len(words)] += words
        spans.append((at // FRAME, (at + len(words)) // FRAME))
        at += len(words) + 2 * RATE
    runs = speech_runs(detect(phone(near), agent, silero, aec=True))
    for a, b in spans:
        assert any(s < b and e > a for s, e in runs), (a, b, runs)
    # And nothing outside the caller's words.
    assert all(any(s < b + 25 and e > a for a, b in spans) for s, e in runs), runs


def test_reference_timeline_places_cuts_and_forgets() -> None:
    ref = ReferenceTimeline(keep_ms=1000)
    tone = np.full(800, 1000, dtype=np.int16)  # 100 ms
    ref.add(40.0, tone)
    assert not ref.frame(0.0)[:160].any()
    assert not ref.frame(20.0).any()
    first = ref.frame(30.0)
    assert not first[:160 // 2].any() and first[160 // 2 :].all()  # starts at 40 ms
    assert ref.frame(60.0).all() and ref.end_ms() == pytest.approx(140.0)
    ref.cut(100.0)  # playback cleared at 100 ms
    assert ref.frame(80.0)[:160].all() and not ref.frame(100.0).any()
    ref.add(200.0, tone)
    ref.add(220.0, np.full(160, 7, dtype=np.int16))  # a later segment replaces the rest
    assert set(ref.frame(220.0)) == {7}
    ref.frame(5000.0)  # reading far ahead forgets old audio
    assert ref.end_ms() == 0.0


def test_reference_timeline_rejects_bad_input() -> None:
    ref = ReferenceTimeline()
    with pytest.raises(ValueError, match="start_ms"):
        ref.add(-1.0, np.zeros(160, dtype=np.int16))
    with pytest.raises(ValueError, match="int16"):
        ref.add(0.0, np.zeros(160, dtype=np.float32))
    with pytest.raises(ValueError, match="keep_ms"):
        ReferenceTimeline(keep_ms=0)


def test_canceller_refuses_frames_of_the_wrong_size() -> None:
    canceller = EchoCanceller()
    with pytest.raises(ValueError, match="160 samples"):
        canceller.process(np.zeros(320, dtype=np.int16), np.zeros(160, dtype=np.int16))
    with pytest.raises(ValueError, match="int16"):
        canceller.process(np.zeros(160, dtype=np.float64), np.zeros(160, dtype=np.int16))


def test_the_watchdog_learns_the_echo_path_then_flags_echo_that_gets_through() -> None:
    guard = EchoGuard()
    ref = 3000.0**2

    def db(x: float) -> float:  # an energy x dB under the reference
        return ref * 10 ** (x / 10)

    # Before an echo path is proven: as loud as echo could be (<= -14 dB) is echo,
    # a caller near our own level is not.
    assert guard.frame(db(-20), db(-20), ref) and not guard.trusted
    assert not guard.frame(db(-3), db(-3), ref)
    # Frames the canceller turned into silence prove the path and teach its loss.
    for _ in range(200):
        guard.frame(db(-26), 1.0, ref)
    assert guard.trusted and guard.erl_db == pytest.approx(-26.0, abs=0.5)
    # Now echo the canceller let through is flagged; a caller louder than
    # our echo + 6 dB (double talk) is not.
    assert guard.frame(db(-23), db(-23), ref)
    assert not guard.frame(db(-15), db(-15), ref)
    # Speech the canceller only attenuated (not to silence) teaches nothing.
    before = guard.erl
    guard.frame(db(-22), db(-30), ref)
    assert guard.erl == before
    # A near-silent frame under our speech holds no caller onset; with no
    # reference playing nothing is echo.
    assert guard.frame(1.0, 1.0, ref)
    assert not EchoGuard().frame(ref, ref, 0.0)
    # A line that stayed silent under our speech has no echo: nothing is
    # vetoed there, so a caller's soft onset is not delayed.
    silent = EchoGuard()
    for _ in range(60):
        silent.frame(0.0, 0.0, ref)
    assert silent.silent_line and not silent.frame(db(-20), db(-20), ref)
