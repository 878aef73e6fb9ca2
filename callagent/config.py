"""One validated Settings object: config/callagent.toml, then CALLAGENT_* overrides.

Every key lives in a section (``[media] playout_lead_ms``); the environment
variable ``CALLAGENT_MEDIA_PLAYOUT_LEAD_MS`` overrides it. Secrets are never
read from a file: they come only from the environment, and a secret found in
the TOML file is an error.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_CONFIG = Path("config/callagent.toml")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(ValueError):
    """A setting is missing, unknown or has a bad value; the message names the key."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Public origin Twilio reaches us at (scheme://host[:port]). Webhook and
    # WebSocket signatures are checked against URLs built from it, never Host.
    public_origin: str = "http://127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    account_sid: str = "AC00000000000000000000000000000000"
    verify_signatures: bool = True
    api_base_url: str = "https://api.twilio.com"
    auth_token: str = field(default="", metadata={"secret": True})


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = "sqlite+aiosqlite:///var/callagent.db"
    echo: bool = False


@dataclass(frozen=True, slots=True)
class MediaSettings:
    # Audio queued at Twilio ahead of playback; deeper delays barge-in.
    playout_lead_ms: int = 200
    frame_ms: int = 20
    max_message_bytes: int = 65536
    # Messages rejected before a call is ended as a protocol failure.
    max_rejections: int = 50


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    queue_size: int = 10000
    batch_size: int = 200
    flush_interval_ms: int = 200
    journal_dir: str = "var/journal"
    retry_interval_ms: int = 1000


@dataclass(frozen=True, slots=True)
class AuditSettings:
    # Signed checkpoints of the audit chain's head are appended to
    # <checkpoint_dir>/checkpoints.jsonl (and to the audit_checkpoints table).
    checkpoint_dir: str = "var/audit"
    # At most one checkpoint per interval while audit events are appended
    # (plus one at shutdown); newer rows can be cut off undetected until then.
    checkpoint_interval_s: float = 60.0
    # HMAC-SHA256 key signing checkpoints (CALLAGENT_AUDIT_CHECKPOINT_KEY).
    # Unset: no checkpoints, and truncation of the newest rows goes unnoticed.
    checkpoint_key: str = field(default="", metadata={"secret": True})


@dataclass(frozen=True, slots=True)
class RedactionSettings:
    # Card numbers, security codes, expiry dates and SSNs are always masked
    # before anything is recorded; these further kinds are switchable.
    email: bool = False
    dob: bool = False
    phone: bool = False


@dataclass(frozen=True, slots=True)
class AgentSettings:
    default_profile: str = "fixture"
    engine: str = "fixture"
    greeting_text: str = "Thank you for calling. How can I help you today?"


@dataclass(frozen=True, slots=True)
class DialerSettings:
    # Names this process in claims (contacts.claimed_by); must be unique per
    # process. Empty: <hostname>-<pid>.
    worker_id: str = ""
    poll_interval_s: float = 1.0
    # A claim not finished within the lease is taken over by another dialer; it
    # must outlast one REST request (2 * rest_timeout_s: connect + read).
    lease_s: float = 60.0
    batch_size: int = 10
    rest_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    recorder: RecorderSettings = field(default_factory=RecorderSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    redaction: RedactionSettings = field(default_factory=RedactionSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    dialer: DialerSettings = field(default_factory=DialerSettings)

    @property
    def media_stream_url(self) -> str:
        """The exact wss:// URL put in <Stream url> and signed by Twilio."""
        origin = urlsplit(self.server.public_origin)
        scheme = "wss" if origin.scheme == "https" else "ws"
        return f"{scheme}://{origin.netloc}/twilio/media"

    def public_url(self, path: str) -> str:
        return self.server.public_origin.rstrip("/") + path


def _coerce(key: str, raw: Any, typ: Any) -> Any:
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if isinstance(raw, str) and raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {raw!r}")
    if typ is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {raw!r}") from None
    if typ is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {raw!r}") from None
    if typ is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{key}: expected a string, got {raw!r}")
        return raw
    raise ConfigError(f"{key}: unsupported setting type {typ!r}")


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    typ = hints[name]
    if isinstance(typ, types.UnionType):
        raise ConfigError(f"unsupported optional setting {name}")
    return typ


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    for_service: bool = True,
) -> Settings:
    """Read the TOML file (if present), apply CALLAGENT_* overrides, validate.

    ``for_service=False`` (offline tools such as ``callagent audit verify``) skips
    the checks that only matter to the web service (the Twilio auth token).
    """
    env = os.environ if environ is None else environ
    if path is None:
        path = Path(env.get("CALLAGENT_CONFIG", str(DEFAULT_CONFIG)))
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    elif "CALLAGENT_CONFIG" in env:
        raise ConfigError(f"CALLAGENT_CONFIG: file {path} does not exist")

    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Settings)
    for section_name in data:
        if section_name not in hints:
            raise ConfigError(
                f"{path}: unknown section [{section_name}]; expected one of {sorted(hints)}"
            )
    for section_name, section_cls in hints.items():
        table = data.get(section_name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section_name}] must be a table")
        known = {f.name: f for f in dataclasses.fields(section_cls)}
        values: dict[str, Any] = {}
        for key, raw in table.items():
            full = f"{section_name}.{key}"
            if key not in known:
                raise ConfigError(f"{full}: unknown setting; expected one of {sorted(known)}")
            if known[key].metadata.get("secret"):
                raise ConfigError(
                    f"{full}: is a secret and must not be in a file; set "
                    f"CALLAGENT_{section_name.upper()}_{key.upper()} in the environment"
                )
            values[key] = _coerce(full, raw, _field_type(section_cls, key))
        for key in known:
            env_name = f"CALLAGENT_{section_name.upper()}_{key.upper()}"
            if env_name in env:
                values[key] = _coerce(env_name, env[env_name], _field_type(section_cls, key))
        sections[section_name] = section_cls(**values)
    settings = Settings(**sections)
    validate(settings, for_service=for_service)
    return settings


