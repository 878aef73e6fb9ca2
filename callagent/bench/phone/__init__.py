"""``scripts/bench phone``: Full-Duplex-Bench's measures over Twilio's protocol.

The dispatcher (``callagent.bench.__main__``) runs ``main``; the work is in
``cli.py``, imported only then, so the pure modules stay cheap to import.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from callagent.bench.phone.cli import main as run

    return run(argv)
