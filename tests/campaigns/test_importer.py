"""Contact import core: header tolerance, E.164, time zones, consent, every kind of bad row."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from callagent.campaigns import importer as importer_module
from callagent.campaigns.importer import (
    ConsentType,
    ContactRow,
    ImportProgress,
    RowError,
    RowProblem,
    TimezoneSource,
    dedupe_key,
    parse_consent_type,
    parse_contacts,
)

HEADER = "phone,name,timezone,consent_type,consent_at,plan\n"


def run(text: str, **kwargs: object) -> list[ContactRow | RowError]:
    options: dict[str, object] = {"campaign_key": "camp-1", **kwargs}
    return list(parse_contacts(io.StringIO(text, newline=""), **options))  # type: ignore[arg-type]


def one(text: str, **kwargs: object) -> ContactRow | RowError:
    [event] = run(text, **kwargs)
    return event


def good(text: str, **kwargs: object) -> ContactRow:
    event = one(text, **kwargs)
    assert isinstance(event, ContactRow), event
    return event


def bad(text: str, **kwargs: object) -> RowError:
    event = one(text, **kwargs)
    assert isinstance(event, RowError), event
    return event


def test_exported_names_are_pinned() -> None:
    assert sorted(importer_module.__all__) == sorted([
        "ConsentType", "ContactRow", "ImportProgress", "RowError", "RowProblem",
        "TimezoneSource", "dedupe_key", "parse_contacts", "parse_consent_type",
    ])


class TestGoodRow:
    def test_full_row(self) -> None:
        row = good(HEADER + "(305) 555-1234,Ana Diaz,,PEWC,2025-01-02T03:04:05Z,gold\n")
        assert row.line == 2 and row.e164 == "+13055551234" and row.name == "Ana Diaz"
        assert row.timezones == ("America/New_York",)
        assert row.timezone_source is TimezoneSource.NUMBER
        assert row.consent_type is ConsentType.PEWC
        assert row.consent_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert dict(row.fields) == {"plan": "gold"}
        assert row.dedupe_key == dedupe_key("camp-1", "+13055551234")

    def test_free_fields_are_read_only(self) -> None:
        row = good(HEADER + "+13055551234,A,,,,gold\n")
        with pytest.raises(TypeError):
            row.fields["plan"] = "x"  # type: ignore[index]

    def test_contact_without_consent_is_imported(self) -> None:
        row = good(HEADER + "+13055551234,A,,,,\n")
        assert row.consent_type is None and row.consent_at is None

    def test_default_region_is_configurable(self) -> None:
        assert good("phone\n020 7946 0958\n", default_region="GB").e164 == "+442079460958"
        assert bad("phone\n020 7946 0958\n").reason is RowProblem.INVALID_NUMBER

    def test_bad_arguments_are_our_misuse(self) -> None:
        with pytest.raises(ValueError, match="region"):
            parse_contacts([], campaign_key="c", default_region="XX")
        with pytest.raises(ValueError, match="campaign_key"):
            parse_contacts([], campaign_key="")
        with pytest.raises(ValueError, match="progress_every"):
            parse_contacts([], campaign_key="c", progress_every=0)


class TestHeader:
    @pytest.mark.parametrize("phone", ["phone", "Phone", "NUMBER", "phone_number", "Phone Number",
                                       "phone-number", " telephone "])
    def test_phone_column_aliases(self, phone: str) -> None:
        assert good(f"{phone},Name\n+12125551234,Bo\n").name == "Bo"

    @pytest.mark.parametrize(("tz", "at"), [
        ("tz", "consent_timestamp"), ("Time Zone", "Consent At"), ("TIMEZONE", "consent.time"),
    ])
    def test_other_column_aliases(self, tz: str, at: str) -> None:
        row = good(f"number,{tz},Consent,{at}\n2125551234,America/Chicago,pec,2025-01-01T00:00Z\n")
        assert row.timezones == ("America/Chicago",) and row.consent_type is ConsentType.PEC
        assert row.fields == {}

    def test_bom_is_dropped(self) -> None:
        assert good("\ufeffphone,name\n+12125551234,Bo\n").e164 == "+12125551234"

    def test_no_phone_column_ends_the_stream(self) -> None:
        events = run("name,city\nBo,NYC\n")
        assert events == [RowError(1, RowProblem.NO_HEADER, "columns ['name', 'city']")]

    def test_column_given_twice(self) -> None:
        assert bad("phone,number\n1,2\n").reason is RowProblem.BAD_HEADER
        assert bad("phone,plan,plan\n1,2,3\n").reason is RowProblem.BAD_HEADER

    @pytest.mark.parametrize("text", ["", "\n\n", " , \n"])
    def test_empty_file_has_no_header(self, text: str) -> None:
        assert bad(text).reason is RowProblem.NO_HEADER

    def test_columns_with_empty_header_are_ignored(self) -> None:
        assert good("phone,,plan\n+12125551234,junk,gold\n").fields == {"plan": "gold"}

    def test_header_may_follow_blank_lines(self) -> None:
        assert good("\n\nphone\n+12125551234\n").line == 4


class TestLinesAndQuoting:
    def test_blank_lines_are_skipped_and_lines_are_physical(self) -> None:
        events = run("phone\n\n+12125551234\n   \n,\nnope\n")
        assert [type(e) for e in events] == [ContactRow, RowError]
        assert [e.line for e in events] == [3, 6]

    def test_quoted_fields_with_commas_quotes_and_newlines(self) -> None:
        text = 'phone,name,note\n"+1 212 555 1234","Diaz, Ana","said ""hi""\nthen left"\nbad,x,y\n'
        row, error = run(text)
        assert isinstance(row, ContactRow) and row.name == "Diaz, Ana"
        assert row.fields == {"note": 'said "hi"\nthen left'}
        assert isinstance(error, RowError) and error.line == 4

    def test_crlf_line_endings(self) -> None:
        row, error = run("phone,name\r\n+12125551234,Bo\r\n\r\nx,y\r\n")
        assert isinstance(row, ContactRow) and row.name == "Bo"
        assert isinstance(error, RowError) and error.line == 4

    def test_malformed_csv_record_is_reported_and_reading_goes_on(self) -> None:
        huge = "x" * 200_000
        events = run(f"phone,note\n+12125551234,{huge}\n+12125551235,ok\n")
        assert isinstance(events[0], RowError) and events[0].reason is RowProblem.MALFORMED_CSV
        assert events[0].line == 2
        assert isinstance(events[1], ContactRow) and events[1].line == 3


class TestTimezones:
    def test_zone_from_file_wins_over_the_number(self) -> None:
        row = good(HEADER + "+13055551234,A,America/Chicago,,,\n")
        assert row.timezones == ("America/Chicago",)
        assert row.timezone_source is TimezoneSource.FILE

    @pytest.mark.parametrize(
        "zone", ["Mars/Olympus", "EST+5", "../../etc/passwd", "america/new york"]
    )
    def test_unknown_zone_name(self, zone: str) -> None:
        error = bad(HEADER + f"+13055551234,A,{zone},,,\n")
        assert error.reason is RowProblem.BAD_TIMEZONE and zone in error.detail

    def test_number_spanning_several_zones_keeps_them_all(self) -> None:
        assert good("phone\n+1 907 234 5678\n").timezones == ("America/Adak", "America/Anchorage")
        idaho = good("phone\n+1 986 234 5678\n")
        assert idaho.timezones == ("America/Boise", "America/Los_Angeles")

    def test_toll_free_number_needs_a_zone_from_the_file(self) -> None:
        assert bad("phone\n+1 800 555 1234\n").reason is RowProblem.NO_TIMEZONE
        row = good("phone,tz\n+1 800 555 1234,America/Denver\n")
        assert row.timezones == ("America/Denver",)


class TestConsent:
    @pytest.mark.parametrize(("text", "expected"), [
        ("PEC", ConsentType.PEC),
        ("pec", ConsentType.PEC),
        ("Prior Express Consent", ConsentType.PEC),
        ("prior_express_consent", ConsentType.PEC),
        ("PEWC", ConsentType.PEWC),
        ("p.e.w.c.", ConsentType.PEWC),
        ("prior-express-written-consent", ConsentType.PEWC),
        ("Express Written Consent", ConsentType.PEWC),
        ("verbal", None),
        ("written", None),
    ])
    def test_consent_type_spellings(self, text: str, expected: ConsentType | None) -> None:
        assert parse_consent_type(text) is expected

    def test_written_consent_satisfies_express_consent_only_one_way(self) -> None:
        assert ConsentType.PEWC.satisfies(ConsentType.PEC)
        assert not ConsentType.PEC.satisfies(ConsentType.PEWC)

    @pytest.mark.parametrize(("text", "expected"), [
        ("2025-01-02T03:04:05Z", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2025-01-02T03:04:05+02:00", datetime(2025, 1, 2, 1, 4, 5, tzinfo=UTC)),
        ("2025-01-02 03:04", datetime(2025, 1, 2, 3, 4, tzinfo=UTC)),       # naive = UTC
        ("20250102T030405Z", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ])
    def test_consent_timestamps(self, text: str, expected: datetime) -> None:
        row = good(f"phone,consent_type,consent_at\n+12125551234,PEC,{text}\n")
        assert row.consent_at == expected and row.consent_at.tzinfo is UTC

    def test_naive_timestamps_can_be_read_in_another_zone_or_refused(self) -> None:
        text = "phone,consent_type,consent_at\n+12125551234,PEC,2025-07-01T09:00\n"
        row = good(text, naive_tz=ZoneInfo("America/New_York"))
        assert row.consent_at == datetime(2025, 7, 1, 13, 0, tzinfo=UTC)
        assert bad(text, naive_tz=None).reason is RowProblem.BAD_CONSENT_TIMESTAMP

    @pytest.mark.parametrize(
        "text", ["2025-01-02", "yesterday", "2025-13-01T00:00Z", "01/02/2025 10:00"]
    )
    def test_bad_consent_timestamps(self, text: str) -> None:
        error = bad(f"phone,consent_type,consent_at\n+12125551234,PEC,{text}\n")
        assert error.reason is RowProblem.BAD_CONSENT_TIMESTAMP

    @pytest.mark.parametrize(("kind", "at"), [("PEC", ""), ("", "2025-01-02T03:04Z")])
    def test_type_and_timestamp_come_together(self, kind: str, at: str) -> None:
        error = bad(f"phone,consent_type,consent_at\n+12125551234,{kind},{at}\n")
        assert error.reason is RowProblem.INCOMPLETE_CONSENT


BAD_FILE = (
    "phone,name,tz,consent_type,consent_at\n"          # 1
    "+12125551234,good one,,PEWC,2025-01-01T00:00Z\n"   # 2 good
    ",no phone,,,\n"                                    # 3
    "call me maybe,unparseable,,,\n"                    # 4
    "+1 555 555 0123,invalid,,,\n"                      # 5
    "+12125551235,bad zone,Mars/Olympus,,\n"            # 6
    "+12125551236,bad consent,,verbal,2025-01-01T00:00Z\n"  # 7
    "+12125551237,bad time,,PEC,last tuesday\n"         # 8
    "(212) 555-1234,duplicate,,,\n"                     # 9
    "+12125551238,too few\n"                            # 10
    "+12125551239,too many,,,,extra\n"                  # 11
    "\n"                                                # 12 blank
    "+12125551240,good two,,,\n"                        # 13 good
)


class TestBadRows:
    def test_every_bad_row_is_reported_with_its_line_and_good_rows_are_kept(self) -> None:
        events = run(BAD_FILE)
        errors = [(e.line, e.reason) for e in events if isinstance(e, RowError)]
        assert errors == [
            (3, RowProblem.MISSING_PHONE),
            (4, RowProblem.UNPARSEABLE_PHONE),
            (5, RowProblem.INVALID_NUMBER),
            (6, RowProblem.BAD_TIMEZONE),
            (7, RowProblem.BAD_CONSENT_TYPE),
            (8, RowProblem.BAD_CONSENT_TIMESTAMP),
            (9, RowProblem.DUPLICATE),
            (10, RowProblem.WRONG_FIELD_COUNT),
            (11, RowProblem.WRONG_FIELD_COUNT),
        ]
        rows = [e for e in events if isinstance(e, ContactRow)]
        assert [(r.line, r.name) for r in rows] == [(2, "good one"), (13, "good two")]

    def test_error_text_names_line_reason_and_detail(self) -> None:
        events = run(BAD_FILE)
        texts = [str(e) for e in events if isinstance(e, RowError)]
        assert texts[6] == "line 9: duplicate phone number: +12125551234 already on line 2"
        assert texts[7] == "line 10: wrong number of fields: expected 5, got 2"

    def test_a_bad_first_occurrence_does_not_make_the_next_a_duplicate(self) -> None:
        events = run("phone,tz\n+12125551234,Nowhere/Land\n+12125551234,\n")
        assert isinstance(events[0], RowError) and isinstance(events[1], ContactRow)


class TestIdempotenceAndStreaming:
    def test_same_file_twice_gives_the_same_rows_and_keys(self) -> None:
        first, second = run(BAD_FILE), run(BAD_FILE)
        assert first == second
        keys = [e.dedupe_key for e in first if isinstance(e, ContactRow)]
        assert len(set(keys)) == 2 and all(len(k) == 32 for k in keys)

    def test_key_depends_on_campaign_and_number_only(self) -> None:
        a = good("phone,name\n(212) 555-1234,A\n")
        b = good("name,number,plan\nB,+1 212-555-1234,x\n")
        c = good("phone\n+12125551234\n", campaign_key="camp-2")
        assert a.dedupe_key == b.dedupe_key != c.dedupe_key

    def test_rows_are_yielded_before_the_source_is_read_to_the_end(self) -> None:
        pulled = 0

        def source() -> Iterator[str]:
            nonlocal pulled
            yield "phone\n"
            for i in range(1_000_000):
                pulled += 1
                yield f"+1212555{i % 10_000:04d}\n"

        events = parse_contacts(source(), campaign_key="c")
        first = next(events)
        assert isinstance(first, ContactRow) and pulled == 1

    def test_progress_hook(self) -> None:
        seen: list[ImportProgress] = []
        text = "phone\n" + "".join(f"+1212555{i:04d}\n" for i in range(5)) + "bad\n"
        run(text, on_progress=seen.append, progress_every=2)
        assert seen == [
            ImportProgress(line=3, records=2, imported=2, rejected=0, done=False),
            ImportProgress(line=5, records=4, imported=4, rejected=0, done=False),
            ImportProgress(line=7, records=6, imported=5, rejected=1, done=False),
            ImportProgress(line=7, records=6, imported=5, rejected=1, done=True),
        ]
