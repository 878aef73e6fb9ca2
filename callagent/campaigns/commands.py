"""The `callagent campaign` commands: create, import, start, pause, finish, status.

Exit status: 0 done; 1 an import read the file but refused some rows (every bad row is
printed on stderr as ``FILE:LINE: reason: detail``; the good rows are imported); 2 nothing
was done (bad settings, unknown campaign, illegal move, unreadable file or header). The
database is ``database.url`` from the settings, or ``--url``. The actor recorded in the
audit log is ``cli:<login name>``.

``import`` draws a progress bar on stderr (redrawn in place on a terminal, a line per 10 %
otherwise); ``status --watch`` redraws the campaigns' progress every ``--interval`` seconds
until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callagent.campaigns import operations
from callagent.campaigns.importer import ImportProgress
from callagent.campaigns.operations import ImportRefused
from callagent.campaigns.settings import CampaignSpecError, IllegalTransition, Weekday
from callagent.campaigns.spec_input import spec_from_fields
from callagent.campaigns.store import CampaignExists, CampaignProgress, UnknownCampaign
from callagent.config import ConfigError, load_settings
from callagent.store.db import create_engine_for, make_sessionmaker

__all__ = ["ProgressBar", "register", "render_status"]

_T = TypeVar("_T")
_EXPECTED = (CampaignSpecError, IllegalTransition, UnknownCampaign, CampaignExists,
             ImportRefused, OSError)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _run(args: argparse.Namespace,
         work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[_T]]) -> _T:
    """Run ``work`` against the configured database; expected failures exit 2 with a line."""
    try:
        url = args.url or load_settings(for_service=False).database.url
    except ConfigError as exc:
        print(f"callagent: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    async def main() -> _T:
        engine = create_engine_for(url)
        try:
            return await work(make_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except _EXPECTED as exc:
        print(f"callagent campaign {args.campaign_command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# --- create ------------------------------------------------------------------------------------

_SPEC_OPTIONS = {
    "name": "name", "agent": "agent_profile", "caller_id": "caller_id", "purpose": "purpose",
    "window": "window", "days": "days", "max_concurrent": "max_concurrent_calls",
    "max_attempts": "max_attempts", "max_attempts_per_day": "max_attempts_per_day",
    "retry_no_answer": "retry_no_answer", "retry_busy": "retry_busy",
    "retry_failed": "retry_failed", "retry_voicemail": "retry_voicemail",
    "voicemail": "voicemail", "voicemail_message": "voicemail_message",
    "ring_timeout": "ring_timeout_s",
}


def cmd_create(args: argparse.Namespace) -> int:
    fields: dict[str, str | int | bool] = {
        field: getattr(args, option) for option, field in _SPEC_OPTIONS.items()
        if getattr(args, option) is not None
    }
    if args.no_national_dnc:
        fields["honor_national_dnc"] = False
    try:
        spec = spec_from_fields(fields)
    except CampaignSpecError as exc:
        print(f"callagent campaign create: {exc}", file=sys.stderr)
        return 2
    campaign = _run(args, lambda sessions: operations.create(
        sessions, args.campaign, spec, actor=_actor(), now=datetime.now(UTC)))
    print(f"campaign {campaign.key} (id {campaign.id}) created in state "
          f"{campaign.state.value}: {_describe(campaign.spec)}")
    return 0


def _days(days: frozenset[Weekday]) -> str:
    return ",".join(day.name[:3].title() for day in sorted(days))


def _describe(spec: Any) -> str:
    return (f"{spec.name!r}, agent {spec.agent_profile}, caller ID {spec.caller_id}, "
            f"{spec.purpose.value}, window {spec.window} on {_days(spec.allowed_days)}, "
            f"at most {spec.max_concurrent_calls} calls at once, {spec.max_attempts} attempts, "
            f"voicemail {spec.voicemail.value}")


# --- import ------------------------------------------------------------------------------------

class ProgressBar:
    """Import progress on a stream: redrawn in place on a terminal, a line per 10 % else."""

    def __init__(self, out: IO[str], total_chars: int, *, width: int = 30) -> None:
        self._out, self._total, self._width = out, max(total_chars, 1), width
        self._tty = out.isatty()
        self._started = time.monotonic()
        self._last_decile = -1
        self.chars = 0

    def lines(self, source: Iterable[str]) -> Iterator[str]:
        for line in source:
            self.chars += len(line)
            yield line

    def render(self, p: ImportProgress) -> str:
        fraction = 1.0 if p.done else min(self.chars / self._total, 1.0)
        filled = round(fraction * self._width)
        rate = p.records / max(time.monotonic() - self._started, 1e-9)
        return (f"[{'#' * filled}{'.' * (self._width - filled)}] {fraction:4.0%} "
                f"{p.records:,} rows, {p.imported:,} good, {p.rejected:,} bad, {rate:,.0f} rows/s")

    def __call__(self, p: ImportProgress) -> None:
        text = self.render(p)
        if self._tty:
            self._out.write("\r" + text + ("\n" if p.done else ""))
        else:
            decile = 10 if p.done else int(min(self.chars / self._total, 1.0) * 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self._out.write(text + "\n")
        self._out.flush()


def _text_lines(source: IO[bytes], path: Path) -> Iterator[str]:
    """The file's lines as text; a line that is not UTF-8 stops the import, named."""
    for number, raw in enumerate(source, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ImportRefused(
                f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the "
                "line); fix the file and import it again (rows already stored stay)"
            ) from None


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        size = path.stat().st_size
        source = path.open("rb")
    except OSError as exc:
        print(f"callagent campaign import: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    bar = ProgressBar(sys.stderr, size)
    with source:
        report = _run(args, lambda sessions: operations.import_csv(
            sessions, args.campaign, bar.lines(_text_lines(source, path)), actor=_actor(),
            now=datetime.now(UTC),
            default_region=args.region, on_progress=None if args.quiet else bar))
    for error in report.errors:
        print(f"{path}:{error.line}: {error.reason.text}"
              f"{': ' + error.detail if error.detail else ''}", file=sys.stderr)
    print(f"campaign {report.campaign.key}: {report.records:,} rows read, {report.added:,} "
          f"contacts added, {report.already_present:,} already present, "
          f"{len(report.errors):,} rejected")
    return 1 if report.errors else 0


# --- start, pause, finish --------------------------------------------------------------------------------

def cmd_start(args: argparse.Namespace) -> int:
    campaign = _run(args, lambda sessions: operations.start(
        sessions, args.campaign, actor=_actor(), now=datetime.now(UTC)))
    print(f"campaign {campaign.key} is {campaign.state.value}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    campaign = _run(args, lambda sessions: operations.pause(
        sessions, args.campaign, actor=_actor(), now=datetime.now(UTC)))
    print(f"campaign {campaign.key} is {campaign.state.value}")
    return 0


def cmd_finish(args: argparse.Namespace) -> int:
    campaign = _run(args, lambda sessions: operations.finish(
        sessions, args.campaign, actor=_actor(), now=datetime.now(UTC)))
    print(f"campaign {campaign.key} is {campaign.state.value}")
    return 0


# --- status --------------------------------------------------------------------------------------

def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k or 'in progress'} {v:,}" for k, v in sorted(counts.items())) or "none"


