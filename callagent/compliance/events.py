"""The audit log's action names: one place, so emitters and readers agree.

Call path: received (webhook), answered (media stream start), ended; what the
caller heard (disclosures, mark-echo proof), consent, recording state, secure
capture, tools, transfer, opt-out. Elsewhere: do-not-call hits (dialer),
engine fallback (engine factory), retention and erasure (commands),
configuration loaded or changed (each start of the web service).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ALL"]

CALL_RECEIVED: Final = "call.received"
CALL_ANSWERED: Final = "call.answered"
CALL_ENDED: Final = "call.ended"
DISCLOSURE_HEARD: Final = "disclosure.heard"
DISCLOSURE_NOT_HEARD: Final = "disclosure.not_heard"  # the call ended before it played out
CONSENT_GIVEN: Final = "consent.given"
CONSENT_REFUSED: Final = "consent.refused"
RECORDING_STARTED: Final = "recording.started"
RECORDING_PAUSED: Final = "recording.paused"
RECORDING_RESUMED: Final = "recording.resumed"
RECORDING_STOPPED: Final = "recording.stopped"
RECORDING_SAVED: Final = "recording.saved"
RECORDING_DISCARDED: Final = "recording.discarded"
SECURE_CAPTURE_STARTED: Final = "secure_capture.started"
SECURE_CAPTURE_ENDED: Final = "secure_capture.ended"
TOOL_CALLED: Final = "tool.called"
CALL_TRANSFER: Final = "call.transfer"
CALL_TRANSFER_FAILED: Final = "call.transfer_failed"
CALL_HANGUP_FAILED: Final = "call.hangup_failed"
OPT_OUT: Final = "call.opt_out"
DNC_HIT: Final = "dnc.hit"
CAMPAIGN_FINISHED: Final = "campaign.finished"  # every contact done or skipped (dialer)
ENGINE_FALLBACK: Final = "engine.fallback"
REDACTION_APPLIED: Final = "redaction.applied"
RETENTION_PURGED: Final = "retention.purged"
ERASURE_COMPLETED: Final = "erasure.completed"
CONFIG_LOADED: Final = "config.loaded"  # each start of the web service (compliance/config_audit.py)
CONFIG_CHANGED: Final = "config.changed"  # ... when settings or agent profiles differ from the last

ALL: Final = frozenset(
    v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and "." in v
)
