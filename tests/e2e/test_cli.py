"""The commands an operator types: db upgrade, serve, simulate, as real processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import SHARED_AUDIO, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_simulate_a_call_against_a_served_process(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "callagent.db"
    env = {
        **os.environ,
        "CALLAGENT_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "CALLAGENT_TWILIO_AUTH_TOKEN": "cli-test-token",
        "CALLAGENT_SERVER_PORT": str(port),
        "CALLAGENT_SERVER_PUBLIC_ORIGIN": f"http://127.0.0.1:{port}",
        "CALLAGENT_RECORDER_JOURNAL_DIR": str(tmp_path / "journal"),
    }
    cli = [sys.executable, "-m", "callagent"]
    upgrade = subprocess.run([*cli, "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert upgrade.returncode == 0, upgrade.stderr

    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [*cli, "serve", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "service did not come up"
            time.sleep(0.2)

        sim = subprocess.run(
            [*cli, "simulate", "--wav", str(SHARED_AUDIO / "01_order_status.wav"),
             "--lead", "2.6", "--tail", "4", "--out", str(tmp_path / "heard.wav")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        assert sim.returncode == 0, sim.stdout + sim.stderr
        assert "completed" in sim.stdout and "agent audio heard" in sim.stdout
        assert (tmp_path / "heard.wav").stat().st_size > 0
    finally:
        server.send_signal(signal.SIGTERM)  # a graceful stop drains the recorder
        server.wait(timeout=30)

    with sqlite3.connect(db) as conn:
        calls = conn.execute("select id, ended_at, end_reason, status from calls").fetchall()
        assert len(calls) == 1 and calls[0][1] is not None
        assert calls[0][2] == "caller hung up" and calls[0][3] == "completed"
        speakers = [r[0] for r in conn.execute("select speaker from turns order by seq")]
        # The caller waits for the whole greeting (2.4 s), then speaks once.
        assert speakers == ["agent", "caller", "agent"]
        actions = [r[0] for r in conn.execute("select action from audit_events order by seq")]
        assert actions == ["call.received", "call.answered", "call.ended"]