def render_status(progress: CampaignProgress, *, width: int = 30) -> str:
    """One campaign's progress as a few lines of text."""
    c = progress.campaign
    spec = c.spec
    total, finished = progress.total, progress.finished
    fraction = finished / total if total else 0.0
    filled = round(fraction * width)
    pending = progress.contacts.get("pending", 0)
    next_due = (f", next at {progress.next_due_at:%Y-%m-%d %H:%M} UTC"
                if progress.next_due_at and pending > progress.due_now else "")
    return "\n".join([
        f"{c.key} (id {c.id}) {spec.name!r}: {c.state.value}",
        f"  agent {spec.agent_profile}, caller ID {spec.caller_id}, window {spec.window} "
        f"on {_days(spec.allowed_days)}, voicemail {spec.voicemail.value}",
        f"  [{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}  "
        f"{finished:,} of {total:,} contacts finished",
        f"  in flight {progress.in_flight}/{spec.max_concurrent_calls}; pending {pending:,} "
        f"(due now {progress.due_now:,}{next_due})",
        f"  contacts: {_counts(progress.contacts)}",
        f"  attempts: {_counts(progress.attempts)}",
        f"  skipped:  {_counts(progress.skips)}",
        f"  waiting:  {_counts(progress.waiting)}",
    ])


