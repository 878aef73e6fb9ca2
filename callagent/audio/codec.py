"""G.711 mu-law and A-law <-> 16-bit PCM, bit-exact with ``audioop``.

Both directions call ``audioop`` (stdlib on 3.11/3.12, the ``audioop-lts``
package on 3.13+). Measured on the project VM per 160-sample frame: decode
1.3 us and encode 1.0 us, against 2.9 us each way for the fastest numpy
lookup tables, so tables would only add code. A-law (``audio/pcma`` on the
OpenAI-compatible endpoint) goes through ``audioop`` the same way.
"""

from __future__ import annotations

import warnings
from typing import TypeAlias

import numpy as np

from callagent.audio.pcm import Samples

with warnings.catch_warnings():
    # 3.11/3.12 warn that audioop leaves the stdlib in 3.13; audioop-lts takes over there.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "BytesLike",
    "alaw_to_pcm",
    "as_samples",
    "pcm_rms",
    "pcm_to_alaw",
    "pcm_to_ulaw",
    "ulaw_to_pcm",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview

# 0xFF decodes to 0; the idle byte of a G.711 mu-law line.
ULAW_SILENCE = 0xFF
# 0xD5 decodes to +8, the A-law code nearest zero (A-law has no code for 0).
ALAW_SILENCE = 0xD5


def as_samples(data: Samples | BytesLike) -> Samples:
    """Validate mono PCM16: an int16 1-D array, or little-endian PCM16 bytes.

    Returns a C-contiguous int16 array (a read-only view for bytes input).
    """
    if isinstance(data, np.ndarray):
        if data.dtype != np.int16:
            # Also rejects byte-swapped int16 ('>i2'): audioop and soxr read native order.
            raise ValueError(f"expected native int16 PCM samples, got dtype {data.dtype.str!r}")
        if data.ndim != 1:
            raise ValueError(f"expected mono 1-D PCM samples, got shape {data.shape}")
        return np.ascontiguousarray(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        size = memoryview(data).nbytes
        if size % 2:
            raise ValueError(f"PCM16 data must have an even length, got {size} bytes")
        return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
    raise ValueError(f"expected int16 samples or PCM16 bytes, got {type(data).__name__}")


def ulaw_to_pcm(data: BytesLike) -> Samples:
    """Decode mu-law bytes (any length, including 0) to int16 samples."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected mu-law bytes, got {type(data).__name__}")
    # copy(): callers get a writable array, not a view of audioop's bytes (+0.5 us).
    return np.frombuffer(audioop.ulaw2lin(data, 2), dtype=np.int16).copy()


def pcm_to_ulaw(samples: Samples | BytesLike) -> bytes:
    """Encode int16 samples (or PCM16 little-endian bytes) to mu-law bytes."""
    # tobytes(): 0.7 us per frame, faster than handing audioop the array's buffer (1.3 us).
    return audioop.lin2ulaw(as_samples(samples).tobytes(), 2)


def pcm_rms(samples: Samples) -> float:
    """Root mean square of int16 samples (0.0 for none), as ``audioop.rms`` computes it.

    One C call with no temporaries: a per-frame level costs about a quarter of
    what numpy's cast, dot and sqrt do, most of all on a process that has just
    woken (measured 12 us against 51 us for a 20 ms frame after a 20 ms sleep).
    """
    return float(audioop.rms(as_samples(samples).data, 2))


def alaw_to_pcm(data: BytesLike) -> Samples:
    """Decode A-law bytes (any length, including 0) to int16 samples."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected A-law bytes, got {type(data).__name__}")
    return np.frombuffer(audioop.alaw2lin(data, 2), dtype=np.int16).copy()


def pcm_to_alaw(samples: Samples | BytesLike) -> bytes:
    """Encode int16 samples (or PCM16 little-endian bytes) to A-law bytes."""
    return audioop.lin2alaw(as_samples(samples).tobytes(), 2)
