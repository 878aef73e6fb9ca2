"""``python -m callagent.bench <name> [options]``: run one benchmark.

Every public module of ``callagent.bench`` is a benchmark named after its
module and exposes ``main(argv) -> int``; adding one needs no change here.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence

import callagent.bench


def available() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(callagent.bench.__path__) if not m.name.startswith("_")
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    names = available()
    usage = f"usage: scripts/bench <{'|'.join(names)}> [options]   (<name> --help for its options)"
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in names:
        print(f"scripts/bench: no benchmark named {name!r}\n{usage}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"callagent.bench.{name}")
    return int(module.main(rest))


if __name__ == "__main__":
    raise SystemExit(main())
