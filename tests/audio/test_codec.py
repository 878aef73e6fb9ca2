"""G.711 codecs (mu-law, A-law): bit-exact as audioop does them, and strict input checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from callagent.audio import codec
from callagent.audio.codec import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_to_pcm,
    as_samples,
    pcm_to_alaw,
    pcm_to_ulaw,
    ulaw_to_pcm,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


def _g711_decode(code: int) -> int:
    """ITU-T G.711 mu-law expansion, written out independently of audioop."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def test_public_names_are_pinned() -> None:
    assert codec.__all__ == ["ALAW_SILENCE", "ULAW_SILENCE", "BytesLike", "alaw_to_pcm",
                             "as_samples", "pcm_rms", "pcm_to_alaw", "pcm_to_ulaw", "ulaw_to_pcm"]  # fmt: skip


def test_decode_matches_audioop_for_all_256_codes() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    assert np.array_equal(ulaw_to_pcm(ALL_CODES), expected)


def test_decode_matches_the_g711_formula() -> None:
    assert ulaw_to_pcm(ALL_CODES).tolist() == [_g711_decode(c) for c in range(256)]


def test_encode_matches_audioop_for_all_65536_samples() -> None:
    expected = audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)
    assert pcm_to_ulaw(ALL_SAMPLES) == expected


def test_every_code_survives_decode_then_encode() -> None:
    # 0x7F is G.711's "negative zero"; it decodes to 0, which encodes as 0xFF.
    back = pcm_to_ulaw(ulaw_to_pcm(ALL_CODES))
    assert back == bytes(0xFF if c == 0x7F else c for c in range(256))


def test_silence_byte_decodes_to_zero() -> None:
    assert ulaw_to_pcm(bytes([ULAW_SILENCE]) * 160).tolist() == [0] * 160


def test_a_20ms_frame_has_160_samples_and_160_bytes() -> None:
    frame = ulaw_to_pcm(bytes(range(160)))
    assert frame.dtype == np.int16 and frame.shape == (160,)
    assert len(pcm_to_ulaw(frame)) == 160


def test_decoded_samples_are_writable() -> None:
    samples = ulaw_to_pcm(b"\x00\x80")
    samples[0] = 1  # would raise if it were a view of immutable bytes
    assert samples[0] == 1


def test_pcm16_bytes_encode_like_the_array() -> None:
    assert pcm_to_ulaw(ALL_SAMPLES.astype("<i2").tobytes()) == pcm_to_ulaw(ALL_SAMPLES)
    assert pcm_to_ulaw(bytearray(ALL_SAMPLES.tobytes())) == pcm_to_ulaw(ALL_SAMPLES)


def test_strided_samples_are_encoded_in_order() -> None:
    strided = ALL_SAMPLES[::7]
    assert pcm_to_ulaw(strided) == pcm_to_ulaw(strided.copy())


def test_empty_input_gives_empty_output() -> None:
    assert ulaw_to_pcm(b"").shape == (0,)
    assert ulaw_to_pcm(b"").dtype == np.int16
    assert pcm_to_ulaw(np.zeros(0, dtype=np.int16)) == b""
    assert pcm_to_ulaw(b"") == b""


def test_odd_length_pcm_bytes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"^PCM16 data must have an even length, got 3 bytes$"):
        pcm_to_ulaw(b"\x00\x01\x02")


@pytest.mark.parametrize(
    ("dtype", "shown"), [(np.float32, "<f4"), (np.int32, "<i4"), (np.uint16, "<u2"), (">i2", ">i2")]
)
def test_wrong_dtype_is_rejected(dtype: str, shown: str) -> None:
    with pytest.raises(ValueError, match=rf"^expected native int16 PCM samples, got dtype '{shown}'$"):
        pcm_to_ulaw(np.zeros(4, dtype=dtype))


def test_stereo_array_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^expected mono 1-D PCM samples, got shape \(4, 2\)$"):
        as_samples(np.zeros((4, 2), dtype=np.int16))


def test_a_list_is_not_samples() -> None:
    with pytest.raises(ValueError, match=r"^expected int16 samples or PCM16 bytes, got list$"):
        pcm_to_ulaw([0, 1])  # type: ignore[arg-type]


def test_text_is_not_mu_law() -> None:
    with pytest.raises(ValueError, match=r"^expected mu-law bytes, got str$"):
        ulaw_to_pcm("\xff")  # type: ignore[arg-type]


# ---- A-law (G.711 A, audio/pcma) -------------------------------------------------


def _g711_alaw_decode(code: int) -> int:
    """ITU-T G.711 A-law expansion, written out independently of audioop."""
    code ^= 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if code & 0x80 else -magnitude


def test_alaw_decode_matches_audioop_for_all_256_codes() -> None:
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16)
    assert np.array_equal(alaw_to_pcm(ALL_CODES), expected)


def test_alaw_decode_matches_the_g711_formula() -> None:
    assert alaw_to_pcm(ALL_CODES).tolist() == [_g711_alaw_decode(c) for c in range(256)]


def test_alaw_encode_matches_audioop_for_all_65536_samples() -> None:
    assert pcm_to_alaw(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)


def test_alaw_encode_matches_audioop_on_a_sine_sweep() -> None:
    t = np.arange(8000) / 8000.0
    sweep = (32767 * np.sin(2 * np.pi * (100 + 1800 * t) * t)).astype(np.int16)
    assert pcm_to_alaw(sweep) == audioop.lin2alaw(sweep.tobytes(), 2)
    assert pcm_to_alaw(sweep.astype("<i2").tobytes()) == pcm_to_alaw(sweep)


def test_every_alaw_code_survives_decode_then_encode() -> None:
    # A-law has no negative zero: all 256 codes are distinct levels.
    assert pcm_to_alaw(alaw_to_pcm(ALL_CODES)) == ALL_CODES


def test_alaw_silence_byte_is_the_smallest_positive_level() -> None:
    assert alaw_to_pcm(bytes([ALAW_SILENCE]) * 160).tolist() == [8] * 160
    assert pcm_to_alaw(np.zeros(160, dtype=np.int16)) == bytes([ALAW_SILENCE]) * 160


def test_alaw_input_checks_match_mu_law() -> None:
    assert alaw_to_pcm(b"").shape == (0,) and pcm_to_alaw(b"") == b""
    with pytest.raises(ValueError, match=r"^expected A-law bytes, got str$"):
        alaw_to_pcm("\xd5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^PCM16 data must have an even length, got 3 bytes$"):
        pcm_to_alaw(b"\x00\x01\x02")
    samples = alaw_to_pcm(b"\xd5\x55")
    samples[0] = 1  # writable, not a view of audioop's bytes


# ---- level -----------------------------------------------------------------------------


def test_rms_is_the_root_mean_square() -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(-32768, 32768, 160).astype(np.int16)
    exact = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    assert abs(codec.pcm_rms(x) - exact) <= 1.0  # audioop truncates to an int
    assert codec.pcm_rms(np.full(160, -1000, np.int16)) == 1000.0
    assert codec.pcm_rms(np.zeros(0, np.int16)) == 0.0


def test_rms_reads_a_strided_view_and_rejects_what_is_not_samples() -> None:
    x = np.arange(320, dtype=np.int16)
    assert codec.pcm_rms(x[::2]) == codec.pcm_rms(x[::2].copy())
    with pytest.raises(ValueError, match="int16"):
        codec.pcm_rms(np.zeros(160, np.float32))  # type: ignore[arg-type]
