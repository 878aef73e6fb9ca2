import re
from pathlib import Path

import pytest

from callagent.config import ConfigError, load_settings

TOKEN = {"CALLAGENT_TWILIO_AUTH_TOKEN": "secret"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callagent.toml"
    path.write_text(text)
    return path


def test_shipped_defaults_load() -> None:
    settings = load_settings(Path("config/callagent.toml"), TOKEN)
    assert settings.media.playout_lead_ms == 200
    assert settings.database.url.startswith("sqlite")
    assert settings.twilio.verify_signatures is True


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[media]\nplayout_lead_ms = 300\n")
    settings = load_settings(path, {**TOKEN, "CALLAGENT_MEDIA_PLAYOUT_LEAD_MS": "400"})
    assert settings.media.playout_lead_ms == 400


def test_bad_integer_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CALLAGENT_MEDIA_PLAYOUT_LEAD_MS: expected an integer"):
        load_settings(write(tmp_path, ""), {**TOKEN, "CALLAGENT_MEDIA_PLAYOUT_LEAD_MS": "lots"})


def test_lead_above_one_second_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="media.playout_lead_ms: expected 20-1000 ms"):
        load_settings(write(tmp_path, "[media]\nplayout_lead_ms = 1500\n"), TOKEN)


def test_send_batch_default_and_override(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), TOKEN).media.send_batch_ms == 60
    env = {**TOKEN, "CALLAGENT_MEDIA_SEND_BATCH_MS": "40"}
    assert load_settings(write(tmp_path, ""), env).media.send_batch_ms == 40


@pytest.mark.parametrize("bad", [0, 19, 501])
def test_send_batch_outside_20_to_500ms_refused(tmp_path: Path, bad: int) -> None:
    with pytest.raises(ConfigError, match=rf"^media.send_batch_ms: expected 20-500 ms, got {bad}$"):
        load_settings(write(tmp_path, f"[media]\nsend_batch_ms = {bad}\n"), TOKEN)


def test_read_batching_defaults_and_override(tmp_path: Path) -> None:
    media = load_settings(write(tmp_path, ""), TOKEN).media
    assert (media.read_batch_ms, media.read_batch_from_calls) == (60, 50)
    env = {**TOKEN, "CALLAGENT_MEDIA_READ_BATCH_MS": "0", "CALLAGENT_MEDIA_READ_BATCH_FROM_CALLS": "10"}
    media = load_settings(write(tmp_path, ""), env).media
    assert (media.read_batch_ms, media.read_batch_from_calls) == (0, 10)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("read_batch_ms = -1", "media.read_batch_ms: expected 0 (off) to 100 ms, got -1"),
        ("read_batch_ms = 101", "media.read_batch_ms: expected 0 (off) to 100 ms, got 101"),
        ("read_batch_from_calls = 0", "media.read_batch_from_calls: expected at least 1, got 0"),
    ],
)
def test_read_batching_outside_its_range_refused(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}$"):
        load_settings(write(tmp_path, f"[media]\n{line}\n"), TOKEN)


def test_unknown_key_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="media.lead: unknown setting"):
        load_settings(write(tmp_path, "[media]\nlead = 1\n"), TOKEN)


def test_unknown_section_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[mediaa\]"):
        load_settings(write(tmp_path, "[mediaa]\nlead = 1\n"), TOKEN)


def test_secret_in_file_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[twilio]\nauth_token = "abc"\n')
    with pytest.raises(ConfigError, match="twilio.auth_token: is a secret"):
        load_settings(path, TOKEN)


def test_token_required_while_verifying(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CALLAGENT_TWILIO_AUTH_TOKEN"):
        load_settings(write(tmp_path, ""), {})


def test_verification_switch_allows_no_token(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, ""), {"CALLAGENT_TWILIO_VERIFY_SIGNATURES": "false"}
    )
    assert settings.twilio.verify_signatures is False


def test_bad_boolean_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CALLAGENT_TWILIO_VERIFY_SIGNATURES: expected a boolean"):
        load_settings(write(tmp_path, ""), {"CALLAGENT_TWILIO_VERIFY_SIGNATURES": "maybe"})


def test_public_origin_with_path_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server.public_origin"):
        load_settings(
            write(tmp_path, '[server]\npublic_origin = "https://x.example/app"\n'), TOKEN
        )


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[media\n"), TOKEN)


def test_stream_url_follows_public_origin(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\npublic_origin = "https://calls.example.com"\n')
    settings = load_settings(path, TOKEN)
    assert settings.media_stream_url == "wss://calls.example.com/twilio/media"


def test_bad_database_url_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="database.url"):
        load_settings(write(tmp_path, '[database]\nurl = "mysql://x"\n'), TOKEN)


def test_verification_off_refused_on_a_public_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="may be false only while server.host is a loopback"):
        load_settings(
            write(tmp_path, '[server]\nhost = "0.0.0.0"\n'),
            {"CALLAGENT_TWILIO_VERIFY_SIGNATURES": "false"},
        )
