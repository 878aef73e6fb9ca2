"""Streaming resamplers: anti-aliasing down, per-chunk output up, seamless chunking."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pytest

from callagent.audio import resample
from callagent.audio.pcm import Samples
from callagent.audio.resample import Resampler, StreamingResampler, make_resampler

AMP = 16384  # -6 dBFS
DOWN_RATES = [16_000, 22_050, 24_000]


def _tone(freq: float, rate: int, seconds: float = 1.0, amp: float = AMP) -> Samples:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _chunks(x: Samples, sizes: Iterable[int]) -> list[Samples]:
    out, pos = [], 0
    for size in sizes:
        if pos >= len(x):
            break
        out.append(x[pos : pos + size])
        pos += size
    return out


def _frames(x: Samples, rate: int) -> list[Samples]:
    return _chunks(x, [rate // 50] * (len(x) // (rate // 50) + 1))


def _stream(r: Resampler, chunks: Iterable[Samples | bytes]) -> Samples:
    return np.concatenate([*(r.process(c) for c in chunks), r.flush()])


def _fit(y: Samples, freq: float, rate: int) -> tuple[float, float]:
    """Least-squares fit of a tone at ``freq`` (plus DC): (amplitude, residual rms)."""
    t = np.arange(len(y)) / rate
    basis = np.column_stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)])
    yf = y.astype(np.float64)
    coef, *_ = np.linalg.lstsq(basis, yf, rcond=None)
    resid = yf - basis @ coef
    return float(np.hypot(coef[0], coef[1])), float(np.sqrt(np.mean(resid**2)))


def _middle(y: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    # Skip 50 ms at each end, where the stream starts from and ends in silence.
    return y[rate // 20 : -(rate // 20)]


def _db(ratio: float) -> float:
    return 20 * float(np.log10(max(ratio, 1e-12)))


def test_public_names_are_pinned() -> None:
    assert resample.__all__ == ["Resampler", "StreamingResampler", "make_resampler"]


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "method"),
    [(8000, 8000, "identity"), (16_000, 8000, "soxr-HQ"), (24_000, 8000, "soxr-HQ"),
     (24_000, 16_000, "soxr-HQ"), (8000, 16_000, "soxr-QQ"), (8000, 24_000, "soxr-QQ")],
)
def test_method_follows_direction(in_rate: int, out_rate: int, method: str) -> None:
    r = StreamingResampler(in_rate, out_rate)
    assert (r.in_rate, r.out_rate, r.method) == (in_rate, out_rate, method)


def test_factory_returns_a_streaming_resampler() -> None:
    r = make_resampler(16_000, 8000)
    assert isinstance(r, StreamingResampler) and r.out_rate == 8000


# ---- downsampling to 8 kHz (outbound) --------------------------------------


@pytest.mark.parametrize("in_rate", DOWN_RATES)
def test_downsampling_to_8k_suppresses_a_5khz_alias_below_60db(in_rate: int) -> None:
    # 5 kHz is above the 4 kHz Nyquist limit: everything left over is alias.
    y = _middle(_stream(StreamingResampler(in_rate, 8000), _frames(_tone(5000, in_rate), in_rate)), 8000)
    rms_in = AMP / np.sqrt(2)
    assert _db(float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) / rms_in) < -60


@pytest.mark.parametrize("in_rate", DOWN_RATES)
@pytest.mark.parametrize("freq", [300.0, 1000.0, 3400.0])
def test_downsampling_keeps_the_telephone_band(in_rate: int, freq: float) -> None:
    y = _stream(StreamingResampler(in_rate, 8000), _frames(_tone(freq, in_rate), in_rate))
    amp, _ = _fit(_middle(y, 8000), freq, 8000)
    assert abs(_db(amp / AMP)) < 0.5


@pytest.mark.parametrize("in_rate", DOWN_RATES)
def test_downsampling_in_20ms_frames_has_sinad_above_80db(in_rate: int) -> None:
    # A click or gap at any of the 50 frame borders would show up in the residual.
    y = _stream(StreamingResampler(in_rate, 8000), _frames(_tone(1000, in_rate), in_rate))
    amp, noise = _fit(_middle(y, 8000), 1000, 8000)
    assert _db(amp / np.sqrt(2) / noise) > 80


def test_downsampling_clamps_instead_of_wrapping() -> None:
    # A full-scale square wave overshoots (Gibbs); int16 wrap-around would flip the sign.
    square = np.where(_tone(200, 16_000) >= 0, 32767, -32768).astype(np.int16)
    y = _middle(_stream(StreamingResampler(16_000, 8000), _frames(square, 16_000)), 8000)
    expected_sign = np.where(_middle(square[::2], 8000) > 0, 1, -1)
    settled = np.abs(y) > 20_000  # away from the edges of the square
    assert np.all(np.sign(y[settled]) == expected_sign[settled])
    assert y.max() == 32767 and y.min() == -32768


# ---- upsampling from 8 kHz (inbound, for STT) ------------------------------


def test_upsampling_gives_output_for_every_20ms_chunk() -> None:
    r = StreamingResampler(8000, 16_000)
    sizes = [len(r.process(f)) for f in _frames(_tone(1000, 8000), 8000)]
    assert sizes[0] >= 310  # a few samples held back for the interpolator
    assert set(sizes[1:-1]) == {320}


def test_upsampling_8k_to_16k_has_sinad_above_40db_and_image_below_40db() -> None:
    y = _middle(_stream(StreamingResampler(8000, 16_000), _frames(_tone(1000, 8000), 8000)), 16_000)
    amp, noise = _fit(y, 1000, 16_000)
    image, _ = _fit(y, 7000, 16_000)  # 1 kHz mirrored about the old 4 kHz Nyquist
    assert abs(_db(amp / AMP)) < 0.5
    assert _db(amp / np.sqrt(2) / noise) > 40
    assert _db(image / amp) < -40


# ---- streaming properties ---------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16_000, 8000), (22_050, 8000), (8000, 16_000)])
def test_chunking_never_changes_the_output(in_rate: int, out_rate: int) -> None:
    # Seamless: random chunk sizes (empty ones included) give the one-shot result exactly.
    x = _tone(1234.5, in_rate, 0.7)
    whole = _stream(StreamingResampler(in_rate, out_rate), [x])
    sizes = np.random.default_rng(7).integers(0, 900, size=2000).tolist()
    assert np.array_equal(_stream(StreamingResampler(in_rate, out_rate), _chunks(x, sizes)), whole)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16_000, 8000), (8000, 16_000)])
def test_no_clicks_at_20ms_chunk_borders(in_rate: int, out_rate: int) -> None:
    # A sine's sample-to-sample step is at most 2*pi*f/fs*A; a seam would jump further.
    y = _stream(StreamingResampler(in_rate, out_rate), _frames(_tone(1000, in_rate), in_rate))
    max_step = 2 * np.pi * 1000 / out_rate * AMP
    assert np.abs(np.diff(_middle(y, out_rate).astype(np.int32))).max() < max_step * 1.02 + 2


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(16_000, 8000), (22_050, 8000), (24_000, 8000), (8000, 16_000), (8000, 24_000)]
)
@pytest.mark.parametrize("n", [1, 159, 160, 12_345, 48_000])
def test_flush_delivers_every_sample(in_rate: int, out_rate: int, n: int) -> None:
    x = _tone(440, in_rate, n / in_rate + 1e-9)[:n]
    r = StreamingResampler(in_rate, out_rate)
    total = sum(len(r.process(c)) for c in _frames(x, in_rate)) + len(r.flush())
    assert abs(total - n * out_rate / in_rate) <= 1


def test_flush_starts_a_fresh_stream() -> None:
    r = StreamingResampler(16_000, 8000)
    x = _tone(700, 16_000, 0.3)
    first = _stream(r, _frames(x, 16_000))
    assert np.array_equal(_stream(r, _frames(x, 16_000)), first)
    assert len(r.flush()) == 0


def test_reset_drops_buffered_input() -> None:
    r = StreamingResampler(16_000, 8000)
    r.process(_tone(700, 16_000, 0.05))  # HQ holds this back
    r.reset()
    assert len(r.flush()) == 0


def test_identity_returns_the_input() -> None:
    r = StreamingResampler(8000, 8000)
    x = _tone(1000, 8000, 0.02)
    assert r.process(x) is x
    assert len(r.flush()) == 0
    r.reset()


def test_pcm16_bytes_resample_like_the_array() -> None:
    x = _tone(1000, 16_000, 0.1)
    by_bytes = _stream(StreamingResampler(16_000, 8000), [x.astype("<i2").tobytes()])
    assert np.array_equal(by_bytes, _stream(StreamingResampler(16_000, 8000), [x]))


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16_000, 8000), (8000, 16_000), (8000, 8000)])
def test_empty_chunk_gives_empty_int16(in_rate: int, out_rate: int) -> None:
    out = StreamingResampler(in_rate, out_rate).process(np.zeros(0, dtype=np.int16))
    assert out.dtype == np.int16 and out.shape == (0,)


def test_odd_length_pcm_bytes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"^PCM16 data must have an even length, got 321 bytes$"):
        StreamingResampler(16_000, 8000).process(b"\x00" * 321)


@pytest.mark.parametrize("rates", [(8000, 8000), (16_000, 8000), (8000, 16_000)])
def test_float_samples_are_rejected(rates: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"^expected native int16 PCM samples, got dtype '<f4'$"):
        StreamingResampler(*rates).process(np.zeros(160, dtype=np.float32))


@pytest.mark.parametrize("bad", [0, -8000, 8000.0, True, "8000"])
def test_bad_rates_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"^in_rate must be a positive int in Hz, got {bad!r}$"):
        StreamingResampler(bad, 8000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^out_rate must be a positive int in Hz, got {bad!r}$"):
        StreamingResampler(8000, bad)  # type: ignore[arg-type]
