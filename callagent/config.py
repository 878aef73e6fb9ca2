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
    # Once the lead is full, wait for room for this much audio and send it in
    # one go (one wake-up per batch, not per 20 ms frame). Capped at half the
    # lead, so a short lead keeps working with the default.
    send_batch_ms: int = 60
    # From this many media streams on one process, each stream's socket is read
    # at most once per read_batch_ms: one wake-up and one system call carry up
    # to three 20 ms frames instead of one. Caller audio then waits up to
    # read_batch_ms - 20 ms (on average a third of it) before the engine hears it.
    read_batch_ms: int = 60
    read_batch_from_calls: int = 50
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
    # Twilio creates in flight at once per dialer; at shutdown the ones not yet sent are
    # withdrawn, not sent.
    parallel_creates: int = 4


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    # Operator console and JSON API (callagent.console).
    # A browser session lasts this long after login (60 s - 7 days).
    session_ttl_s: int = 8 * 3600
    # Failed logins allowed per username (and 4x per client address) per window.
    login_max_failures: int = 5
    login_window_s: int = 900
    # Calls per page of the call list (10-500).
    page_size: int = 50
    # API tokens expire after this many days (0: never).
    api_token_ttl_days: int = 90
    # Signs session cookies (CALLAGENT_CONSOLE_SECRET_KEY, at least 32 characters).
    # Unset on a loopback host: an ephemeral key (sessions end at restart) and a warning.
    secret_key: str = field(default="", metadata={"secret": True})


@dataclass(frozen=True, slots=True)
class RealtimeSettings:
    # The OpenAI-compatible endpoint /v1/realtime (callagent.realtime_server).
    enabled: bool = True
    # The agent profile served when the client names none (?model=<profile>).
    default_profile: str = "customer_service"
    # Bearer token clients must present (CALLAGENT_REALTIME_API_TOKEN). Unset: the
    # endpoint refuses every connection.
    api_token: str = field(default="", metadata={"secret": True})


@dataclass(frozen=True, slots=True)
class ProvidersSettings:
    # Duplex backends (callagent.engines.duplex). Keys only from the environment:
    # CALLAGENT_PROVIDERS_OPENAI_API_KEY, CALLAGENT_PROVIDERS_GEMINI_API_KEY.
    openai_base_url: str = "wss://api.openai.com/v1"
    openai_model: str = "gpt-realtime"
    openai_voice: str = "marin"
    openai_turn_detection: str = "server_vad"  # or semantic_vad
    openai_vad_threshold: float = 0.5
    openai_silence_ms: int = 500
    openai_eagerness: str = "auto"  # semantic_vad only
    # false for vendors without conversation.item.truncate (xAI Grok Voice).
    openai_truncate: bool = True
    openai_api_key: str = field(default="", metadata={"secret": True})
    gemini_base_url: str = "wss://generativelanguage.googleapis.com"
    gemini_model: str = "models/gemini-live-2.5-flash-preview"
    gemini_api_key: str = field(default="", metadata={"secret": True})
    # Said while a tool runs longer than holding_after_ms.
    holding_phrase: str = "One moment while I check that."
    holding_after_ms: int = 700
    # If a duplex backend fails mid-call: continue on the modular pipeline.
    fallback_to_pipeline: bool = True
    fallback_apology: str = "Sorry, I had a problem on my side. Let's carry on."
    connect_timeout_s: float = 10.0
    # OpenAI Realtime sessions end at the vendor's cap (60 min, closed with 1001) and cannot
    # be renewed: the backend opens a new session and re-seeds the transcript. It renews at
    # a quiet moment from cap - renew_margin, and at cap - renew_force whatever is going on.
    openai_session_cap_s: float = 3600.0
    openai_renew_margin_s: float = 120.0
    openai_renew_force_s: float = 30.0
    # Unplanned reconnects (the connection lost mid-call) before the call falls back.
    openai_max_reconnects: int = 3
    # The last user/assistant turns re-sent to a new session.
    openai_reseed_turns: int = 20


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    # Two-channel WAV per call (caller left, agent right, on the call clock), kept
    # only when the consent policy allows it (callagent.compliance.consent).
    enabled: bool = True
    directory: str = "var/recordings"
    # Audio chunks waiting for the writer thread; beyond this, audio is dropped
    # (and counted), never waited for.
    queue_chunks: int = 2000
    # Consent rule for a number whose US state is unknown: "all-party" or "one-party".
    unknown_policy: str = "all-party"
    # Caller phrases (comma-separated) that refuse recording for the rest of the call.
    refusal_phrases: str = "don't record,do not record,stop recording,no recording"


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    # Days each kind of data is kept after the call (callagent retention run); 0: forever.
    recordings_days: int = 30
    transcripts_days: int = 90
    tool_payloads_days: int = 90


