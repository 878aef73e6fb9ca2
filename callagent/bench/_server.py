"""The service under test: ``callagent serve`` in a process of its own, for every benchmark.

``serve()`` migrates a database (SQLite in the work directory unless told),
starts the server on a free port with the benchmark's Twilio token, waits
until ``/healthz`` answers, and stops it with SIGINT on exit. ``settle()``
waits until its start-up work (models loading in the background) is over.
The ``/proc`` readers measure it.

(A private module: every public module of ``callagent.bench`` is a benchmark.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from callagent.store.db import PROJECT_ROOT

__all__ = ["TOKEN", "Server", "free_port", "proc_cpu_seconds", "proc_status_number", "serve", "settle"]

TOKEN = "bench-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_status_number(pid: int, key: str) -> int:
    """A figure of /proc/<pid>/status (VmHWM: peak RSS in kB, nonvoluntary_ctxt_switches, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    db_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(self.pid))

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def serve(
    workdir: Path,
    env: Mapping[str, str],
    *,
    db_url: str | None = None,
    port: int | None = None,
    cwd: Path = PROJECT_ROOT,
    cprofile: Path | None = None,
    ready_timeout_s: float = 60.0,
) -> Iterator[Server]:
    """``callagent serve`` in its own process, on a migrated database; stopped on exit.

    ``env`` adds to the environment (the agent profile, the engine...); the
    token, database, journal directory and public origin are set here. With
    ``cprofile`` the server runs under cProfile and writes its profile there on exit.
    """
    port = port or free_port()
    url = db_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    full_env = {
        **os.environ,
        "CALLAGENT_TWILIO_AUTH_TOKEN": TOKEN,
        "CALLAGENT_DATABASE_URL": url,
        "CALLAGENT_RECORDER_JOURNAL_DIR": str(workdir / "journal"),
        "CALLAGENT_SERVER_PUBLIC_ORIGIN": f"http://127.0.0.1:{port}",
        **env,
    }
    python = [sys.executable, "-m", "callagent"]
    upgrade = subprocess.run(
        [*python, "db", "upgrade", "--url", url], check=False, cwd=cwd, env=full_env, capture_output=True
    )
    if upgrade.returncode:
        raise RuntimeError(f"callagent db upgrade failed:\n{upgrade.stderr.decode(errors='replace')}")
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *(["-m", "cProfile", "-o", str(cprofile)] if cprofile else []),
             "-m", "callagent", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(process, port, url, log)
    try:
        _wait_ready(server, ready_timeout_s)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def settle(server: Server, timeout_s: float = 180.0) -> float:
    """Wait until start-up work (models loading in the background...) is over.

    Settled means under 2 % of a CPU over one second; returns the seconds waited.
    """
    started = time.monotonic()
    before = server.cpu_seconds()
    while time.monotonic() - started < timeout_s:
        time.sleep(1.0)
        now = server.cpu_seconds()
        if now - before < 0.02:
            break
        before = now
    return time.monotonic() - started


def _wait_ready(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.base_url + "/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer /healthz within {timeout_s:.0f} s:\n{server.log_tail()}")
