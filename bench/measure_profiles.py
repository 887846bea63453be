"""Regenerate the reference latency profiles in data/profiles/.

    python3 bench/measure_profiles.py                 # all four models
    python3 bench/measure_profiles.py mlp mlp_int8    # some of them
    python3 bench/measure_profiles.py --out /tmp/p    # somewhere else
    python3 bench/measure_profiles.py --wait-quiet 600  # wait for a quiet machine
    python3 bench/measure_profiles.py --widths 256,1024,2048  # mlp and mlp_int8 per hidden
                                                      # width -> mlp_w1024.json, mlp_int8_w1024.json

Trains the models first if they are not in the model cache (see sim.models),
then times them with sim.profiles.measure_profile (single-threaded, warm-up
first, round-robin over batch sizes) and writes ``<model>.json`` with the
machine's provenance. Run it on a quiet machine: the labs, tests and notebooks
read these files instead of timing live, so whatever noise is in them is in
every lab.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.models import MLP_WIDTHS, MODEL_NAMES, get_model, measure_plan  # noqa: E402
from sim.profiles import (  # noqa: E402
    DEFAULT_BATCH_SIZES,
    MAX_SAMPLES_PER_BATCH,
    REFERENCE_DIR,
    measure_profile,
    width_profile_name,
)


def _wait_quiet(max_wait: float, max_load: float) -> None:
    deadline = time.monotonic() + max_wait
    while True:
        load = os.getloadavg()[0]
        if load < max_load:
            return
        if time.monotonic() >= deadline:
            print(f"          machine still busy (load {load:.2f}); measuring anyway", flush=True)
            return
        time.sleep(5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help=f"any of {', '.join(MODEL_NAMES)} (default: all)")
    ap.add_argument("--out", type=Path, default=REFERENCE_DIR, help="output folder (default data/profiles)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=None, help="override the per-model default")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="before each model, wait up to SECONDS for the 1-minute load "
                         "average to drop below --max-load (default: don't wait)")
    ap.add_argument("--max-load", type=float, default=0.7)
    ap.add_argument("--widths", default=None, metavar="H,H,...",
                    help=f"measure mlp and mlp_int8 at these hidden widths (of {MLP_WIDTHS}) into "
                         "<model>_w<H>.json instead of the named models")
    args = ap.parse_args(argv)
    if args.widths:
        widths = [int(x) for x in args.widths.split(",")]
        if set(widths) - set(MLP_WIDTHS):
            ap.error(f"widths must be among {MLP_WIDTHS}")
        jobs = [(m, h, width_profile_name(m, h)) for h in widths for m in (args.models or ["mlp", "mlp_int8"])]
    else:
        jobs = [(m, None, m) for m in (args.models or list(MODEL_NAMES))]
    unknown = sorted({m for m, _, _ in jobs} - set(MODEL_NAMES))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(MODEL_NAMES)}")

    t_all = time.perf_counter()
    for name, hidden, stem in jobs:
        t0 = time.perf_counter()
        model = get_model(name, args.seed) if hidden is None else get_model(name, args.seed, hidden)
        t_model = time.perf_counter() - t0
        r, w = measure_plan(name) if hidden is None else measure_plan(name, hidden)
        repeats = min(args.repeats or r, MAX_SAMPLES_PER_BATCH)
        warmup = w if args.warmup is None else args.warmup
        if args.wait_quiet > 0:
            _wait_quiet(args.wait_quiet, args.max_load)
        t0 = time.perf_counter()
        prof = measure_profile(model, DEFAULT_BATCH_SIZES, repeats=repeats, warmup=warmup)
        t_measure = time.perf_counter() - t0
        prof.provenance["model_seed"] = args.seed
        prof.provenance["generated_by"] = "bench/measure_profiles.py"
        path = args.out / f"{stem}.json"
        prof.to_json(path)
        load = prof.provenance.get("loadavg_1m_before")
        meds = "  ".join(f"b{b}={prof.median(b) * 1e6:.0f}" for b in prof.batch_sizes)
        print(f"{stem:14s} acc={prof.accuracy:.4f} model {t_model:.2f}s measure {t_measure:.2f}s "
              f"({'cached' if model.from_cache else 'trained'}, load {load}) medians us: {meds}")
        print(f"          -> {path} ({path.stat().st_size / 1024:.0f} KiB)")
    print(f"total {time.perf_counter() - t_all:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
