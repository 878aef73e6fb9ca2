"""Generate the phone benchmark's caller audio from text (needs the `embedded` extra).

    .venv/bin/python scripts/dev/make_phone_scenarios.py [--samples 20] [--out var/phone_scenarios/20]

Writes one 8 kHz WAV per sample (G.711 mu-law round-tripped) and
manifest.json (text, voice, level, line filter, anchor, speech and pause
spans, echo gain and delay). Reproducible: the same settings give the same
files. `scripts/bench phone` does the same on first use into its cache
directory, so nothing generated is committed.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from callagent.bench.phone.generate import generate
from callagent.store.db import PROJECT_ROOT


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=20, help="samples per scenario (default 20)")
    p.add_argument("--out", help="output directory (default var/phone_scenarios/<samples>)")
    args = p.parse_args()
    out = Path(args.out) if args.out else PROJECT_ROOT / "var" / "phone_scenarios" / str(args.samples)
    samples = generate(out, args.samples)
    seconds = sum(len(s.audio) for s in samples) / 8000
    per = Counter(s.spec.scenario.value for s in samples)
    print(f"{len(samples)} samples, {seconds:.0f} s of caller audio, in {out}")
    for scenario, n in per.items():
        print(f"  {scenario}: {n}")


if __name__ == "__main__":
    main()
