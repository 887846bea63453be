"""Measure Q4's real pieces and write data/profiles/di_swap.json.

    python bench/measure_di_swap.py               # 5 runs per swap strategy
    python bench/measure_di_swap.py --repeats 10 --out /tmp/di.json

Trains (once, cached) a scikit-learn and a torch digits classifier, then: times building each
predictor from its artifact; runs ``sim.injection.swap_under_load`` for both strategies
(warm-then-atomic and unload-then-load: flip to torch and back under 4 client threads); and
runs the sample suite (``sim.di_sample``) of the injected and the hard-wired service in fresh
interpreters with torch and sklearn unimportable. Every sample is kept, with a provenance
record (CPU, library versions, date, load average): the lab reads this file by default.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.injection import REFERENCE, measure  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--out", type=Path, default=REFERENCE)
    args = ap.parse_args(argv)
    got = measure(repeats=args.repeats, requests=args.requests, generated_by="bench/measure_di_swap.py")
    args.out.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
    for strategy, runs in got["swaps"].items():
        print(f"{strategy:12s} errors per run {[r['errors'] for r in runs]}  swap s {[r['swap_s'] for r in runs]}")
    for style, res in got.get("suite", {}).items():
        print(f"{style:10s} passed without ML libraries: {sum(v == 'passed' for v in res.values())} of {len(res)}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
