"""The two-channel call recording: caller left, agent right, on the call clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callagent.audio.wavfile import read_wav
from callagent.call.recording import CallRecording


def tone(n: int, value: int) -> np.ndarray:
    return np.full(n, value, np.int16)


async def test_channels_are_placed_on_the_call_clock(tmp_path: Path) -> None:
    rec = CallRecording(tmp_path, "c1")
    rec.start()
    rec.caller(0, tone(160, 100))
    rec.caller(800, tone(160, 200))  # a gap (e.g. a pause) stays silent
    rec.agent(400, tone(320, -300))
    path = await rec.finish(keep=True)
    assert path == tmp_path / "c1.wav" and rec.dropped == 0
    import wave
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 8000
        frames = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    left, right = frames[:, 0], frames[:, 1]
    assert len(frames) == 960
    assert (left[:160] == 100).all() and (left[160:800] == 0).all() and (left[800:] == 200).all()
    assert (right[:400] == 0).all() and (right[400:720] == -300).all() and (right[720:] == 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1.wav"]  # no raw files left


async def test_discarding_leaves_nothing(tmp_path: Path) -> None:
    rec = CallRecording(tmp_path / "rec", "c2")
    rec.start()
    rec.caller(0, tone(160, 5))
    assert await rec.finish(keep=False) is None
    assert list((tmp_path / "rec").iterdir()) == []


@pytest.mark.parametrize("keep", [False, True])
async def test_no_audio_never_touches_the_disk(tmp_path: Path, keep: bool) -> None:
    rec = CallRecording(tmp_path / "rec", "c3")
    rec.start()
    assert await rec.finish(keep=keep) is None and not rec.had_audio
    assert not (tmp_path / "rec").exists()


async def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    rec = CallRecording(tmp_path, "c4", queue_chunks=10)
    # not started yet: nothing drains the queue
    for i in range(15):
        rec.caller(160 * i, tone(160, 1))
    assert rec.dropped == 5
    rec.start()
    path = await rec.finish(keep=True)
    assert path is not None and len(read_wav(path).samples) == 1600


async def test_audio_after_finish_and_bad_offsets_are_ignored(tmp_path: Path) -> None:
    rec = CallRecording(tmp_path, "c5")
    rec.start()
    rec.caller(-1, tone(10, 1))
    rec.agent(0, np.zeros(0, np.int16))
    rec.agent(5, tone(10, 7))
    assert await rec.finish(keep=True) is not None
    rec.caller(0, tone(10, 1))
    assert await rec.finish(keep=True) is None


async def test_a_write_failure_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rec = CallRecording(blocker, "c6")
    rec.start()
    rec.caller(0, tone(10, 1))
    assert await rec.finish(keep=True) is None


@pytest.mark.parametrize("bad", ["", "../x", ".hidden", "a/b"])
def test_bad_call_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="call id"):
        CallRecording(tmp_path, bad)
