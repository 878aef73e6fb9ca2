"""The call list's filters and cursor, parsed from query parameters with precise errors.

Pure: no I/O. ``CallFilter.from_params`` refuses any bad value (``BadFilter`` names the
parameter); ``Cursor`` is the keyset position (started_at, id) of the last call shown.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from callagent.console.search_index import tokenize

__all__ = ["DIRECTIONS", "BadFilter", "CallFilter", "Cursor"]

DIRECTIONS = frozenset({"inbound", "outbound"})
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_OUTCOME = re.compile(r"[a-z-]{1,32}")
_NUMBER = re.compile(r"\+?[0-9]{3,15}|sip:[^\s]{1,250}")
KNOWN = frozenset({"from", "to", "direction", "campaign", "agent", "engine", "outcome",
                   "number", "q", "cursor", "limit"})
MAX_QUERY_WORDS = 8


class BadFilter(ValueError):
    """A filter parameter with a bad value; the message names it."""


@dataclass(frozen=True, slots=True)
class Cursor:
    started_at: datetime
    call_id: str

    def encode(self) -> str:
        raw = f"{self.started_at.isoformat()}|{self.call_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            at_text, call_id = raw.split("|", 1)
            at = datetime.fromisoformat(at_text)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise BadFilter(f"cursor: not a cursor from this list: {text[:80]!r}") from None
        if at.tzinfo is None or not call_id or len(call_id) > 36:
            raise BadFilter(f"cursor: not a cursor from this list: {text[:80]!r}")
        return cls(at.astimezone(UTC), call_id)


def _date(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadFilter(f"{name}: expected a date YYYY-MM-DD, got {value!r}") from None


def _name(key: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise BadFilter(f"{key}: expected a name (letters, digits, ._:-), got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class CallFilter:
    since: datetime | None = None        # inclusive, UTC
    until: datetime | None = None        # exclusive, UTC
    direction: str | None = None
    campaign_id: int | None = None
    agent: str | None = None
    engine: str | None = None
    outcome: str | None = None           # the call's final status (completed, busy, ...)
    number: str | None = None            # from or to
    words: tuple[str, ...] = ()          # full-text: every word in one turn
    query: str = ""
    cursor: Cursor | None = None
    limit: int = 50

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, page_size: int) -> CallFilter:
        unknown = sorted(set(params) - KNOWN)
        if unknown:
            raise BadFilter(f"{unknown[0]}: unknown filter; expected one of {sorted(KNOWN)}")
        f = cls(limit=page_size)
        get = {k: v.strip() for k, v in params.items() if v.strip()}
        if "from" in get:
            f = replace(f, since=datetime.combine(_date("from", get["from"]), time(), UTC))
        if "to" in get:
            day = _date("to", get["to"])
            f = replace(f, until=datetime.combine(day + timedelta(days=1), time(), UTC))
        if f.since and f.until and f.since >= f.until:
            raise BadFilter("to: must not be before from")
        if "direction" in get:
            if get["direction"] not in DIRECTIONS:
                raise BadFilter(f"direction: expected inbound or outbound, got {get['direction']!r}")
            f = replace(f, direction=get["direction"])
        if "campaign" in get:
            if not get["campaign"].isdigit() or len(get["campaign"]) > 9:
                raise BadFilter(f"campaign: expected a campaign id (digits), got {get['campaign']!r}")
            f = replace(f, campaign_id=int(get["campaign"]))
        if "agent" in get:
            f = replace(f, agent=_name("agent", get["agent"]))
        if "engine" in get:
            f = replace(f, engine=_name("engine", get["engine"]))
        if "outcome" in get:
            if not _OUTCOME.fullmatch(get["outcome"]):
                raise BadFilter(f"outcome: expected a call status such as completed, got "
                                f"{get['outcome']!r}")
            f = replace(f, outcome=get["outcome"])
        if "number" in get:
            number = re.sub(r"[\s().-]", "", get["number"]) if not get["number"].startswith(
                "sip:") else get["number"]
            if not _NUMBER.fullmatch(number):
                raise BadFilter(f"number: expected a phone number (E.164) or SIP URI, got "
                                f"{get['number']!r}")
            f = replace(f, number=number)
        if "q" in get:
            words = tuple(dict.fromkeys(tokenize(get["q"])))
            if not words:
                raise BadFilter(f"q: no words to search for in {get['q'][:80]!r}")
            if len(words) > MAX_QUERY_WORDS:
                raise BadFilter(f"q: at most {MAX_QUERY_WORDS} words, got {len(words)}")
            f = replace(f, words=words, query=get["q"])
        if "limit" in get:
            if not get["limit"].isdigit() or not 1 <= int(get["limit"]) <= 500:
                raise BadFilter(f"limit: expected 1-500, got {get['limit']!r}")
            f = replace(f, limit=int(get["limit"]))
        if "cursor" in get:
            f = replace(f, cursor=Cursor.decode(get["cursor"]))
        return f

    def params(self, *, cursor: Cursor | None = None) -> dict[str, str]:
        """Query parameters that reproduce this filter (for next-page links)."""
        out: dict[str, str] = {}
        if self.since:
            out["from"] = self.since.date().isoformat()
        if self.until:
            out["to"] = (self.until - timedelta(days=1)).date().isoformat()
        for key, value in (("direction", self.direction), ("agent", self.agent),
                           ("engine", self.engine), ("outcome", self.outcome),
                           ("number", self.number)):
            if value:
                out[key] = value
        if self.campaign_id is not None:
            out["campaign"] = str(self.campaign_id)
        if self.query:
            out["q"] = self.query
        if cursor is not None:
            out["cursor"] = cursor.encode()
        return out
