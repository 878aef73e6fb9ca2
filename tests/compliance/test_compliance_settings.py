"""The [recording], [retention] and [secure_capture] settings are validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from callagent.config import ConfigError, load_settings


def load(env: dict[str, str], tmp_path: Path) -> None:
    load_settings(tmp_path / "none.toml", env, for_service=False)


def test_defaults_load(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "none.toml", {}, for_service=False)
    assert s.recording.unknown_policy == "all-party" and s.retention.recordings_days == 30
    assert s.secure_capture.start_key == "*" and s.secure_capture.end_key == "#"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CALLAGENT_RECORDING_UNKNOWN_POLICY": "maybe"}, "recording.unknown_policy"),
        ({"CALLAGENT_RECORDING_QUEUE_CHUNKS": "1"}, "recording.queue_chunks"),
        ({"CALLAGENT_RECORDING_DIRECTORY": " "}, "recording.directory"),
        ({"CALLAGENT_RETENTION_RECORDINGS_DAYS": "-1"}, "retention.recordings_days"),
        ({"CALLAGENT_RETENTION_TOOL_PAYLOADS_DAYS": "x"}, "expected an integer"),
        ({"CALLAGENT_SECURE_CAPTURE_START_KEY": "**"}, "secure_capture.start_key"),
        ({"CALLAGENT_SECURE_CAPTURE_START_KEY": "5"}, "a digit would be part of the number"),
        ({"CALLAGENT_SECURE_CAPTURE_END_KEY": "*"}, "must differ"),
        ({"CALLAGENT_SECURE_CAPTURE_MAX_DIGITS": "40"}, "secure_capture.max_digits"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(env, tmp_path)
