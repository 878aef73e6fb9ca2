"""A call exported as JSON or CSV (the same content the detail page shows, minus audit)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from callagent.console.call_queries import CallDetail

__all__ = ["CSV_COLUMNS", "to_csv", "to_json", "to_jsonable"]

CSV_COLUMNS = ("kind", "seq", "speaker", "start_ms", "end_ms", "interrupted",
               "response_latency_ms", "text", "heard_text", "tool", "arguments", "result",
               "status", "duration_ms")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_jsonable(detail: CallDetail, *, with_audit: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "call": {k: v for k, v in _plain(asdict(detail.call)).items() if k != "recording_path"},
        "turns": [_plain(asdict(t)) for t in detail.turns],
        "tool_calls": [_plain(asdict(t)) for t in detail.tool_calls],
    }
    if with_audit:
        out["audit"] = [_plain(asdict(a)) for a in detail.audit]
    return out


def to_json(detail: CallDetail) -> str:
    return json.dumps(to_jsonable(detail), indent=2, sort_keys=True, ensure_ascii=False)


def _cell(text: str) -> str:
    """Text a spreadsheet would run as a formula is prefixed with a quote."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(detail: CallDetail) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(CSV_COLUMNS)
    for t in detail.turns:
        out.writerow(["turn", t.seq, t.speaker, t.start_ms, t.end_ms, int(t.interrupted),
                      "" if t.response_latency_ms is None else t.response_latency_ms,
                      _cell(t.text), _cell(t.heard_text or ""), "", "", "", "", ""])
    for c in detail.tool_calls:
        out.writerow(["tool_call", "", "agent", "", "", "", "", "", "", _cell(c.name),
                      _cell(c.arguments), _cell(c.result), c.status, c.duration_ms])
    return buf.getvalue()
