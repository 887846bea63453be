"""Time the explorer's full repaint after a widget change, at settings it has not seen (AppTest).

    python bench/repaint.py [q08 q14 ...] [--changes 5]

For each lab: open its page, skip the prediction, then move its first key numeric knob to
``--changes`` new values near its default (×0.5 … ×2) and time each rerun (simulation + page + chart specs; the
browser then draws Vega-Lite charts itself). Prints the median and the range per lab, and the
machine's load average, so a number from a busy machine is read as such.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from streamlit.testing.v1 import AppTest

    from labs import built_ids, get_lab

    ap = argparse.ArgumentParser()
    ap.add_argument("labs", nargs="*")
    ap.add_argument("--changes", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")
    for lab_id in args.labs or built_ids():
        lab = get_lab(lab_id)
        knob = next(p for p in lab.params if p.key and p.choices is None and p.kind in (int, float))
        at = AppTest.from_string(f"import app\napp.main(start={lab_id!r})", default_timeout=300)
        at.run()
        at.button(key=f"skip_{lab_id}").click().run()
        factors = [0.5, 0.7, 0.85, 1.2, 1.4, 1.7, 2.0][: args.changes]
        values = sorted({min(max(knob.default * f, knob.low), knob.high) for f in factors} - {knob.default})
        times, refused = [], 0
        for v in values:
            w = next(x for x in at.get("slider") + at.get("number_input") if x.key == knob.name)
            w.set_value(int(round(v)) if knob.kind is int else float(v))
            t0 = time.perf_counter()
            at.run()
            spent = time.perf_counter() - t0
            if any("valid run" in x.value for x in at.warning):
                refused += 1  # a cross-parameter rule refused it: no simulation, not a repaint
            else:
                times.append(spent)
        if times:
            print(f"{lab_id}: {knob.name} x{len(times)}: median {statistics.median(times):.2f} s "
                  f"(min {min(times):.2f}, max {max(times):.2f}); {refused} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