def cmd_status(args: argparse.Namespace) -> int:
    out = sys.stdout
    # Ctrl-C is the way out of --watch. Taken as a flag, not as KeyboardInterrupt:
    # one landing inside asyncio.run cancelled the query mid-flight, and the
    # database engine's disposal then hung (seen under load in CI).
    interrupted: list[bool] = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True)) if args.watch else None
    try:
        while not interrupted:
            progress = _run(args, lambda sessions: operations.status(
                sessions, args.campaign, now=datetime.now(UTC)))
            text = "\n\n".join(render_status(p) for p in progress) or "no campaigns"
            if args.watch and out.isatty():
                out.write("\x1b[H\x1b[2J")
            stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n" if args.watch else ""
            out.write(stamp + text + "\n")
            out.flush()
            if not args.watch:
                return 0
            until = time.monotonic() + args.interval
            while not interrupted and time.monotonic() < until:
                time.sleep(min(0.05, args.interval))
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


# --- the parser --------------------------------------------------------------------------------

def register(sub: "argparse._SubParsersAction[Any]") -> None:
    """Add this layer's subcommands to the `callagent` parser."""
    campaign = sub.add_parser("campaign", help="outbound campaigns: create, import, start, "
                                               "pause, status")
    csub = campaign.add_subparsers(dest="campaign_command", required=True)

    def command(name: str, help: str, func: Callable[[argparse.Namespace], int],
                key_required: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = csub.add_parser(name, help=help)
        if key_required:
            p.add_argument("campaign", help="the campaign's key (unique, e.g. renewals-2026-11)")
        p.add_argument("--url", help="database URL (default: database.url from the settings)")
        p.set_defaults(func=func)
        return p

    create = command("create", "create a campaign (state draft)", cmd_create)
    create.add_argument("--name", required=True)
    create.add_argument("--agent", required=True, help="agent profile (config/agents/<name>.toml)")
    create.add_argument("--caller-id", required=True, help="E.164 number we own or verified")
    create.add_argument("--purpose", required=True, choices=["informational", "telemarketing"])
    create.add_argument("--window", help="callee-local hours HH:MM-HH:MM (default 09:00-20:00, "
                                         "inside 08:00-21:00)")
    create.add_argument("--days", help="calling days: mon-fri (default), mon,wed, all")
    create.add_argument("--max-concurrent", help="calls at once, all dialers (default 1)")
    create.add_argument("--max-attempts", help="attempts per contact (default 3)")
    create.add_argument("--max-attempts-per-day", help="attempts per number per local day "
                                                       "(default 1)")
    for outcome, default in (("no-answer", "4h"), ("busy", "30m"), ("failed", "1h"),
                             ("voicemail", "1d")):
        create.add_argument(f"--retry-{outcome}", help=f"delay before the next attempt after "
                                                       f"{outcome} (default {default})")
    create.add_argument("--voicemail", choices=["hang_up", "leave_message"],
                        help="on an answering machine (default hang_up)")
    create.add_argument("--voicemail-message", help="said after the beep (leave_message)")
    create.add_argument("--ring-timeout", help="seconds to ring, 15-600 (default 30)")
    create.add_argument("--no-national-dnc", action="store_true",
                        help="informational campaigns only: skip the national DNC scrub")

    imp = command("import", "import contacts from a CSV file (again: nothing changes)",
                  cmd_import)
    imp.add_argument("file", help="CSV: phone, name, timezone, consent_type, consent_at, ...")
    imp.add_argument("--region", default="US", help="region for national numbers (default US)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")

    command("start", "start (or resume) a campaign", cmd_start)
    command("pause", "pause a running campaign (calls under way go on)", cmd_pause)
    command("finish", "finish a running or paused campaign for good", cmd_finish)

    st = command("status", "progress of one campaign or all", cmd_status, key_required=False)
    st.add_argument("campaign", nargs="?", help="the campaign's key (default: all)")
    st.add_argument("--watch", action="store_true", help="redraw until interrupted")
    st.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
