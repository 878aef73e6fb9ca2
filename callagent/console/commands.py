"""The `callagent` operator commands (user add, ...)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    """Add this layer's subcommands to the `callagent` parser."""
