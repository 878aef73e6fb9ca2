"""Campaign settings as an operator types them (CLI options, JSON fields) -> ``CampaignSpec``.

Pure. Every refusal is a ``CampaignSpecError`` whose message starts with the setting's name,
so a bad value never creates a campaign. Forms accepted:

* ``window``: ``HH:MM-HH:MM`` (local wall clock of the callee, ``[start, end)``);
* ``days``: ``mon-fri``, ``mon,wed,fri``, ``sat-sun``, ``all`` (ranges wrap: ``fri-mon``);
* durations (retry delays): ``90s``, ``30m``, ``4h``, ``1d``, ``1h30m``, or plain seconds;
* everything else: what ``CampaignSpec`` takes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import time, timedelta
from typing import Final

from callagent.campaigns.settings import (
    CallingWindow,
    CampaignSpec,
    CampaignSpecError,
    Purpose,
    RetryDelays,
    VoicemailPolicy,
    Weekday,
)

__all__ = ["parse_days", "parse_duration", "parse_window", "spec_from_fields"]

_DAY_NAMES: Final = {day.name[:3].lower(): day for day in Weekday}
_DURATION: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_CLOCK: Final = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_window(text: str) -> CallingWindow:
    start, sep, end = text.strip().partition("-")
    clocks = [_CLOCK.fullmatch(part.strip()) for part in (start, end)]
    if not sep or not all(clocks):
        raise CampaignSpecError(f"window: expected HH:MM-HH:MM, got {text!r}")
    (h1, m1), (h2, m2) = ((int(m.group(1)), int(m.group(2))) for m in clocks if m)
    try:
        return CallingWindow(time(h1, m1), time(h2, m2))
    except CampaignSpecError as exc:
        raise CampaignSpecError(f"window: {exc}") from None


def _day(name: str, text: str) -> Weekday:
    day = _DAY_NAMES.get(name.strip().lower()[:3])
    if day is None or not name.strip():
        raise CampaignSpecError(f"days: unknown day {name.strip()!r} in {text!r} (mon..sun)")
    return day


def parse_days(text: str) -> frozenset[Weekday]:
    if text.strip().lower() == "all":
        return frozenset(Weekday)
    days: set[Weekday] = set()
    for part in text.split(","):
        first, sep, last = part.partition("-")
        if not sep:
            days.add(_day(first, text))
            continue
        a, b = _day(first, text), _day(last, text)
        span = (b - a) % 7
        days.update(Weekday((a + i) % 7) for i in range(span + 1))
    if not days:
        raise CampaignSpecError(f"days: no day in {text!r}")
    return frozenset(days)


def parse_duration(name: str, text: str) -> timedelta:
    raw = text.strip().lower()
    if raw.isdigit():
        return timedelta(seconds=int(raw))
    m = _DURATION.fullmatch(raw)
    if not raw or m is None:
        raise CampaignSpecError(f"{name}: expected a duration like 90s, 30m, 4h, 1d, got {text!r}")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def _int(name: str, text: str | int) -> int:
    if isinstance(text, bool):
        raise CampaignSpecError(f"{name}: expected an integer, got {text!r}")
    if isinstance(text, int):
        return text
    try:
        return int(text.strip())
    except ValueError:
        raise CampaignSpecError(f"{name}: expected an integer, got {text!r}") from None


def _enum_value(name: str, text: str, choices: list[str]) -> str:
    value = text.strip().lower()
    if value not in choices:
        raise CampaignSpecError(f"{name}: expected one of {', '.join(choices)}, got {text!r}")
    return value


_KNOWN: Final = frozenset({
    "name", "agent_profile", "caller_id", "purpose", "window", "days", "max_concurrent_calls",
    "max_attempts", "max_attempts_per_day", "retry_no_answer", "retry_busy", "retry_failed",
    "retry_voicemail", "voicemail", "voicemail_message", "ring_timeout_s", "honor_national_dnc",
})
_REQUIRED: Final = ("name", "agent_profile", "caller_id", "purpose")


def spec_from_fields(fields: Mapping[str, str | int | bool]) -> CampaignSpec:
    """Build a spec from named settings (absent ones take ``CampaignSpec``'s defaults)."""
    unknown = sorted(set(fields) - _KNOWN)
    if unknown:
        raise CampaignSpecError(f"{unknown[0]}: unknown setting; expected one of {sorted(_KNOWN)}")
    missing = [name for name in _REQUIRED if not str(fields.get(name, "")).strip()]
    if missing:
        raise CampaignSpecError(f"{missing[0]}: required")

    def text(name: str) -> str:
        value = fields[name]
        if not isinstance(value, str):
            raise CampaignSpecError(f"{name}: expected text, got {value!r}")
        return value

    kwargs: dict[str, object] = {
        "name": text("name"), "agent_profile": text("agent_profile"),
        "caller_id": text("caller_id").strip(),
        "purpose": Purpose(_enum_value("purpose", text("purpose"), [p.value for p in Purpose])),
    }
    if "window" in fields:
        kwargs["window"] = parse_window(text("window"))
    if "days" in fields:
        kwargs["allowed_days"] = parse_days(text("days"))
    for name in ("max_concurrent_calls", "max_attempts", "max_attempts_per_day",
                 "ring_timeout_s"):
        if name in fields:
            kwargs[name] = _int(name, fields[name])
    delays = {outcome: parse_duration(f"retry_{outcome}", text(f"retry_{outcome}"))
              for outcome in ("no_answer", "busy", "failed", "voicemail")
              if f"retry_{outcome}" in fields}
    if delays:
        try:
            kwargs["retry_delays"] = RetryDelays(**delays)
        except CampaignSpecError as exc:
            raise CampaignSpecError(f"retry delays: {exc}") from None
    if "voicemail" in fields:
        kwargs["voicemail"] = VoicemailPolicy(_enum_value(
            "voicemail", text("voicemail"), [p.value for p in VoicemailPolicy]))
    if "voicemail_message" in fields:
        kwargs["voicemail_message"] = text("voicemail_message")
    if "honor_national_dnc" in fields:
        honor = fields["honor_national_dnc"]
        if not isinstance(honor, bool):
            raise CampaignSpecError(f"honor_national_dnc: expected true or false, got {honor!r}")
        kwargs["honor_national_dnc"] = honor
    return CampaignSpec(**kwargs)  # type: ignore[arg-type]
