"""The one audio type inside the service: 16-bit signed mono PCM with its rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]


# eq=False: numpy arrays do not compare to one bool.
@dataclass(frozen=True, slots=True, eq=False)
class Pcm:
    samples: Samples
    rate: int

    @classmethod
    def silence(cls, ms: int, rate: int) -> Pcm:
        return cls(np.zeros(rate * ms // 1000, dtype=np.int16), rate)

    @classmethod
    def from_bytes(cls, data: bytes, rate: int) -> Pcm:
        if len(data) % 2:
            raise ValueError(f"PCM16 data must have an even length, got {len(data)} bytes")
        return cls(np.frombuffer(data, dtype="<i2").astype(np.int16), rate)

    def to_bytes(self) -> bytes:
        return self.samples.astype("<i2").tobytes()

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.samples) / self.rate

    def __len__(self) -> int:
        return len(self.samples)
