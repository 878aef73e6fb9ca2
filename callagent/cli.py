"""The one command-line entry point: `callagent <command>`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from callagent.config import ConfigError, Settings, load_settings


def _settings(*, for_service: bool = True) -> Settings:
    try:
        return load_settings(for_service=for_service)
    except ConfigError as exc:
        print(f"callagent: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from callagent.app import create_app
    from callagent.serving import uvicorn_options

    settings = _settings()
    uvicorn.run(
        create_app(settings, freeze_heap=True),
        host=args.host or settings.server.host,
        port=args.port or settings.server.port,
        log_level=args.log_level,
        **uvicorn_options(settings),
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from callagent.store.db import upgrade

    url = args.url or _settings(for_service=False).database.url
    upgrade(url)
    print(f"database at {url.split('@')[-1]} is at the latest revision")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from callagent.sim.caller import SimulatedCall, run_simulated_call

    # The caller only signs: without a token it can still call a development
    # server (`scripts/serve` with no token runs with verification off).
    settings = _settings(for_service=False)
    if not settings.twilio.auth_token:
        print("callagent simulate: CALLAGENT_TWILIO_AUTH_TOKEN is not set; requests carry "
              "signatures only a server with verification off accepts", file=sys.stderr)
    call = SimulatedCall(
        base_url=args.url or f"http://{settings.server.host}:{settings.server.port}",
        public_origin=settings.server.public_origin,
        auth_token=settings.twilio.auth_token,
        wav=Path(args.wav) if args.wav else None,
        silence_s=args.silence,
        tail_s=args.tail,
        lead_s=args.lead,
        from_number=args.from_number,
        to_number=args.to_number,
        heard_wav=Path(args.out) if args.out else None,
        dtmf=args.dtmf or "",
    )
    result = asyncio.run(run_simulated_call(call))
    print(result.timeline_text())
    if args.out:
        print(f"caller/heard audio written to {args.out}")
    return 0 if result.completed else 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from callagent.compliance.verify_command import verify_main

    return verify_main(
        url=args.url,
        checkpoint_dir=args.checkpoint_dir,
        chunk_size=args.chunk_size,
        use_checkpoints=not args.no_checkpoint,
    )


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from callagent.compliance.verify_command import checkpoint_main

    return checkpoint_main(url=args.url, checkpoint_dir=args.checkpoint_dir)


def cmd_dialer(args: argparse.Namespace) -> int:
    import dataclasses

    from callagent.campaigns.dialer import AnotherDialer, run_dialer

    settings = _settings()
    if args.worker_id:
        settings = dataclasses.replace(
            settings, dialer=dataclasses.replace(settings.dialer, worker_id=args.worker_id))
    try:
        asyncio.run(run_dialer(settings, until_idle=args.until_idle))
    except AnotherDialer as exc:
        print(f"callagent dialer: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callagent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply all migrations")
    up.add_argument("--url", help="database URL (default: database.url from the settings)")
    up.set_defaults(func=cmd_db_upgrade)

    audit = sub.add_parser("audit", help="the hash-chained audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check the chain and the signed checkpoints (exit 0 intact, 1 broken, 2 error)",
    )
    checkpoint = audit_sub.add_parser("checkpoint", help="sign the chain's head now")
    for p in (verify, checkpoint):
        p.add_argument("--url", help="database URL (default: database.url from the settings)")
        p.add_argument("--checkpoint-dir", help="default: audit.checkpoint_dir from the settings")
    verify.add_argument("--chunk-size", type=int, default=10_000, help="rows read at a time")
    verify.add_argument("--no-checkpoint", action="store_true",
                        help="check the hash chain alone (truncation goes unnoticed)")
    verify.set_defaults(func=cmd_audit_verify)
    checkpoint.set_defaults(func=cmd_audit_checkpoint)

    dialer = sub.add_parser("dialer", help="place outbound campaign calls (until SIGTERM)")
    dialer.add_argument("--worker-id", help="default: dialer.worker_id, else <hostname>-<pid>")
    dialer.add_argument("--until-idle", action="store_true",
                        help="exit once no running campaign has a contact left to call")
    dialer.set_defaults(func=cmd_dialer)

    sim = sub.add_parser("simulate", help="play a phone caller against a running service")
    sim.add_argument("--url", help="service base URL (default: server.host/port)")
    sim.add_argument("--wav", help="what the caller says (WAV, any rate, mono)")
    sim.add_argument("--silence", type=float, default=0.0, help="seconds of silence to send")
    sim.add_argument("--lead", type=float, default=1.0, help="seconds of silence before speaking")
    sim.add_argument("--tail", type=float, default=4.0, help="seconds to stay on after speaking")
    sim.add_argument("--from", dest="from_number", default="+15005550006")
    sim.add_argument("--to", dest="to_number", default="+15005550001")
    sim.add_argument("--dtmf", help="keys to press after the lead")
    sim.add_argument("--out", help="write caller (left) and heard (right) audio here")
    sim.set_defaults(func=cmd_simulate)

    # Each layer adds its own commands (one module per layer, no shared edits here).
    from callagent.campaigns import commands as campaign_commands
    from callagent.compliance import commands as compliance_commands
    from callagent.console import commands as console_commands

    for register in (campaign_commands.register, compliance_commands.register,
                     console_commands.register):  # fmt: skip
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
