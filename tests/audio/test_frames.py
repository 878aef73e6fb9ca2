"""FrameSplitter: any chunking in, whole 20 ms frames out, nothing lost or reordered."""

from __future__ import annotations

import numpy as np
import pytest

from callagent.audio import frames
from callagent.audio.frames import FRAME_BYTES, FrameSplitter


def test_public_names_are_pinned() -> None:
    assert frames.__all__ == ["FRAME_BYTES", "FrameSplitter"]


def test_default_frame_is_20ms_of_8khz_mu_law() -> None:
    assert FRAME_BYTES == 160 and FrameSplitter().frame_bytes == 160


def test_any_chunking_yields_the_same_whole_frames_in_order() -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, size=50_003, dtype=np.uint8).tobytes()
    splitter, out, pos = FrameSplitter(), [], 0
    for size in rng.integers(0, 700, size=10_000).tolist():
        out += splitter.push(data[pos : pos + size])
        pos += size
        if pos >= len(data):
            break
    assert all(len(f) == 160 for f in out)
    assert b"".join(out) == data[: len(data) // 160 * 160]
    assert splitter.pending_bytes == len(data) % 160


def test_small_chunks_are_held_until_a_frame_is_full() -> None:
    splitter = FrameSplitter()
    assert splitter.push(b"\x01" * 100) == []
    assert splitter.pending_bytes == 100
    assert splitter.push(b"\x02" * 60) == [b"\x01" * 100 + b"\x02" * 60]
    assert splitter.pending_bytes == 0


def test_one_big_chunk_gives_many_frames() -> None:
    assert FrameSplitter().push(bytes(160 * 5 + 1)) == [bytes(160)] * 5


def test_empty_chunk_gives_no_frames() -> None:
    splitter = FrameSplitter()
    assert splitter.push(b"") == []
    assert splitter.flush(pad=True) == b""


def test_flush_with_pad_fills_the_last_frame_with_mu_law_silence() -> None:
    splitter = FrameSplitter()
    splitter.push(b"\x11" * 170)
    assert splitter.flush(pad=True) == b"\x11" * 10 + b"\xff" * 150
    assert splitter.pending_bytes == 0


def test_flush_without_pad_returns_the_partial_frame_as_is() -> None:
    splitter = FrameSplitter()
    splitter.push(b"\x11" * 170)
    assert splitter.flush(pad=False) == b"\x11" * 10
    assert splitter.flush(pad=False) == b""


def test_flush_when_frames_are_aligned_returns_nothing() -> None:
    splitter = FrameSplitter()
    splitter.push(bytes(320))
    assert splitter.flush(pad=True) == b""


def test_clear_drops_the_pending_bytes() -> None:
    splitter = FrameSplitter()
    splitter.push(bytes(90))
    assert splitter.clear() == 90
    assert splitter.push(bytes(160)) == [bytes(160)]


def test_other_frame_sizes_work() -> None:
    splitter = FrameSplitter(frame_bytes=400)  # 50 ms
    assert splitter.push(bytearray(1000)) == [bytes(400)] * 2
    assert splitter.flush(pad=True) == bytes(200) + b"\xff" * 200


def test_frames_are_immutable_bytes() -> None:
    [frame] = FrameSplitter().push(memoryview(bytearray(160)))
    assert type(frame) is bytes


@pytest.mark.parametrize("bad", [0, -160, 160.0, True, None])
def test_bad_frame_size_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"^frame_bytes must be a positive int, got {bad!r}$"):
        FrameSplitter(bad)  # type: ignore[arg-type]


def test_text_is_not_mu_law() -> None:
    with pytest.raises(ValueError, match=r"^expected mu-law bytes, got str$"):
        FrameSplitter().push("abc")  # type: ignore[arg-type]
