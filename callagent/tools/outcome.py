"""What one tool invocation leaves: status, result data, error text, timing."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ToolFailure", "ToolResult", "ToolState"]


class ToolState(enum.Enum):
    OK = "ok"
    NOT_FOUND = "not_found"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ToolResult:
    state: ToolState
    data: Mapping[str, object] = field(default_factory=dict)
    error: str = ""  # a sentence the agent can speak around
    attempts: int = 1
    duration_ms: float = 0.0


class ToolFailure(Exception):
    """A tool could not do its job; the message is safe to show the agent."""
