"""The `callagent retention run` and `callagent erase --phone NUMBER` commands.

Exit codes: 0 done, 1 done but some recording files could not be removed
(listed), 2 the command could not run (configuration, database, bad number).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exc as sa_exc

from callagent.compliance.erasure import BadPhone, erase_phone
from callagent.compliance.retention import run_retention
from callagent.config import ConfigError, load_settings
from callagent.store.db import create_engine_for, make_sessionmaker

__all__ = ["erase_main", "register", "retention_main"]

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    """Add this layer's subcommands to the `callagent` parser."""
    retention = sub.add_parser("retention", help="data retention")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    run = retention_sub.add_parser(
        "run", help="purge recordings, transcripts and tool payloads past their retention"
    )
    run.add_argument("--url", help="database URL (default: database.url)")
    run.set_defaults(func=lambda a: retention_main(url=a.url))
    erase = sub.add_parser(
        "erase", help="erase one person's transcripts, recordings and contact data"
    )
    erase.add_argument("--phone", required=True, help="the person's number, E.164 (+14155550100)")
    erase.add_argument("--url", help="database URL (default: database.url)")
    erase.set_defaults(func=lambda a: erase_main(a.phone, url=a.url))


def _fail(command: str, message: str) -> int:
    print(f"callagent {command}: {message}", file=sys.stderr)
    return EXIT_USAGE


def _unremoved(command: str, files: list[str]) -> int:
    for f in files:
        print(f"callagent {command}: could not remove {f}", file=sys.stderr)
    return EXIT_PARTIAL if files else EXIT_OK


def retention_main(*, url: str | None = None) -> int:
    try:
        settings = load_settings(for_service=False)
    except ConfigError as exc:
        return _fail("retention run", f"configuration error: {exc}")

    async def go() -> Any:
        db = create_engine_for(url or settings.database.url)
        try:
            return await run_retention(make_sessionmaker(db), settings.retention, datetime.now(UTC))
        finally:
            await db.dispose()

    try:
        report = asyncio.run(go())
    except (OSError, sa_exc.SQLAlchemyError) as exc:
        return _fail("retention run", f"database error: {type(exc).__name__}: {exc}")
    c = report.counts()
    print(f"purged: {c['recordings']} recordings, {c['transcripts']} transcript turns, "
          f"{c['tool_payloads']} tool payloads")  # fmt: skip
    return _unremoved("retention run", report.unremoved)


def erase_main(phone: str, *, url: str | None = None) -> int:
    try:
        settings = load_settings(for_service=False)
    except ConfigError as exc:
        return _fail("erase", f"configuration error: {exc}")

    async def go() -> Any:
        db = create_engine_for(url or settings.database.url)
        try:
            return await erase_phone(make_sessionmaker(db), phone, datetime.now(UTC))
        finally:
            await db.dispose()

    try:
        report = asyncio.run(go())
    except BadPhone as exc:
        return _fail("erase", f"--phone: {exc}")
    except (OSError, sa_exc.SQLAlchemyError) as exc:
        return _fail("erase", f"database error: {type(exc).__name__}: {exc}")
    c = report.counts()
    print(f"erased: {c['calls']} calls ({c['turns']} transcript turns, {c['tool_calls']} tool "
          f"calls, {c['recordings']} recordings), {c['contacts']} contacts, {c['attempts']} "
          f"call attempts; do-not-call entry kept: {'yes' if c['dnc_kept'] else 'no entry'}")
    return _unremoved("erase", report.unremoved)
