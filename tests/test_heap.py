"""`callagent serve` freezes the heap after start-up: a full collection then walks
only what calls create, not the modules and models that live as long as the
process (at 200 calls such a collection held the event loop 100 ms; issue #2).

Each check runs in a process of its own: a freeze is process-wide, and the test
process must keep collecting its own garbage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import gc, sys
from pathlib import Path
from starlette.testclient import TestClient
from callagent.app import create_app
from callagent.store.db import upgrade
from tests.e2e.conftest import make_settings

work = Path(sys.argv[1])
url = f"sqlite+aiosqlite:///{work / 'db.sqlite'}"
upgrade(url)
before = gc.get_freeze_count()
with TestClient(create_app(make_settings(url, work), freeze_heap=sys.argv[2] == "1")):
    during = gc.get_freeze_count()
print(before, during)
"""


@pytest.mark.parametrize(("freeze", "frozen"), [(True, True), (False, False)])
def test_the_app_freezes_the_heap_after_start_up_only_when_asked(
    tmp_path: Path, freeze: bool, frozen: bool
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), "1" if freeze else "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    before, during = map(int, proc.stdout.split()[-2:])
    assert before == 0
    # Start-up leaves tens of thousands of objects (modules, settings, SQLAlchemy's metadata).
    assert (during > 10_000) if frozen else (during == 0)

