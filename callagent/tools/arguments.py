"""Tool arguments checked against the tool's JSON schema before the tool runs.

``check_arguments(schema, text)`` parses the JSON text and validates it with
jsonschema (Draft 2020-12); any problem is a ``BadArguments`` naming the
argument (a JSON pointer-like path) and the rule it broke.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

__all__ = ["BadArguments", "check_arguments", "check_schema"]


class BadArguments(ValueError):
    """The arguments are not JSON, not an object, or break the tool's schema."""


def check_schema(schema: Mapping[str, Any]) -> None:
    """Refuse a schema that is itself invalid (``ValueError`` naming the problem)."""
    try:
        Draft202012Validator.check_schema(dict(schema))
    except SchemaError as exc:
        raise ValueError(f"invalid JSON schema: {exc.message}") from None


def _where(path: Any) -> str:
    parts = [str(p) for p in path]
    return "/".join(parts) if parts else "(arguments)"


def check_arguments(schema: Mapping[str, Any], arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as a dict, or ``BadArguments`` listing every violation."""
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise BadArguments(f"arguments are not JSON: {exc.msg} at position {exc.pos}") from None
    else:
        value = dict(arguments)
    if not isinstance(value, dict):
        raise BadArguments(f"arguments must be a JSON object, got {type(value).__name__}")
    validator = Draft202012Validator(dict(schema))
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.path])
    if errors:
        problems = "; ".join(f"{_where(e.path)}: {e.message}" for e in errors)
        raise BadArguments(f"arguments do not match the schema: {problems}")
    return value
