"""The service under test: ``callagent serve`` in a process of its own, one engine.

The agent profiles are copied into the work directory (the server's working
directory, where it looks for ``config/agents``); for an engine other than the
profile's own, the copy names that engine (and duplex backend). SQLite in the
work directory holds the agent's records, read back per call.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from callagent.bench.media import free_port
from callagent.bench.phone.analyze import DbTurn
from callagent.store.db import PROJECT_ROOT, sync_url
from callagent.store.models import Turn

__all__ = ["Service", "agent_turns", "profile_for", "serve"]

TOKEN = "bench-token"


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    db_url: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


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
def serve(workdir: Path, agent: str, engine: str, backend: str) -> Iterator[Service]:
    agents = workdir / "config" / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    for src in (PROJECT_ROOT / "config" / "agents").glob("*.toml"):
        text = src.read_text()
        if src.stem == agent:
            text = profile_for(text, engine, backend)
        (agents / src.name).write_text(text)
    port = free_port()
    url = f"sqlite+aiosqlite:///{workdir / 'phone.db'}"
    env = {**os.environ, "CALLAGENT_TWILIO_AUTH_TOKEN": TOKEN, "CALLAGENT_DATABASE_URL": url,
           "CALLAGENT_CONFIG": str(PROJECT_ROOT / "config" / "callagent.toml"),
           "CALLAGENT_RECORDER_JOURNAL_DIR": str(workdir / "journal"),
           "CALLAGENT_SERVER_PUBLIC_ORIGIN": f"http://127.0.0.1:{port}",
           "CALLAGENT_AGENT_DEFAULT_PROFILE": agent, "CALLAGENT_AGENT_ENGINE": engine}  # fmt: skip
    python = [sys.executable, "-m", "callagent"]
    up = subprocess.run([*python, "db", "upgrade", "--url", url], check=False, cwd=workdir, env=env,
                        capture_output=True)  # fmt: skip
    if up.returncode:
        raise RuntimeError(f"callagent db upgrade failed:\n{up.stderr.decode(errors='replace')}")
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*python, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    service = Service(process, port, url, log)
    try:
        _wait_ready(service)
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(service: Service, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"the server exited with {service.process.returncode}:\n{service.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(service.base_url + "/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer /healthz within {timeout_s:.0f} s:\n{service.log_tail()}")


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
