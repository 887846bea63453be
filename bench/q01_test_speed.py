"""Time the q01 acceptance suite in fresh interpreters and store it as data/profiles/q01_test_speed.json.

    python bench/q01_test_speed.py                 # 5 repeats of every configuration
    python bench/q01_test_speed.py --repeats 3 --out /tmp/q01.json

Each repeat starts one ``python -I`` per configuration (fakes, the in-memory control, scikit-learn +
SQLite, PyTorch + SQLite, the layered and the one-module variants), interleaved so that load drifts
hit every configuration alike; the file keeps every sample with the machine's provenance. The lab
reads this file by default (``timings=reference``); ``timings=live`` measures again, smaller.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labs.q01_hexagonal_architecture import CODE, CONFIGS, PROFILE  # noqa: E402
from sim.suite_timing import measure, provenance  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10, help="suite rounds per scope inside each process")
    ap.add_argument("--out", type=Path, default=PROFILE)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    samples = measure(CODE, CONFIGS, repeats=args.repeats, rounds=args.rounds)
    bad = {k: s["failures"] for k, v in samples.items() for s in v if s["failures"]}
    if bad:
        raise SystemExit(f"the acceptance suite failed: {bad}")
    data = {"samples": samples,
            "provenance": provenance({"repeats": args.repeats, "rounds": args.rounds,
                                      "generated_by": "python bench/q01_test_speed.py",
                                      "elapsed_s": round(time.perf_counter() - t0, 1)})}
    args.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