@dataclass(frozen=True, slots=True)
class SecureCaptureSettings:
    # Card entry by keypad: the caller presses start_key, then the digits, then end_key.
    # Only a masked form is kept; recording and the engine's audio pause meanwhile.
    # start_key = "": off.
    start_key: str = "*"
    end_key: str = "#"
    max_digits: int = 19


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
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)
    providers: ProvidersSettings = field(default_factory=ProvidersSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    secure_capture: SecureCaptureSettings = field(default_factory=SecureCaptureSettings)

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


def _validate_compliance(s: Settings) -> None:
    r = s.recording
    if r.unknown_policy not in ("all-party", "one-party"):
        raise ConfigError(
            f"recording.unknown_policy: expected all-party or one-party, got {r.unknown_policy!r}"
        )
    if not 10 <= r.queue_chunks <= 100_000:
        raise ConfigError(f"recording.queue_chunks: expected 10-100000, got {r.queue_chunks}")
    if r.enabled and not r.directory.strip():
        raise ConfigError("recording.directory: required while recording.enabled is true")
    for name in ("recordings_days", "transcripts_days", "tool_payloads_days"):
        days = getattr(s.retention, name)
        if not 0 <= days <= 36500:
            raise ConfigError(f"retention.{name}: expected 0-36500 days (0: keep), got {days}")
    sc = s.secure_capture
    keys = "0123456789*#ABCD"
    for name in ("start_key", "end_key"):
        key = getattr(sc, name)
        if key and (len(key) != 1 or key not in keys):
            raise ConfigError(f"secure_capture.{name}: expected one DTMF key or \"\", got {key!r}")
    if sc.start_key and sc.start_key == sc.end_key:
        raise ConfigError("secure_capture.end_key: must differ from secure_capture.start_key")
    if sc.start_key and sc.start_key.isdigit():
        raise ConfigError("secure_capture.start_key: a digit would be part of the number; use * or #")
    if not 4 <= sc.max_digits <= 32:
        raise ConfigError(f"secure_capture.max_digits: expected 4-32, got {sc.max_digits}")


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
    if not 20 <= s.media.send_batch_ms <= 500:
        raise ConfigError(f"media.send_batch_ms: expected 20-500 ms, got {s.media.send_batch_ms}")
    if not 0 <= s.media.read_batch_ms <= 100:
        raise ConfigError(f"media.read_batch_ms: expected 0 (off) to 100 ms, got {s.media.read_batch_ms}")
    if s.media.read_batch_from_calls < 1:
        raise ConfigError(
            f"media.read_batch_from_calls: expected at least 1, got {s.media.read_batch_from_calls}"
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
    if not 1 <= s.dialer.parallel_creates <= 32:
        raise ConfigError(
            f"dialer.parallel_creates: expected 1-32, got {s.dialer.parallel_creates}"
        )
    if not 0 < 2 * s.dialer.rest_timeout_s < s.dialer.lease_s:
        raise ConfigError(
            f"dialer.lease_s ({s.dialer.lease_s}) must exceed twice dialer.rest_timeout_s "
            f"({s.dialer.rest_timeout_s}) > 0: a live dialer's claim must not expire mid-request"
        )
    if not s.database.url.split(":", 1)[0].split("+")[0] in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"database.url: expected a sqlite or postgresql URL, got {s.database.url!r}"
        )
    c = s.console
    if not 60 <= c.session_ttl_s <= 7 * 86400:
        raise ConfigError(f"console.session_ttl_s: expected 60-604800 seconds, got {c.session_ttl_s}")
    if not 1 <= c.login_max_failures <= 1000 or not 1 <= c.login_window_s <= 86400:
        raise ConfigError(
            "console.login_max_failures: expected 1-1000; console.login_window_s: 1-86400 s; "
            f"got {c.login_max_failures} and {c.login_window_s}"
        )
    if not 10 <= c.page_size <= 500:
        raise ConfigError(f"console.page_size: expected 10-500, got {c.page_size}")
    if not 0 <= c.api_token_ttl_days <= 3650:
        raise ConfigError(
            f"console.api_token_ttl_days: expected 0-3650 (0: never), got {c.api_token_ttl_days}"
        )
    if c.secret_key and len(c.secret_key) < 32:
        raise ConfigError(
            "console.secret_key: expected at least 32 characters (e.g. the output of "
            "`openssl rand -hex 32`) in CALLAGENT_CONSOLE_SECRET_KEY"
        )
    _validate_providers(s.providers)
    _validate_compliance(s)
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
    if not s.console.secret_key and s.server.host not in _LOOPBACK_HOSTS:
        raise ConfigError(
            "console.secret_key: required when server.host is not a loopback address; set "
            "CALLAGENT_CONSOLE_SECRET_KEY (at least 32 characters) in the environment"
        )


def _validate_providers(p: ProvidersSettings) -> None:
    for key in ("openai_base_url", "gemini_base_url"):
        url = urlsplit(getattr(p, key))
        if url.scheme not in {"ws", "wss", "http", "https"} or not url.netloc:
            raise ConfigError(f"providers.{key}: expected a ws(s):// or http(s):// URL, got "
                              f"{getattr(p, key)!r}")
    if p.openai_turn_detection not in {"server_vad", "semantic_vad"}:
        raise ConfigError("providers.openai_turn_detection: expected server_vad or semantic_vad, "
                          f"got {p.openai_turn_detection!r}")
    if p.openai_eagerness not in {"low", "medium", "high", "auto"}:
        raise ConfigError("providers.openai_eagerness: expected low, medium, high or auto, got "
                          f"{p.openai_eagerness!r}")
    if not 0.0 <= p.openai_vad_threshold <= 1.0:
        raise ConfigError(f"providers.openai_vad_threshold: expected 0-1, got {p.openai_vad_threshold}")
    if not 100 <= p.openai_silence_ms <= 5000:
        raise ConfigError(f"providers.openai_silence_ms: expected 100-5000, got {p.openai_silence_ms}")
    if not 0 <= p.holding_after_ms <= 10000:
        raise ConfigError(f"providers.holding_after_ms: expected 0-10000, got {p.holding_after_ms}")
    if not 0 < p.connect_timeout_s <= 120:
        raise ConfigError(f"providers.connect_timeout_s: expected 0-120 s, got {p.connect_timeout_s}")
    if not 0 <= p.openai_renew_force_s < p.openai_renew_margin_s < p.openai_session_cap_s:
        raise ConfigError("providers.openai_renew_force_s < openai_renew_margin_s < "
                          "openai_session_cap_s: expected 0 <= force < margin < cap, got "
                          f"{p.openai_renew_force_s}, {p.openai_renew_margin_s}, "
                          f"{p.openai_session_cap_s}")
    if not 0 <= p.openai_max_reconnects <= 20:
        raise ConfigError("providers.openai_max_reconnects: expected 0-20, got "
                          f"{p.openai_max_reconnects}")
    if not 0 <= p.openai_reseed_turns <= 200:
        raise ConfigError("providers.openai_reseed_turns: expected 0-200, got "
                          f"{p.openai_reseed_turns}")
