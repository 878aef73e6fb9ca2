"""The commands an operator types: db upgrade, serve, simulate, as real processes.

`callagent serve` runs with the shipped config: its default profile is
customer_service, the embedded speech pipeline."""

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

CLK_TCK = os.sysconf("SC_CLK_TCK")


def settle(pid: int, limit_s: float = 180.0) -> None:
    """Wait until a process uses under 5 % of a CPU over a second (start-up work
    done). Not an assertion on time: on a busy machine it simply waits longer."""
    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    deadline = time.monotonic() + limit_s
    before = cpu()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu()
        if now - before < 0.05:
            return
        before = now

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

        # The default profile (customer_service) loads its speech models in the
        # background after start-up: wait until the process has gone quiet.
        settle(server.pid)
        # The caller waits through the disclosures and the menu (~11 s), asks
        # for the status of an order, and hangs up after the agent's reply.
        sim = subprocess.run(
            [*cli, "simulate", "--wav", str(SHARED_AUDIO / "01_order_status.wav"),
             "--lead", "13", "--tail", "6.5", "--out", str(tmp_path / "heard.wav")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
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
        turns = conn.execute("select speaker, text from turns order by seq").fetchall()
        # The embedded pipeline answered: its greeting, the caller's words, the next question.
        assert [t[0] for t in turns] == ["agent", "caller", "agent"], turns
        assert turns[0][1].startswith("Hi, you've reached Acme Supplies")
        assert "status" in turns[1][1] and "order number" in turns[2][1]
        engine = conn.execute("select engine, agent from calls").fetchone()
        assert engine == ("pipeline", "customer_service")
        # The caller hung up: the media stream's stop and Twilio's "completed"
        # status callback race to close the row (the first one's reason is kept;
        # the pipeline engine's close takes longer than the fixture's did).
        assert calls[0][2] in ("caller hung up", "completed") and calls[0][3] == "completed"
        actions = [r[0] for r in conn.execute("select action from audit_events order by seq")]
        # The start's configuration, then the call's life; and the disclosures the caller heard.
        assert actions[:3] == ["config.loaded", "call.received", "call.answered"], actions
        assert "call.ended" in actions
        assert actions.count("disclosure.heard") == 2


async def test_simulate_without_a_token_calls_a_development_server(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    # `scripts/serve` with no token runs with verification off; the simulator,
    # also without a token, still calls it, and says why its signatures are void.
    import asyncio

    from callagent.app import create_app
    from callagent.engines.fixture import FixtureEngine, FixtureScript
    from tests.e2e.conftest import make_settings, start_service, stop_service

    settings = make_settings(sqlite_db_url, tmp_path, verify=False)
    script = FixtureScript.packaged()
    app = create_app(settings, lambda s: (lambda call: FixtureEngine(script)))
    server, task = await start_service(settings, app)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLAGENT_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callagent", "simulate",
            "--url", f"http://127.0.0.1:{settings.server.port}",
            "--silence", "0.5", "--lead", "0.2", "--tail", "0.2",
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
    finally:
        await stop_service(server, task)
    assert proc.returncode == 0, err.decode()
    assert "completed" in out.decode()
    assert "CALLAGENT_TWILIO_AUTH_TOKEN is not set" in err.decode()
