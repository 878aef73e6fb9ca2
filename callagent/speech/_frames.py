"""Input checks shared by the streaming stages: one precise error per misuse."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def check_frame(frame: npt.NDArray[np.int16], samples: int, rate: int) -> None:
    """Raise ValueError unless `frame` is a 1-D int16 array of `samples` samples."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.int16 or frame.ndim != 1:
        got = (
            f"{frame.dtype} array of shape {frame.shape}"
            if isinstance(frame, np.ndarray)
            else type(frame).__name__
        )
        raise ValueError(f"expected a 1-D int16 array, got {got}")
    if len(frame) != samples:
        ms = 1000 * samples // rate
        raise ValueError(
            f"expected {samples} samples ({ms} ms at {rate // 1000} kHz), got {len(frame)}"
        )
