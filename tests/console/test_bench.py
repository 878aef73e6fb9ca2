"""`scripts/bench console` runs end to end at a tiny size (figures are not checked here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callagent.bench.console import main


def test_the_console_benchmark_runs_on_both_databases(
    tmp_path: Path, pg_admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--calls", "30", "--turns", "200", "--requests", "2", "--target-ms", "1e9",
                 "--sqlite-dir", str(tmp_path), "--pg-url", pg_admin_url,
                 "--pg-database", f"callagent_bench_test_{tmp_path.name[-12:]}".lower()])
    out = capsys.readouterr().out
    assert code == 0, out
    for kind in ("[sqlite]", "[postgresql]", "search, rare phrase", "call detail"):
        assert kind in out


@pytest.mark.parametrize("args, message", [
    (["--calls", "0"], "need --calls >= 1"),
    (["--calls", "10", "--turns", "5"], "--turns >= --calls"),
    (["--requests", "0"], "--requests must be >= 1"),
])
def test_bad_sizes_are_refused(args: list[str], message: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err
