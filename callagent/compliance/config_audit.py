"""Configuration changes in the audit log: what the service started with, and what changed.

Each start of the web service appends one audit event: ``config.changed`` with
the keys whose values differ from the previous start's (old and new value), or
``config.loaded`` when nothing changed (or on the first start). The snapshot
covers every setting and every agent profile file. Secrets never enter the
log: a secret is recorded as ``unset`` or as a short fingerprint, enough to
show that a key was rotated, not to recover it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callagent.call.records import AuditRecord
from callagent.compliance.events import CONFIG_CHANGED, CONFIG_LOADED
from callagent.config import Settings
from callagent.store.models import AuditEvent

__all__ = ["CONFIG_CHANGED", "CONFIG_LOADED", "config_event", "config_snapshot", "last_snapshot"]

Snapshot = dict[str, str]


def _fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]


def config_snapshot(settings: Settings, agents_dir: Path | None = None) -> Snapshot:
    """Every setting as ``section.key -> value`` (secrets fingerprinted), and
    every agent profile file as ``agents/<file> -> fingerprint``."""
    out: Snapshot = {}
    for section in dataclasses.fields(settings):
        group = getattr(settings, section.name)
        for f in dataclasses.fields(group):
            value = getattr(group, f.name)
            key = f"{section.name}.{f.name}"
            if f.metadata.get("secret"):
                out[key] = _fingerprint(str(value)) if value else "unset"
            else:
                out[key] = value if isinstance(value, str) else json.dumps(value, default=str)
    if agents_dir is not None and agents_dir.is_dir():
        for path in sorted(agents_dir.glob("*.toml")):
            out[f"agents/{path.name}"] = _fingerprint(path.read_text(encoding="utf-8"))
    return out


def config_event(previous: Snapshot | None, current: Snapshot, *, now: datetime) -> AuditRecord:
    """The event for this start: the changes against ``previous`` when any."""
    details: dict[str, Any] = {"snapshot": current}
    if previous is None:
        return AuditRecord(CONFIG_LOADED, "system", now, None, details | {"first": True})
    changes = {
        key: [previous.get(key), current.get(key)]
        for key in sorted(previous.keys() | current.keys())
        if previous.get(key) != current.get(key)
    }
    if not changes:
        return AuditRecord(CONFIG_LOADED, "system", now, None, details)
    return AuditRecord(CONFIG_CHANGED, "system", now, None, details | {"changes": changes})


async def last_snapshot(session: AsyncSession) -> Snapshot | None:
    """The snapshot of the newest configuration event, if any."""
    row = (
        await session.execute(
            select(AuditEvent.details)
            .where(AuditEvent.action.in_((CONFIG_LOADED, CONFIG_CHANGED)))
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    snapshot = json.loads(row).get("snapshot")
    if not isinstance(snapshot, Mapping):
        return None
    return {str(k): str(v) for k, v in snapshot.items()}
