"""Operator roles and what each may do: one table, no I/O.

viewer reads calls; supervisor also runs campaigns and exports; admin also manages
operators and settings.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["Permission", "Role", "UnknownRole", "allowed", "parse_role"]


class Role(enum.Enum):
    VIEWER = "viewer"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Permission(enum.Enum):
    READ_CALLS = "read_calls"
    EXPORT_CALLS = "export_calls"
    READ_CAMPAIGNS = "read_campaigns"
    RUN_CAMPAIGNS = "run_campaigns"
    MANAGE_OPERATORS = "manage_operators"


_GRANTS: Final[dict[Role, frozenset[Permission]]] = {
    Role.VIEWER: frozenset({Permission.READ_CALLS}),
    Role.SUPERVISOR: frozenset({
        Permission.READ_CALLS, Permission.EXPORT_CALLS,
        Permission.READ_CAMPAIGNS, Permission.RUN_CAMPAIGNS,
    }),
    Role.ADMIN: frozenset(Permission),
}


class UnknownRole(ValueError):
    """A role name that is not viewer, supervisor or admin."""


def parse_role(text: str) -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise UnknownRole(
            f"unknown role {text!r}; expected one of {', '.join(r.value for r in Role)}"
        ) from None


def allowed(role: Role, permission: Permission) -> bool:
    return permission in _GRANTS[role]
