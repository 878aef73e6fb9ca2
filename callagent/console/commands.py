"""The `callagent` operator commands: `user add|disable|set-role` and `token create`.

They act on ``database.url`` (or ``--url``) and write what they did to the audit log
(actor ``cli``). A new password is read from the terminal, or from stdin with
``--password-stdin``; it is never an argument (shell history, ``ps``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from callagent.config import ConfigError, load_settings
from callagent.console import operator_store as ops
from callagent.console.audit_log import ConsoleAction, audit
from callagent.console.passwords import WeakPassword, check_password_rules
from callagent.console.roles import Role, UnknownRole, parse_role
from callagent.store.db import create_engine_for, make_sessionmaker

__all__ = ["register"]

ACTOR = "cli"


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    return load_settings(for_service=False).database.url


def _run(args: argparse.Namespace, work: Callable[[AsyncSession, datetime], Awaitable[str]]) -> int:
    async def main() -> str:
        engine = create_engine_for(_url(args))
        try:
            async with make_sessionmaker(engine).begin() as s:
                return await work(s, datetime.now(UTC))
        finally:
            await engine.dispose()

    try:
        print(asyncio.run(main()))
    except (ConfigError, ops.BadUsername, ops.DuplicateOperator, ops.UnknownOperator,
            UnknownRole, WeakPassword, ValueError) as exc:
        print(f"callagent: {exc}", file=sys.stderr)
        return 2
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace) -> int:
    try:
        role = parse_role(args.role)
        username = ops.check_username(args.username)
        password = _read_password(args)
        check_password_rules(password)
    except (UnknownRole, ops.BadUsername, WeakPassword, ValueError) as exc:
        print(f"callagent: {exc}", file=sys.stderr)
        return 2

    async def work(s: AsyncSession, now: datetime) -> str:
        added = await ops.add_operator(s, username, password, role, now=now)
        await audit(s, ConsoleAction.OPERATOR_ADDED, ACTOR, now=now, operator=added.username,
                    role=role.value)
        return f"added operator {added.username} ({role.value})"

    return _run(args, work)


def cmd_user_disable(args: argparse.Namespace) -> int:
    async def work(s: AsyncSession, now: datetime) -> str:
        done = await ops.set_active(s, args.username, False, now=now)
        await audit(s, ConsoleAction.OPERATOR_DISABLED, ACTOR, now=now, operator=done.username)
        return f"disabled operator {done.username} (sessions and API tokens revoked)"

    return _run(args, work)


def cmd_user_set_role(args: argparse.Namespace) -> int:
    try:
        role = parse_role(args.role)
    except UnknownRole as exc:
        print(f"callagent: {exc}", file=sys.stderr)
        return 2

    async def work(s: AsyncSession, now: datetime) -> str:
        done = await ops.set_role(s, args.username, role)
        await audit(s, ConsoleAction.ROLE_CHANGED, ACTOR, now=now, operator=done.username,
                    role=role.value)
        return f"operator {done.username} is now {role.value}"

    return _run(args, work)


def cmd_token_create(args: argparse.Namespace) -> int:
    try:
        days = load_settings(for_service=False).console.api_token_ttl_days if (
            args.days is None) else args.days
    except ConfigError as exc:
        print(f"callagent: {exc}", file=sys.stderr)
        return 2
    if not 0 <= days <= 3650:
        print(f"callagent: --days: expected 0-3650 (0: never), got {days}", file=sys.stderr)
        return 2

    async def work(s: AsyncSession, now: datetime) -> str:
        token, operator = await ops.create_api_token(
            s, args.username, args.name, now=now, ttl=timedelta(days=days) if days else None)
        await audit(s, ConsoleAction.TOKEN_CREATED, ACTOR, now=now, operator=operator.username,
                    name=args.name)
        return token

    return _run(args, work)


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    """Add this layer's subcommands to the `callagent` parser."""
    user = sub.add_parser("user", help="console operators")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="add an operator (asks for the password)")
    add.add_argument("username")
    add.add_argument("--role", required=True, help="|".join(r.value for r in Role))
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin")
    add.set_defaults(func=cmd_user_add)
    disable = user_sub.add_parser("disable", help="disable an operator, ending its sessions")
    disable.add_argument("username")
    disable.set_defaults(func=cmd_user_disable)
    set_role = user_sub.add_parser("set-role", help="change an operator's role")
    set_role.add_argument("username")
    set_role.add_argument("role", help="|".join(r.value for r in Role))
    set_role.set_defaults(func=cmd_user_set_role)

    token = sub.add_parser("token", help="API tokens for the JSON API")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token (printed once)")
    create.add_argument("username")
    create.add_argument("--name", default="api", help="a label for the token")
    create.add_argument("--days", type=int, help="expiry (default console.api_token_ttl_days)")
    create.set_defaults(func=cmd_token_create)

    for p in (add, disable, set_role, create):
        p.add_argument("--url", help="database URL (default: database.url from the settings)")
