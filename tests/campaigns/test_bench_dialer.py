"""`scripts/bench dialer` runs (tiny): its figures add up; nothing about speed is asserted."""

from __future__ import annotations

import re

import pytest

from callagent.bench.__main__ import available
from callagent.bench.dialer import main


@pytest.mark.postgres
def test_the_dialer_benchmark_runs_and_accounts_for_every_call(
    pg_admin_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert "dialer" in available()
    assert main(["--contacts", "60", "--calls", "15", "--dialers", "1,2",
                 "--pg-url", pg_admin_url]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^import: 60 contacts in [0-9.]+ s = [0-9,]+ contacts/s", out, re.M), out
    assert re.search(r"^eligibility: 60 checks in [0-9.]+ s = [0-9,]+ checks/s \(one core; "
                     r"59 eligible, 1 on the DNC list\)", out, re.M), out
    runs = re.findall(r"^dialers=(\d): 15 calls placed, [0-9.,]+ calls/s .* per dialer "
                      r"\[([0-9, ]+)\]; .* double dials 0, unfinished 0$", out, re.M)
    assert [n for n, _ in runs] == ["1", "2"], out
    for _, shares in runs:
        assert sum(int(x) for x in shares.split(", ")) == 15


def test_the_dialer_benchmark_refuses_impossible_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--contacts", "10", "--calls", "20"])
    assert "need --contacts >= --calls >= 1" in capsys.readouterr().err
