"""The service under test: ``callagent serve`` (``bench._server``) on one engine.

The agent profiles are copied into the work directory (the server's working
directory, where it looks for ``config/agents``); for an engine other than the
profile's own, the copy names that engine (and duplex backend). SQLite in the
work directory holds the agent's records, read back per call.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from callagent.bench import _server as bench_server
from callagent.bench._server import TOKEN, Server
from callagent.bench.phone.analyze import DbTurn
from callagent.store.db import PROJECT_ROOT, sync_url
from callagent.store.models import Turn

__all__ = ["TOKEN", "Server", "agent_turns", "profile_for", "serve"]


def profile_for(text: str, engine: str, backend: str) -> str:
    """A profile's TOML routed to ``engine`` (and duplex ``backend``).

    A profile that routes itself (``[[routing]]``) is left as it is. Otherwise
    its engine line is replaced and, for an engine other than the pipeline,
    one arm takes every call while a pipeline arm at 0 % keeps the flow's
    speech models loaded (as config/agents/customer_service_duplex.toml does).
    """
    if re.search(r"(?m)^\[\[routing\]\]", text):
        return text
    out, n = re.subn(r'(?m)^engine\s*=\s*"[^"]*"', f'engine = "{engine}"', text, count=1)
    if n != 1:
        raise ValueError("the profile has no top-level engine line")
    if engine != "pipeline":
        arm = f'\n[[routing]]\narm = "bench"\nengine = "{engine}"\n'
        arm += f'backend = "{backend}"\n' if backend else ""
        out += arm + 'percent = 100\n\n[[routing]]\narm = "pipeline"\nengine = "pipeline"\npercent = 0\n'
    return out


@contextlib.contextmanager
def serve(workdir: Path, agent: str, engine: str, backend: str) -> Iterator[Server]:
    agents = workdir / "config" / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    for src in (PROJECT_ROOT / "config" / "agents").glob("*.toml"):
        text = src.read_text()
        if src.stem == agent:
            text = profile_for(text, engine, backend)
        (agents / src.name).write_text(text)
    env = {"CALLAGENT_CONFIG": str(PROJECT_ROOT / "config" / "callagent.toml"),
           "CALLAGENT_AGENT_DEFAULT_PROFILE": agent, "CALLAGENT_AGENT_ENGINE": engine}  # fmt: skip
    with bench_server.serve(workdir, env, db_url=f"sqlite+aiosqlite:///{workdir / 'phone.db'}",
                            cwd=workdir) as server:  # fmt: skip
        yield server


def agent_turns(db_url: str, call_id: str, wait_s: float = 6.0) -> list[DbTurn]:
    """The agent's turn records of one call (waits for the recorder to write them)."""
    engine = sa.create_engine(sync_url(db_url))
    try:
        deadline = time.monotonic() + wait_s
        time.sleep(1.5)  # the last turns are written when the call closes
        while True:
            with engine.connect() as conn:
                found = conn.execute(
                    sa.select(Turn.start_ms, Turn.text)
                    .where(Turn.call_id == call_id, Turn.speaker == "agent")
                    .order_by(Turn.seq)
                ).all()
            rows = [DbTurn(r.start_ms / 1000.0, r.text) for r in found]
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.5)
    finally:
        engine.dispose()
