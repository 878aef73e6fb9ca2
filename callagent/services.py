"""What a running process shares between calls, built once by the app's lifespan.

Passed explicitly to route factories and sessions: there is no module-level state.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from callagent.call.records import Record
from callagent.compliance.redact import RedactionPolicy
from callagent.config import Settings
from callagent.engines.base import CallContext, Engine
from callagent.metrics import Metrics
from callagent.telephony.twilio.signature import SignatureChecker


class RecordSink(Protocol):
    def submit(self, record: Record) -> None: ...


EngineFactory = Callable[[CallContext], Engine]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_call_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Services:
    settings: Settings
    recorder: RecordSink
    engines: EngineFactory
    metrics: Metrics = field(default_factory=Metrics)
    now: Callable[[], datetime] = utc_now
    live_calls: set[str] = field(default_factory=set)
    # Card data and SSNs are always masked; further kinds per deployment.
    redaction: RedactionPolicy = field(default_factory=RedactionPolicy)

    @property
    def signatures(self) -> SignatureChecker:
        return SignatureChecker(
            auth_token=self.settings.twilio.auth_token,
            enabled=self.settings.twilio.verify_signatures,
        )
