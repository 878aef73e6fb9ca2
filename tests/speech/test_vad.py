from __future__ import annotations

import numpy as np
import pytest

from callagent.speech.vad import FRAME_SAMPLES, SileroModel, TwoStageVad, VadFrame

from .helpers import Int16, frames, mulaw_round_trip, rms_dbfs, white_noise


def run(model: SileroModel, samples: Int16, **kwargs: object) -> list[VadFrame]:
    with TwoStageVad(model, **kwargs) as vad:  # type: ignore[arg-type]
        return [vad.process(f) for f in frames(samples, FRAME_SAMPLES)]


@pytest.mark.parametrize("clip", ["01", "02", "03", "04", "05", "06"])
def test_speech_is_flagged_in_every_clip(
    silero: SileroModel, clips: dict[str, tuple[Int16, str]], clip: str
) -> None:
    samples, _ = clips[clip]
    decisions = run(silero, samples)
    loud = [rms_dbfs(f) > -35 for f in frames(samples, FRAME_SAMPLES)]
    hits = [d.is_speech for d, is_loud in zip(decisions, loud) if is_loud]
    assert sum(hits) / len(hits) > 0.8, f"only {sum(hits)}/{len(hits)} loud frames flagged"
    # the 250 ms of leading silence is not speech
    assert not any(d.is_speech for d in decisions[:10])


def test_digital_silence_is_never_speech(silero: SileroModel) -> None:
    decisions = run(silero, np.zeros(8000 * 3, dtype=np.int16))
    assert not any(d.is_speech or d.webrtc for d in decisions)


@pytest.mark.parametrize("dbfs", [-50, -40, -30])
def test_mulaw_white_noise_false_alarms_below_2_percent(silero: SileroModel, dbfs: int) -> None:
    noise = mulaw_round_trip(white_noise(dbfs, seconds=10, seed=-dbfs))
    decisions = run(silero, noise)
    false_alarms = sum(d.is_speech for d in decisions) / len(decisions)
    assert false_alarms < 0.02, f"{false_alarms:.1%} of noise frames called speech"


def test_speech_needs_both_stages_to_agree(
    silero: SileroModel, clips: dict[str, tuple[Int16, str]]
) -> None:
    samples = np.concatenate([clips["05"][0], mulaw_round_trip(white_noise(-30, seconds=3))])
    for d in run(silero, samples):
        assert d.is_speech == (d.webrtc and d.silero_prob >= 0.5)
        assert 0.0 <= d.silero_prob <= 1.0


def test_silero_stays_idle_while_webrtc_hears_nothing(silero: SileroModel) -> None:
    decisions = run(silero, np.zeros(8000, dtype=np.int16))
    assert all(d.silero_prob == 0.0 for d in decisions)


def test_contexts_are_reused_not_reloaded_per_call(
    clips: dict[str, tuple[Int16, str]],
) -> None:
    model = SileroModel()
    first = [d.silero_prob for d in run(model, clips["06"][0])]
    for _ in range(3):  # sequential calls share the one loaded context
        again = [d.silero_prob for d in run(model, clips["06"][0])]
        assert again == first  # and it was reset: no state leaks between calls
    assert model.loaded == 1
    a, b = TwoStageVad(model), TwoStageVad(model)  # two calls at once need two
    a.close()
    b.close()
    assert model.loaded == 2


@pytest.mark.parametrize("size", [0, 1, 159, 161, 320])
def test_wrong_frame_size_is_rejected(silero: SileroModel, size: int) -> None:
    with TwoStageVad(silero) as vad, pytest.raises(
        ValueError, match=rf"^expected 160 samples \(20 ms at 8 kHz\), got {size}$"
    ):
        vad.process(np.zeros(size, dtype=np.int16))


@pytest.mark.parametrize(
    "frame",
    [np.zeros(160, dtype=np.float32), np.zeros((1, 160), dtype=np.int16), b"\0" * 320],
    ids=["float32", "2-D", "bytes"],
)
def test_non_int16_frame_is_rejected(silero: SileroModel, frame: object) -> None:
    with TwoStageVad(silero) as vad, pytest.raises(ValueError, match="^expected a 1-D int16 array"):
        vad.process(frame)  # type: ignore[arg-type]


def test_closed_vad_refuses_audio(silero: SileroModel) -> None:
    vad = TwoStageVad(silero)
    vad.close()
    vad.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        vad.process(np.zeros(160, dtype=np.int16))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"mode": 4}, "mode"), ({"threshold": 1.0}, "threshold"), ({"gate_hangover_ms": -1}, "gate")],
)
def test_bad_settings_are_rejected(
    silero: SileroModel, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TwoStageVad(silero, **kwargs)  # type: ignore[arg-type]


def test_loud_hiss_that_fools_webrtcvad_is_rejected_by_silero(silero: SileroModel) -> None:
    decisions = run(silero, mulaw_round_trip(white_noise(-20, seconds=5, seed=7)))
    assert sum(d.webrtc for d in decisions) / len(decisions) > 0.9  # stage 1 alone fails
    assert sum(d.is_speech for d in decisions) / len(decisions) < 0.02
