"""The console's pure parts: roles, passwords, filters and cursors, timeline, export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from callagent.console.call_filters import BadFilter, CallFilter, Cursor
from callagent.console.call_queries import CallDetail, CallRow, ToolCallRow, TurnRow, percentile
from callagent.console.export import to_csv
from callagent.console.passwords import (
    WeakPassword,
    hash_password,
    hash_token,
    new_token,
    verify_password,
)
from callagent.console.roles import Permission, Role, UnknownRole, allowed, parse_role
from callagent.console.search_index import terms_of, tokenize
from callagent.console.timeline import build_timeline


def test_each_role_has_exactly_its_permissions() -> None:
    assert {p for p in Permission if allowed(Role.VIEWER, p)} == {Permission.READ_CALLS}
    assert {p for p in Permission if allowed(Role.SUPERVISOR, p)} == set(Permission) - {
        Permission.MANAGE_OPERATORS}
    assert {p for p in Permission if allowed(Role.ADMIN, p)} == set(Permission)
    with pytest.raises(UnknownRole, match="expected one of viewer, supervisor, admin"):
        parse_role("root")


def test_passwords_are_argon2id_and_checked() -> None:
    stored = hash_password("a long enough pass")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "a long enough pass")
    assert not verify_password(stored, "a long enough pasS")
    assert not verify_password(None, "a long enough pass")
    assert not verify_password("not a hash", "a long enough pass")
    with pytest.raises(WeakPassword, match="at least 12"):
        hash_password("short")


def test_tokens_are_random_and_stored_hashed() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("cat_") and len(a) > 40
    assert hash_token(a) != a and len(hash_token(a)) == 64


def test_words_are_lower_case_letters_and_digits() -> None:
    assert tokenize("Where's my ORDER #A1001, please?") == ["where", "s", "my", "order", "a1001",
                                                           "please"]
    assert terms_of("no no no") == {"no"}


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    c = Cursor(datetime(2026, 11, 27, 3, 4, 5, 123456, tzinfo=UTC), "abc")
    assert Cursor.decode(c.encode()) == c
    for bad in ("%%%", "bm9waXBl", Cursor(datetime(2026, 1, 1), "x").encode()):
        with pytest.raises(BadFilter, match="cursor"):
            Cursor.decode(bad)


def test_filters_round_trip_through_their_params() -> None:
    params = {"from": "2026-11-01", "to": "2026-11-27", "direction": "outbound",
              "campaign": "7", "agent": "sales", "engine": "pipeline", "outcome": "no-answer",
              "number": "+1 (415) 555-0100", "q": "Parcel arrived"}
    f = CallFilter.from_params(params, page_size=50)
    assert f.number == "+14155550100" and f.words == ("parcel", "arrived")
    again = CallFilter.from_params(f.params(), page_size=50)
    assert again == f


def turns() -> list[TurnRow]:
    return [
        TurnRow(1, "caller", "my parcel never arrived", 500, 2600, False, None, None, None),
        TurnRow(2, "agent", "I am sorry to hear that your order shipped Monday", 3300, 4700,
                True, "I am sorry to hear", 1400, 700),
        TurnRow(3, "caller", "send the tracking link", 4400, 6000, False, None, None, None),
    ]


def test_timeline_marks_the_interruption_overlap_and_latency() -> None:
    t = build_timeline(turns())
    assert t.interruptions == 1
    unheard = [b for b in t.bars if not b.heard]
    assert len(unheard) == 1 and unheard[0].seq == 2
    assert [(o.start_ms, o.end_ms) for o in t.overlaps] == [(4400, 4700)]
    [lat] = t.latencies
    assert lat.seq == 2 and lat.ms == 700
    caller_end = next(b for b in t.bars if b.seq == 1)
    assert lat.x1 == pytest.approx(caller_end.x + caller_end.width, abs=0.02)
    assert all(0 <= b.x <= t.width for b in t.bars)


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([float(v) for v in range(1, 101)], 0.95) == pytest.approx(95.05)


def test_csv_export_defuses_formulas() -> None:
    now = datetime.now(UTC)
    detail = CallDetail(
        CallRow("c1", now, "inbound", "+1", "+2", "a", "e", None, "completed", None, 3, now,
                None, None, None),
        [TurnRow(1, "caller", "=HYPERLINK(\"x\")", 0, 1, False, None, None, None)],
        [ToolCallRow("t1", "lookup", '{"q": 1}', "@SUM(A1)", "ok", now, 1.0, "")], [])
    rows = list(csv.reader(io.StringIO(to_csv(detail))))
    assert rows[1][7] == "'=HYPERLINK(\"x\")" and rows[2][11] == "'@SUM(A1)"


def test_every_console_module_exports_what_it_lists() -> None:
    import importlib
    import pkgutil

    import callagent.console

    for info in pkgutil.iter_modules(callagent.console.__path__):
        module = importlib.import_module(f"callagent.console.{info.name}")
        names = getattr(module, "__all__", None)
        assert names is not None, f"{info.name} has no __all__"
        missing = [n for n in names if not hasattr(module, n)]
        assert not missing, f"{info.name}.__all__ lists missing names {missing}"
        assert len(names) == len(set(names)), f"{info.name}.__all__ repeats a name"
