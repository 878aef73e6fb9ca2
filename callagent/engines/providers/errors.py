"""The provider error tree: every vendor or transport failure becomes one of these.

`ProviderError` carries the stage ("stt", "tts", "llm") and a reason fit for
a log line (never the API key). The engine turns any of them into a retry or
a spoken apology; none may end a call.
"""

from __future__ import annotations

__all__ = ["BadResponse", "ProviderError", "ProviderStalled", "ProviderUnavailable"]


class ProviderError(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        self.stage, self.reason = stage, reason
        super().__init__(f"{stage} provider: {reason}")


class ProviderUnavailable(ProviderError):
    """Could not connect, or the server answered with an error status."""


class ProviderStalled(ProviderError):
    """No answer (or no next chunk of a stream) within the timeout."""


class BadResponse(ProviderError):
    """The server answered, but not in the protocol's format."""
