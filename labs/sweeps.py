"""Sweeps with replications: one task per (lab, parameters, replication), on joblib.

Each task's seed comes from ``SeedSequence`` over the lab id, the fixed parameters
and the replication number, never from the order or the worker, so a sweep gives
the same numbers on any backend and worker count. The values being varied share
a replication's seed: neighbouring settings meet common random numbers.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from typing import Callable

import numpy as np

from sim.metrics import t_interval

from .contract import json_number
from .registry import get_lab


def replication_seed(lab_id: str, fixed: dict, rep: int) -> int:
    digest = hashlib.sha256(json.dumps([lab_id, sorted(fixed.items()), rep], default=str).encode()).digest()
    entropy = int.from_bytes(digest[:16], "little")
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


def _point(lab_id: str, seed: int, params: dict) -> dict:
    return get_lab(lab_id).run(seed=seed, **params).metrics


def sweep(lab_id: str, base: dict, vary: dict[str, list], reps: int = 1, jobs: int = 1,
          progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Rows of (values, arm, metric, mean, ci_low, ci_high, reps) over the grid of ``vary``."""
    from joblib import Parallel, delayed

    lab = get_lab(lab_id)
    names = list(vary)
    fixed = {k: v for k, v in lab.settings(base).items() if k not in vary}
    grid = list(itertools.product(*vary.values()))
    for combo in grid:  # refuse a forbidden point before any simulation time is spent
        lab.settings({**base, **dict(zip(names, combo))})
    tasks = [(combo, rep) for combo in grid for rep in range(reps)]
    seeds = [replication_seed(lab.id, fixed, rep) for rep in range(reps)]
    results = []
    runner = Parallel(n_jobs=jobs, return_as="generator")
    for k, m in enumerate(runner(delayed(_point)(lab.id, seeds[rep], {**base, **dict(zip(names, combo))})
                                 for combo, rep in tasks), 1):
        results.append(m)
        if progress:
            progress(k, len(tasks))
    rows = []
    for gi, combo in enumerate(grid):
        chunk = results[gi * reps:(gi + 1) * reps]
        for arm in chunk[0]:
            for metric in chunk[0][arm]:
                ci = t_interval([c[arm][metric] for c in chunk])
                rows.append({**dict(zip(names, combo)), "arm": arm, "metric": metric,
                             "mean": json_number(ci.estimate), "ci_low": json_number(ci.low),
                             "ci_high": json_number(ci.high), "reps": reps})
    return rows
