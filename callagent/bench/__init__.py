"""Benchmarks: ``python -m callagent.bench <name>`` (``scripts/bench <name>``).

Each public module here is one benchmark with ``main(argv) -> int``; results
and the commands that produced them are kept in ``docs/benchmarks.md``.
"""
