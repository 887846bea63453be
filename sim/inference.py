"""An inference server fed measured call times: scaled service, capacity within a latency objective, load sweeps.

Building blocks for labs that put a dynamic batcher (:mod:`sim.batcher`) in front of a
real model whose per-call times were measured (:mod:`sim.profiles`):

* :func:`scaled` multiplies a measured distribution by a constant (the measured shape,
  at another size of model or machine);
* :func:`p99_at_rate` / :func:`capacity_within_slo`: the highest offered rate whose P99
  stays within an objective, searched with :func:`sim.capacity.max_load_within_slo` on
  common random numbers (the same unit-rate arrivals, divided by the rate);
* :func:`load_sweep`: throughput, P50/P99 and utilization over a geometric grid of loads;
* :func:`speedup_table`: medians of two profiles per batch size and their ratio;
* :func:`cpu_differs`: whether a stored profile was measured on another CPU model.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .batcher import DynamicBatchingConfig, simulate_batching
from .capacity import max_load_within_slo
from .dist import Empirical

#: The capacity search looks for loads up to this fraction of the saturation throughput.
TOP_LOAD = 0.98


def scaled(dist: Empirical, factor: float) -> Empirical:
    """``dist`` with every sample multiplied by ``factor`` (same shape, same coefficient of variation)."""
    return dist if factor == 1 else Empirical(np.asarray(dist.samples) * float(factor))


def p99_at_rate(unit_arrivals: np.ndarray, rate: float, cfg: DynamicBatchingConfig, service) -> float:
    """P99 latency (s) of the batcher at ``rate`` req/s, arrivals ``unit_arrivals / rate``."""
    run = simulate_batching(unit_arrivals / rate, cfg, service)
    return float(np.percentile(run.latency, 99))


def capacity_within_slo(unit_arrivals: np.ndarray, cfg: DynamicBatchingConfig, service, saturation_rps: float,
                        slo_s: float, tolerance: float = 0.01) -> float:
    """The highest offered rate (req/s) whose P99 is within ``slo_s``; 0 when even a nearly idle server misses it.

    Searches loads rho in [0, ``TOP_LOAD``] of ``saturation_rps`` (the server's throughput with an always-full
    queue), every evaluation on the same arrivals (common random numbers).
    """
    idle = p99_at_rate(unit_arrivals, 1e-3 * saturation_rps, cfg, service)
    rho = max_load_within_slo(lambda r: p99_at_rate(unit_arrivals, max(r, 1e-6) * saturation_rps, cfg, service),
                              slo_s, idle, TOP_LOAD, tolerance=tolerance)
    return rho * saturation_rps


def saturation_rps(cfg: DynamicBatchingConfig, service, requests: int, min_batches: int = 2000) -> float:
    """Completions per second with an always-full queue (every request there at time 0)."""
    b = cfg.saturated_batch_size
    backlog = b * max(-(-requests // b), min_batches)
    run = simulate_batching(np.zeros(backlog), cfg, service)
    return backlog / float(run.batch_end.max())


def load_sweep(unit_arrivals: np.ndarray, rates, arms: dict, saturation: dict, base_requests: int) -> pd.DataFrame:
    """Throughput, P50, P99, utilization and mean batch per arm over ``rates`` (same random numbers at each).

    ``arms`` maps an arm to ``(config, service)``. A point at rate r uses the first
    ``base_requests x max(1, r / lowest saturation)`` arrivals, so points far above the slowest arm's
    capacity still span many full batches.
    """
    low = min(saturation.values())
    rows = []
    for r in rates:
        m = int(min(unit_arrivals.size, base_requests * max(1.0, r / low)))
        a = unit_arrivals[:m] / r
        window = float(a[-1])
        for arm, (cfg, svc) in arms.items():
            run = simulate_batching(a, cfg, svc)
            lat_ms = run.latency * 1e3
            rows.append({"arm": arm, "offered_rps": float(r), "requests": m,
                         "throughput_rps": run.completed_by(window) / window,
                         "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
                         "utilization_pct": 100.0 * run.utilization(window), "mean_batch_size": run.mean_batch_size(),
                         "saturation_rps": saturation[arm], "overloaded": bool(r >= saturation[arm])})
    order = list(arms)
    return pd.DataFrame(rows).sort_values(["arm", "offered_rps"], key=lambda c: c.map(order.index) if c.name == "arm"
                                          else c, kind="stable").reset_index(drop=True)


def speedup_table(fp, q8) -> pd.DataFrame:
    """Median ms per call of two profiles at every batch size both measured, and fp / q8."""
    sizes = [b for b in fp.batch_sizes if b in q8.batch_sizes]
    df = pd.DataFrame({"batch_size": sizes,
                       "fp32_ms": [1e3 * fp.median(b) for b in sizes],
                       "int8_ms": [1e3 * q8.median(b) for b in sizes]}).set_index("batch_size")
    df["speedup_x"] = df["fp32_ms"] / df["int8_ms"]
    return df


def cpu_differs(profile, here: str) -> bool:
    """True when ``profile`` says it was measured on a CPU model other than ``here`` (unknown counts as other)."""
    cpu = str(profile.provenance.get("cpu", "")).strip()
    return not cpu or cpu != here.strip()


def geometric_rates(saturation: dict, extra: float, points: int) -> np.ndarray:
    """``points`` rates from 0.2x the lowest to 1.3x the highest saturation, plus ``extra``."""
    lo, hi = 0.2 * min(saturation.values()), 1.3 * max(saturation.values())
    if not (math.isfinite(lo) and lo > 0):
        return np.array([extra])
    return np.unique(np.concatenate((np.geomspace(lo, hi, points), [extra])))