def validate(s: Settings, *, for_service: bool = True) -> None:
    origin = urlsplit(s.server.public_origin)
    if origin.scheme not in {"http", "https"} or not origin.netloc or origin.path not in {"", "/"}:
        raise ConfigError(
            "server.public_origin: expected scheme://host[:port] with http or https "
            f"and no path, got {s.server.public_origin!r}"
        )
    if not 1 <= s.server.port <= 65535:
        raise ConfigError(f"server.port: expected 1-65535, got {s.server.port}")
    if not 20 <= s.media.playout_lead_ms <= 1000:
        raise ConfigError(
            f"media.playout_lead_ms: expected 20-1000 ms, got {s.media.playout_lead_ms}"
        )
    if s.media.frame_ms != 20:
        raise ConfigError(f"media.frame_ms: only 20 ms frames are supported, got {s.media.frame_ms}")
    if s.media.max_message_bytes < 1024:
        raise ConfigError(
            f"media.max_message_bytes: expected at least 1024, got {s.media.max_message_bytes}"
        )
    if s.recorder.queue_size < 1 or s.recorder.batch_size < 1:
        raise ConfigError("recorder.queue_size and recorder.batch_size: expected at least 1")
    if not 0 <= s.audit.checkpoint_interval_s <= 86400:
        raise ConfigError(
            "audit.checkpoint_interval_s: expected 0-86400 seconds, got "
            f"{s.audit.checkpoint_interval_s}"
        )
    if s.audit.checkpoint_key and len(s.audit.checkpoint_key) < 32:
        raise ConfigError(
            "audit.checkpoint_key: expected at least 32 characters (e.g. the output of "
            "`openssl rand -hex 32`) in CALLAGENT_AUDIT_CHECKPOINT_KEY"
        )
    if not 0 < s.dialer.poll_interval_s <= 60 or not 1 <= s.dialer.batch_size <= 1000:
        raise ConfigError("dialer.poll_interval_s: expected 0-60 s; dialer.batch_size: 1-1000")
    if not 0 < 2 * s.dialer.rest_timeout_s < s.dialer.lease_s:
        raise ConfigError(
            f"dialer.lease_s ({s.dialer.lease_s}) must exceed twice dialer.rest_timeout_s "
            f"({s.dialer.rest_timeout_s}) > 0: a live dialer's claim must not expire mid-request"
        )
    if not s.database.url.split(":", 1)[0].split("+")[0] in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"database.url: expected a sqlite or postgresql URL, got {s.database.url!r}"
        )
    if not for_service:
        return
    if s.twilio.verify_signatures and not s.twilio.auth_token:
        raise ConfigError(
            "twilio.auth_token: required while twilio.verify_signatures is on; set "
            "CALLAGENT_TWILIO_AUTH_TOKEN in the environment (or, for local development "
            "only, CALLAGENT_TWILIO_VERIFY_SIGNATURES=false)"
        )
    if not s.twilio.verify_signatures and s.server.host not in _LOOPBACK_HOSTS:
        raise ConfigError(
            "twilio.verify_signatures: may be false only while server.host is a loopback "
            f"address (local development); server.host is {s.server.host!r}"
        )
