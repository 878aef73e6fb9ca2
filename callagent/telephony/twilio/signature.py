"""X-Twilio-Signature checks for webhooks and the media WebSocket upgrade.

The URL Twilio signed is rebuilt from the configured public origin plus the
request's path and query, never from the Host header: behind a proxy or a
tunnel the Host we see is not the one Twilio called.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "x-twilio-signature"


class SignatureVerdict(enum.Enum):
    VALID = "valid"
    MISSING = "missing"
    INVALID = "invalid"
    SKIPPED = "skipped"  # verification switched off for local development


@dataclass(frozen=True, slots=True)
class SignatureChecker:
    auth_token: str
    enabled: bool

    def check(self, url: str, params: Any, headers: Mapping[str, str]) -> SignatureVerdict:
        """``params`` is the form multi-dict (pass Starlette's FormData as is)."""
        if not self.enabled:
            return SignatureVerdict.SKIPPED
        signature = headers.get(SIGNATURE_HEADER, "")
        if not signature:
            return SignatureVerdict.MISSING
        if RequestValidator(self.auth_token).validate(url, params, signature):
            return SignatureVerdict.VALID
        return SignatureVerdict.INVALID

    def sign(self, url: str, params: Mapping[str, str] | None = None) -> str:
        """Compute the signature Twilio would send (used by the simulator)."""
        return str(RequestValidator(self.auth_token).compute_signature(url, params or {}))


def public_request_url(public_origin: str, path: str, query: str) -> str:
    url = public_origin.rstrip("/") + path
    return f"{url}?{query}" if query else url
