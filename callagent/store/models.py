"""The database tables, as typed SQLAlchemy 2.x models (tables only, no queries).

Every schema change here is an Alembic revision in ``migrations/versions``;
``tests/store/test_migrations.py`` fails when the two drift apart.

Timestamps are timezone-aware UTC everywhere (``UTCDateTime``), on SQLite too.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text  # a name apart from Turn.text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "NAMING_CONVENTION",
    "AmdVerdict",
    "AuditCheckpoint",
    "AuditEvent",
    "Base",
    "Call",
    "CallAttempt",
    "CallMetric",
    "CallStatusEvent",
    "Campaign",
    "Contact",
    "DncNumber",
    "ToolCall",
    "Turn",
    "UTCDateTime",
]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC ``datetime`` in, an aware UTC ``datetime`` out, on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones: the value is
    stored as naive UTC and comes back tagged UTC. Naive datetimes are refused
    (they are ambiguous, and the audit chain hashes the exact instant).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must be timezone-aware")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime()}


class Call(Base):
    __tablename__ = "calls"

    # our call id (uuid4 string), not a surrogate key
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    twilio_call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    stream_sid: Mapped[str | None] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16))
    # E.164, or a SIP URI
    from_number: Mapped[str] = mapped_column(String(255))
    to_number: Mapped[str] = mapped_column(String(255))
    agent: Mapped[str] = mapped_column(String(64))
    engine: Mapped[str] = mapped_column(String(64))
    # campaigns/contacts tables come later; plain integers until then
    campaign_id: Mapped[int | None] = mapped_column(Integer, index=True)
    contact_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(index=True)
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    # a code or a sentence ("protocol error: ...")
    end_reason: Mapped[str | None] = mapped_column(Text)
    answered_by: Mapped[str | None] = mapped_column(String(32))
    duration_s: Mapped[int | None] = mapped_column(Integer)
    # highest Twilio status-callback SequenceNumber applied to this row
    last_status_seq: Mapped[int | None] = mapped_column(Integer)
    # the two-channel WAV (caller left, agent right) when the recording policy kept audio
    recording_path: Mapped[str | None] = mapped_column(Text)
    # "one-party" | "all-party": the consent rule the call's recording followed
    recording_policy: Mapped[str | None] = mapped_column(String(16))

    turns: Mapped[list[Turn]] = relationship(
        back_populates="call", lazy="raise", order_by="Turn.seq"
    )
    tool_calls: Mapped[list[ToolCall]] = relationship(back_populates="call", lazy="raise")
    metrics: Mapped[list[CallMetric]] = relationship(back_populates="call", lazy="raise")


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("call_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    # on the call clock (ms since the media stream started)
    start_ms: Mapped[float] = mapped_column(Float)
    end_ms: Mapped[float] = mapped_column(Float)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    heard_text: Mapped[str | None] = mapped_column(Text)
    heard_ms: Mapped[float | None] = mapped_column(Float)
    response_latency_ms: Mapped[float | None] = mapped_column(Float)
    stt_ms: Mapped[float | None] = mapped_column(Float)
    brain_ms: Mapped[float | None] = mapped_column(Float)
    tts_ms: Mapped[float | None] = mapped_column(Float)

    call: Mapped[Call] = relationship(back_populates="turns", lazy="raise")


class ToolCall(Base):
    __tablename__ = "tool_calls"
    __table_args__ = (UniqueConstraint("call_id", "tool_call_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    tool_call_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(64))
    # after redaction
    arguments: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime]
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str] = mapped_column(Text, default="")

    call: Mapped[Call] = relationship(back_populates="tool_calls", lazy="raise")


class CallMetric(Base):
    """One figure of a call: call-level (``turn_id == ""``, the call's latest value) or of
    one agent turn (``turn_id`` = the engine's turn id).

    Call-level rows use ``""``, not NULL: NULLs are distinct in a unique constraint, so
    (call_id, name, NULL) would not be unique and the recorder's upsert (ON CONFLICT on
    the constraint) could not find its row. A partial unique index per case would work
    too, but it needs two upserts per batch and ``alembic check`` does not compare index
    predicates; one plain constraint does the same on SQLite and PostgreSQL.
    """

    __tablename__ = "call_metrics"
    __table_args__ = (UniqueConstraint("call_id", "name", "turn_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    turn_id: Mapped[str] = mapped_column(String(64), default="", server_default=sql_text("''"))
    value: Mapped[float] = mapped_column(Float)

    call: Mapped[Call] = relationship(back_populates="metrics", lazy="raise")


class CallStatusEvent(Base):
    """Every Twilio status callback, once: (call_sid, sequence) deduplicates retries."""

    __tablename__ = "call_status_events"
    __table_args__ = (UniqueConstraint("call_sid", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # no foreign key: a callback may arrive before (or without) our calls row
    call_sid: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    duration_s: Mapped[int | None] = mapped_column(Integer)
    answered_by: Mapped[str | None] = mapped_column(String(32))


class AmdVerdict(Base):
    """Twilio's asynchronous answering-machine verdict for a call (``/twilio/amd``), once:
    a retried callback finds its call_sid taken and changes nothing."""

    __tablename__ = "amd_verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # no foreign key, as for status events: the verdict may come before our calls row
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    # human | machine_start | machine_end_beep | ... | fax | unknown
    answered_by: Mapped[str] = mapped_column(String(32))
    # Twilio's MachineDetectionDuration: how long detection listened
    detection_ms: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime]


class AuditEvent(Base):
    """The append-only, hash-chained audit log (see ``callagent.compliance.audit``).

    ``hash`` covers ``prev_hash`` and the canonical content (seq, at, actor,
    action, call_id, details). ``source_key`` is the producer's idempotency key
    (the recorder's batch id and position), so a replayed journal never appends
    an event twice; it is not part of the hashed content. On PostgreSQL a
    trigger refuses UPDATE, DELETE and TRUNCATE.
    """

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(128))
    # no foreign key: the audit trail outlives the calls it mentions
    call_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # canonical JSON object (sorted keys)
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    source_key: Mapped[str | None] = mapped_column(String(80), unique=True)


class AuditCheckpoint(Base):
    """A signed head of the audit chain (see ``callagent.compliance.checkpoint``).

    Kept outside ``audit_events`` (and also appended to a JSON-lines file) so a
    truncated log can be told from a short one. Append-only like the log: on
    PostgreSQL a trigger refuses UPDATE, DELETE and TRUNCATE.
    """

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    # when the head was signed
    at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(64))
    # hex HMAC-SHA256
    signature: Mapped[str] = mapped_column(String(64))


class Campaign(Base):
    """An outbound campaign (``callagent.campaigns``); ``spec`` is the CampaignSpec as JSON."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    agent_profile: Mapped[str] = mapped_column(String(64))
    caller_id: Mapped[str] = mapped_column(String(32))
    # CampaignState value
    state: Mapped[str] = mapped_column(String(16))
    max_concurrent_calls: Mapped[int] = mapped_column(Integer)
    spec: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class Contact(Base):
    """One number to call in one campaign.

    ``state``: pending (due at ``next_attempt_at``) -> claimed (a dialer holds it until
    ``lease_until``) -> in_call (placed, waiting for the outcome) -> pending | done | skipped.
    """

    __tablename__ = "contacts"
    __table_args__ = (
        Index("ix_contacts_due", "campaign_id", "state", "next_attempt_at"),
        Index("ix_contacts_lease", "state", "lease_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    dedupe_key: Mapped[str] = mapped_column(String(32), unique=True)
    e164: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(255))
    # JSON list of IANA zone names
    timezones: Mapped[str] = mapped_column(Text)
    consent_type: Mapped[str | None] = mapped_column(String(8))
    consent_at: Mapped[datetime | None]
    # JSON object of free CSV fields
    fields: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    # the latest SkipReason values, comma-separated (waiting or final)
    skip_reason: Mapped[str | None] = mapped_column(Text)


class CallAttempt(Base):
    """One dial (or final skip) of a contact; ``idempotency_key`` = contact id + attempt number.

    ``status``: placing (recorded before the REST call) -> placed (call sid known) ->
    ended; or skipped / failed.
    """

    __tablename__ = "call_attempts"
    __table_args__ = (
        UniqueConstraint("contact_id", "attempt_no"),
        Index("ix_call_attempts_e164_created_at", "e164", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    attempt_no: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    e164: Mapped[str] = mapped_column(String(16))
    # our call id (``calls.id`` once the voice webhook ran)
    call_id: Mapped[str] = mapped_column(String(36))
    worker: Mapped[str] = mapped_column(String(64))
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    outcome: Mapped[str | None] = mapped_column(String(32))
    answered_by: Mapped[str | None] = mapped_column(String(32))
    duration_s: Mapped[int | None] = mapped_column(Integer)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    placed_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class DncNumber(Base):
    """A do-not-call entry; ``source`` is ``internal`` or ``national`` (``DncList`` values)."""

    __tablename__ = "dnc_numbers"
    __table_args__ = (UniqueConstraint("e164", "source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    e164: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    added_at: Mapped[datetime]
