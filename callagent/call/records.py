"""What a call leaves behind: typed records the session hands to the recorder.

The recorder writes them in order, in batches. Each record has a stable
``kind`` and round-trips through plain JSON so that the recorder's journal
(used while the database is unreachable) can hold and replay it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class CallOpened:
    kind: ClassVar[str] = "call_opened"
    call_id: str
    direction: str
    agent: str
    engine: str
    from_number: str
    to_number: str
    twilio_call_sid: str
    started_at: datetime
    campaign_id: int | None = None
    contact_id: int | None = None


@dataclass(frozen=True, slots=True)
class CallStreamStarted:
    """The media stream began: the call was answered by us."""

    kind: ClassVar[str] = "call_stream_started"
    call_id: str
    stream_sid: str
    answered_at: datetime


@dataclass(frozen=True, slots=True)
class CallStatusChanged:
    """A Twilio call status callback (deduplicated on sid + sequence)."""

    kind: ClassVar[str] = "call_status"
    twilio_call_sid: str
    status: str
    sequence: int
    at: datetime
    duration_s: int | None = None
    answered_by: str | None = None


@dataclass(frozen=True, slots=True)
class AmdVerdictRecord:
    """Twilio's asynchronous answering-machine verdict (``/twilio/amd``); the first one
    of a call is kept, so a retried callback is a no-op."""

    kind: ClassVar[str] = "amd_verdict"
    twilio_call_sid: str
    answered_by: str
    at: datetime
    detection_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CallClosed:
    kind: ClassVar[str] = "call_closed"
    call_id: str
    ended_at: datetime
    end_reason: str
    status: str = "completed"


@dataclass(frozen=True, slots=True)
class TurnRecord:
    kind: ClassVar[str] = "turn"
    call_id: str
    seq: int
    speaker: str  # "caller" | "agent"
    text: str
    start_ms: float
    end_ms: float
    interrupted: bool = False
    heard_text: str | None = None
    heard_ms: float | None = None
    # latency figures (ms); None where they do not apply
    response_latency_ms: float | None = None
    stt_ms: float | None = None
    brain_ms: float | None = None
    tts_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    kind: ClassVar[str] = "tool_call"
    call_id: str
    tool_call_id: str
    name: str
    arguments: str
    result: str
    status: str
    started_at: datetime
    duration_ms: float
    error: str = ""


@dataclass(frozen=True, slots=True)
class MetricRecord:
    """A figure of the call (``turn_id`` empty: the call's latest value) or of one turn."""

    kind: ClassVar[str] = "metric"
    call_id: str
    name: str
    value: float
    turn_id: str = ""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    kind: ClassVar[str] = "audit"
    action: str
    actor: str
    at: datetime
    call_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DncAdded:
    """A number goes on the internal do-not-call list (an opt-out during a call)."""

    kind: ClassVar[str] = "dnc_added"
    e164: str
    at: datetime
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordingSaved:
    """The call's audio recording is complete: link the file to the call row."""

    kind: ClassVar[str] = "recording_saved"
    call_id: str
    path: str
    policy: str  # "one-party" | "all-party"


@dataclass(frozen=True, slots=True)
class CallEngineChosen:
    """The engine (and backend) actually serving the call, e.g. "duplex:local",
    or "duplex:openai_realtime->pipeline" after a fallback."""

    kind: ClassVar[str] = "call_engine"
    call_id: str
    engine: str


Record = (
    CallOpened
    | CallStreamStarted
    | CallStatusChanged
    | AmdVerdictRecord
    | CallClosed
    | TurnRecord
    | ToolCallRecord
    | MetricRecord
    | AuditRecord
    | DncAdded
    | RecordingSaved
    | CallEngineChosen
)

RECORD_TYPES: dict[str, type[Record]] = {
    t.kind: t
    for t in (
        CallOpened,
        CallStreamStarted,
        CallStatusChanged,
        AmdVerdictRecord,
        CallClosed,
        TurnRecord,
        ToolCallRecord,
        MetricRecord,
        AuditRecord,
        DncAdded,
        RecordingSaved,
        CallEngineChosen,
    )
}


def record_to_json(record: Record) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": record.kind}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        out[f.name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def record_from_json(data: dict[str, Any]) -> Record:
    cls = RECORD_TYPES[data["kind"]]
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.type in ("datetime", "datetime | None") and isinstance(value, str):
            value = datetime.fromisoformat(value)
        kwargs[f.name] = value
    return cls(**kwargs)
