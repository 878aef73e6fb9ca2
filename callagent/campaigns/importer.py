"""Contact import core: a CSV text stream in, ``ContactRow`` / ``RowError`` events out.

Pure and streaming: ``parse_contacts()`` reads the lines it is given (open files with
``newline=""``) and yields one event per data row, in file order, so a 100,000-row file is
never held in memory (only the set of numbers seen, for duplicates). No DB, clock or network.

File format:

* The first non-blank record is the header; it must name a phone column. Names are matched
  case-insensitively with spaces, ``-`` and ``.`` read as ``_``: phone ``phone|number|
  phone_number|phonenumber|telephone``; name ``name|full_name|contact_name``; time zone
  ``timezone|tz|time_zone``; consent type ``consent_type|consent``; consent time
  ``consent_at|consent_timestamp|consent_time|consented_at``. Every other named column is a
  free field (``ContactRow.fields``, original header text as key, cell text as value) the
  agent can use; columns with an empty header are ignored. A UTF-8 BOM is dropped. Files
  without a header are refused.
* Blank lines (and rows whose cells are all empty) are skipped. Quoted fields may hold
  commas, quotes and newlines; ``RowError.line`` is the physical line where the record
  starts.

Row rules (the first broken rule is reported, in this order):

1. field count equals the header's;
2. phone present, parseable (``default_region`` for national formats, default ``US``) and
   valid; stored as E.164;
3. time zone: a file value must be an IANA name known to ``zoneinfo``. Without one, the
   zones come from the number (``phonenumbers.timezone``). When the number maps to several
   zones (Alaska 907: Adak + Anchorage; Idaho 986: Boise + Los Angeles) all of them are
   kept and the calling window must hold in *every* one (the intersection, as the
   compliance reference asks when the zone is ambiguous; see ``eligibility.py``). A number
   with no geographic zone (toll-free, premium, shared-cost...) needs a file value;
4. consent type ``PEC`` or ``PEWC`` (case-insensitive; ``prior express consent`` / ``prior
   express written consent`` and ``express (written) consent`` spellings accepted, any
   spacing/punctuation); type and timestamp come together or not at all (a contact without
   consent is imported: the pre-dial gate skips it);
5. consent timestamp: ISO 8601 *with* a time of day (a bare date is refused: it cannot
   prove consent came before a same-day call). Decision: a naive timestamp is read in
   ``naive_tz``, UTC by default (what consent platforms export); ``naive_tz=None`` refuses
   naive timestamps. Stored as aware UTC;
6. the E.164 number was not already imported from an earlier line of this file.

Idempotence: ``ContactRow.dedupe_key`` depends only on the campaign key and the E.164
number; the store upserts on it, so importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import enum
import functools
import hashlib
import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from types import MappingProxyType
from typing import Final

import phonenumbers
from phonenumbers import timezone as phone_timezone

__all__ = [
    "ConsentType",
    "ContactRow",
    "ImportProgress",
    "RowError",
    "RowProblem",
    "TimezoneSource",
    "dedupe_key",
    "parse_consent_type",
    "parse_contacts",
]

_PHONE, _NAME, _TZ, _CONSENT_TYPE, _CONSENT_AT = "phone", "name", "tz", "consent_type", "consent_at"
_ALIASES: Final[dict[str, str]] = {
    **dict.fromkeys(("phone", "number", "phone_number", "phonenumber", "telephone"), _PHONE),
    **dict.fromkeys(("name", "full_name", "contact_name"), _NAME),
    **dict.fromkeys(("timezone", "tz", "time_zone"), _TZ),
    **dict.fromkeys(("consent_type", "consent"), _CONSENT_TYPE),
    **dict.fromkeys(
        ("consent_at", "consent_timestamp", "consent_time", "consented_at"), _CONSENT_AT
    ),
}
_HEADER_SEPARATORS = re.compile(r"[\s\-.]+")
_NOT_LETTERS = re.compile(r"[^a-z]+")
_UNKNOWN_ZONE = "Etc/Unknown"   # what phonenumbers returns for "no idea"
_NON_GEOGRAPHIC: Final = frozenset({
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.SHARED_COST,
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    phonenumbers.PhoneNumberType.UAN,
    phonenumbers.PhoneNumberType.PAGER,
    phonenumbers.PhoneNumberType.VOICEMAIL,
})


class ConsentType(enum.Enum):
    """47 CFR 64.1200(a)(1)-(3): PEC for informational AI-voice calls, PEWC for telemarketing."""

    PEC = "PEC"     # prior express consent
    PEWC = "PEWC"   # prior express written consent

    def satisfies(self, required: ConsentType) -> bool:
        """Written consent is also express consent; the converse is false."""
        return self is required or self is ConsentType.PEWC


_CONSENT_SPELLINGS: Final[dict[str, ConsentType]] = {
    "pec": ConsentType.PEC,
    "priorexpressconsent": ConsentType.PEC,
    "expressconsent": ConsentType.PEC,
    "pewc": ConsentType.PEWC,
    "priorexpresswrittenconsent": ConsentType.PEWC,
    "expresswrittenconsent": ConsentType.PEWC,
}


def parse_consent_type(text: str) -> ConsentType | None:
    """``PEC``/``PEWC`` or a spelled-out form, any case and punctuation; ``None`` if unknown."""
    return _CONSENT_SPELLINGS.get(_NOT_LETTERS.sub("", text.lower()))


class TimezoneSource(enum.Enum):
    FILE = "file"
    NUMBER = "number"


class RowProblem(enum.Enum):
    """Why a row (or the header) was refused; ``text`` is for people."""

    NO_HEADER = "no header row with a phone column"
    BAD_HEADER = "bad header"
    MALFORMED_CSV = "malformed CSV"
    WRONG_FIELD_COUNT = "wrong number of fields"
    MISSING_PHONE = "no phone number"
    UNPARSEABLE_PHONE = "phone number cannot be parsed"
    INVALID_NUMBER = "not a valid phone number"
    BAD_TIMEZONE = "unknown time zone"
    NO_TIMEZONE = "no time zone for this number: add a timezone column"
    BAD_CONSENT_TYPE = "unknown consent type (PEC or PEWC)"
    INCOMPLETE_CONSENT = "consent type and consent timestamp must be given together"
    BAD_CONSENT_TIMESTAMP = "bad consent timestamp (ISO 8601 date and time)"
    DUPLICATE = "duplicate phone number"

    @property
    def text(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class RowError:
    line: int              # physical line (1-based) where the record starts
    reason: RowProblem
    detail: str = ""

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"line {self.line}: {self.reason.text}{detail}"


def dedupe_key(campaign_key: str, e164: str) -> str:
    """Stable per (campaign, number): 32 hex chars of SHA-256. E.164 never holds NUL."""
    return hashlib.sha256(f"{campaign_key}\0{e164}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ContactRow:
    line: int
    campaign_key: str
    e164: str
    name: str
    timezones: tuple[str, ...]            # one or more IANA names; the window must hold in all
    timezone_source: TimezoneSource
    consent_type: ConsentType | None
    consent_at: datetime | None           # aware, UTC
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(self.campaign_key, self.e164)


@dataclass(frozen=True, slots=True)
class ImportProgress:
    line: int          # last physical line read
    records: int       # non-blank data records seen
    imported: int
    rejected: int
    done: bool


ProgressHook = Callable[[ImportProgress], None]


@dataclass(frozen=True, slots=True)
class _Header:
    width: int
    phone: int
    name: int | None
    tz: int | None
    consent_type: int | None
    consent_at: int | None
    free: tuple[tuple[str, int], ...]


class _RowRefused(Exception):
    def __init__(self, reason: RowProblem, detail: str = "") -> None:
        self.reason, self.detail = reason, detail


def parse_contacts(
    lines: Iterable[str],
    *,
    campaign_key: str,
    default_region: str = "US",
    naive_tz: tzinfo | None = UTC,
    on_progress: ProgressHook | None = None,
    progress_every: int = 1000,
) -> Iterator[ContactRow | RowError]:
    """Yield a ``ContactRow`` per good row and a ``RowError`` per bad one, in file order.

    A header problem yields one ``RowError`` and ends the stream. ``on_progress`` is called
    every ``progress_every`` records and once at the end (``done=True``).
    """
    if not campaign_key:
        raise ValueError("campaign_key is empty")
    if default_region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown default region {default_region!r}")
    if progress_every < 1:
        raise ValueError("progress_every must be >= 1")
    return _parse(lines, campaign_key, default_region, naive_tz, on_progress, progress_every)


def _parse(
    lines: Iterable[str],
    campaign_key: str,
    region: str,
    naive_tz: tzinfo | None,
    on_progress: ProgressHook | None,
    progress_every: int,
) -> Iterator[ContactRow | RowError]:
    reader = csv.reader(lines)
    header: _Header | None = None
    seen: dict[str, int] = {}
    records = imported = rejected = 0
    line_end = 0
    while True:
        start = line_end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            line_end = reader.line_num
            if header is None:
                yield RowError(start, RowProblem.NO_HEADER, f"malformed CSV: {exc}")
                return
            records, rejected = records + 1, rejected + 1
            yield RowError(start, RowProblem.MALFORMED_CSV, str(exc))
            continue
        line_end = reader.line_num
        if start == 1 and cells and cells[0].startswith("\ufeff"):
            cells[0] = cells[0][1:]
        cells = [cell.strip() for cell in cells]
        if not any(cells):
            continue
        if header is None:
            try:
                header = _read_header(cells)
            except _RowRefused as refused:
                yield RowError(start, refused.reason, refused.detail)
                return
            continue
        records += 1
        try:
            row = _read_row(cells, header, start, campaign_key, region, naive_tz)
            first = seen.setdefault(row.e164, start)
            if first != start:
                raise _RowRefused(RowProblem.DUPLICATE, f"{row.e164} already on line {first}")
        except _RowRefused as refused:
            rejected += 1
            yield RowError(start, refused.reason, refused.detail)
        else:
            imported += 1
            yield row
        if on_progress is not None and records % progress_every == 0:
            on_progress(ImportProgress(line_end, records, imported, rejected, done=False))
    if header is None:
        yield RowError(max(line_end, 1), RowProblem.NO_HEADER, "the file is empty")
    if on_progress is not None:
        on_progress(ImportProgress(line_end, records, imported, rejected, done=True))


def _read_header(cells: list[str]) -> _Header:
    columns: dict[str, int] = {}
    free: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if not cell:
            continue
        canonical = _ALIASES.get(_HEADER_SEPARATORS.sub("_", cell.lower()))
        target, key = (columns, canonical) if canonical else (free, cell)
        if key in target:
            raise _RowRefused(RowProblem.BAD_HEADER, f"column {cell!r} given twice")
        target[key] = index
    if _PHONE not in columns:
        raise _RowRefused(RowProblem.NO_HEADER, f"columns {cells!r}")
    return _Header(
        width=len(cells),
        phone=columns[_PHONE],
        name=columns.get(_NAME),
        tz=columns.get(_TZ),
        consent_type=columns.get(_CONSENT_TYPE),
        consent_at=columns.get(_CONSENT_AT),
        free=tuple(free.items()),
    )


def _read_row(
    cells: list[str],
    header: _Header,
    line: int,
    campaign_key: str,
    region: str,
    naive_tz: tzinfo | None,
) -> ContactRow:
    if len(cells) != header.width:
        raise _RowRefused(
            RowProblem.WRONG_FIELD_COUNT, f"expected {header.width}, got {len(cells)}"
        )
    number = _parse_number(cells[header.phone], region)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    tz_cell = _cell(cells, header.tz)
    zones: tuple[str, ...]
    if tz_cell:
        zones, source = (_file_zone(tz_cell),), TimezoneSource.FILE
    else:
        zones, source = _number_zones(number), TimezoneSource.NUMBER
    consent_type, consent_at = _consent(
        _cell(cells, header.consent_type), _cell(cells, header.consent_at), naive_tz
    )
    return ContactRow(
        line=line,
        campaign_key=campaign_key,
        e164=e164,
        name=_cell(cells, header.name),
        timezones=zones,
        timezone_source=source,
        consent_type=consent_type,
        consent_at=consent_at,
        fields=MappingProxyType({name: cells[index] for name, index in header.free}),
    )


def _cell(cells: list[str], index: int | None) -> str:
    return "" if index is None else cells[index]


def _parse_number(raw: str, region: str) -> phonenumbers.PhoneNumber:
    if not raw:
        raise _RowRefused(RowProblem.MISSING_PHONE)
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise _RowRefused(RowProblem.UNPARSEABLE_PHONE, f"{raw!r}: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise _RowRefused(RowProblem.INVALID_NUMBER, repr(raw))
    return number


@functools.lru_cache(maxsize=1024)   # ZoneInfo's own strong cache keeps only 8 zones
def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _file_zone(name: str) -> str:
    if not _known_zone(name):
        raise _RowRefused(RowProblem.BAD_TIMEZONE, repr(name))
    return name


def _number_zones(number: phonenumbers.PhoneNumber) -> tuple[str, ...]:
    zones = tuple(z for z in phone_timezone.time_zones_for_number(number) if z != _UNKNOWN_ZONE)
    if not zones:
        raise _RowRefused(RowProblem.NO_TIMEZONE, "no geographic zone known")
    if len(zones) > 1 and phonenumbers.number_type(number) in _NON_GEOGRAPHIC:
        raise _RowRefused(RowProblem.NO_TIMEZONE, "non-geographic number (toll-free, premium...)")
    for zone in zones:
        if not _known_zone(zone):
            raise _RowRefused(RowProblem.NO_TIMEZONE, f"{zone} is not in this system's tz database")
    return zones


def _consent(
    type_cell: str, at_cell: str, naive_tz: tzinfo | None
) -> tuple[ConsentType | None, datetime | None]:
    if not type_cell and not at_cell:
        return None, None
    consent_type = parse_consent_type(type_cell) if type_cell else None
    if type_cell and consent_type is None:
        raise _RowRefused(RowProblem.BAD_CONSENT_TYPE, repr(type_cell))
    if consent_type is None or not at_cell:
        raise _RowRefused(RowProblem.INCOMPLETE_CONSENT)
    return consent_type, _timestamp(at_cell, naive_tz)


def _timestamp(text: str, naive_tz: tzinfo | None) -> datetime:
    bad = RowProblem.BAD_CONSENT_TIMESTAMP
    try:
        date.fromisoformat(text)
    except ValueError:
        pass
    else:
        raise _RowRefused(bad, f"{text!r} has no time of day")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _RowRefused(bad, repr(text)) from None
    if moment.tzinfo is None:
        if naive_tz is None:
            raise _RowRefused(bad, f"{text!r} has no UTC offset")
        moment = moment.replace(tzinfo=naive_tz)
    return moment.astimezone(UTC)
