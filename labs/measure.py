"""The measurements builder: every lab's metrics, intervals and reasons for a missing number.

A lab records what it measured through ``Measurements``: percentiles with
batch-means intervals, shares with Wilson intervals, means with t intervals,
ratios and savings between arms. A metric that does not exist at a setting is
recorded with ``missing(arm, key, why)``; its claims then read ``not_measured``
with that reason, never ``fails``. ``fmt_number`` is the one way numbers are
written for people, by labs and faces alike.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from sim.metrics import Interval, batch_means, order_statistic_interval, percentile_ci, ratio_interval, t_interval, wilson

MIN_FOR_INTERVAL = 40  # fewer observations than this: a percentile gets no interval


def fmt_number(x, unit: str = "") -> str:
    """Four significant figures, thousands separated from 10,000; None and NaN read 'n/a'."""
    if x is None:
        return "n/a"
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return str(x)
    v = float(x)
    if not math.isfinite(v):
        return "n/a"
    text = f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    return f"{text} {unit}".rstrip() if unit else text


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


class Measurements:
    """Collects ``metrics[arm][key]``, ``intervals[arm][key] = (low, high)`` and ``reasons[arm][key]``."""

    def __init__(self, arms: Sequence[str]):
        self.metrics: dict[str, dict[str, float]] = {a: {} for a in arms}
        self.intervals: dict[str, dict[str, tuple[float, float]]] = {a: {} for a in arms}
        self.reasons: dict[str, dict[str, str]] = {a: {} for a in arms}

    def _arm(self, arm: str):
        if arm not in self.metrics:
            raise KeyError(f"arm {arm!r} is not declared; arms: {', '.join(self.metrics)}")
        return self.metrics[arm]

    # ---------------------------------------------------------------- recording
    def value(self, arm: str, key: str, v, interval: tuple | Interval | None = None,
              missing: str | None = None) -> float:
        """One number; NaN/None is recorded as not measured, with ``missing`` as the reason."""
        metrics = self._arm(arm)
        if not _finite(v):
            return self.missing(arm, key, missing or "the run produced no value at these settings")
        metrics[key] = float(v)
        if isinstance(interval, Interval):
            interval = (interval.low, interval.high)
        if interval is not None and all(_finite(b) for b in interval):
            self.intervals[arm][key] = (float(interval[0]), float(interval[1]))
        return float(v)

    def missing(self, arm: str, key: str, why: str) -> float:
        self._arm(arm)[key] = float("nan")
        self.reasons[arm][key] = why
        return float("nan")

    def percentiles(self, arm: str, values, qs=(50, 99), key: str = "p{q}_ms", scale: float = 1e3,
                    missing: str = "no request finished in this window") -> None:
        """Percentiles of ``values`` (in arrival order) times ``scale``, with batch-means intervals."""
        x = np.asarray(values, dtype=float) * scale
        for q in qs:
            if x.size == 0:
                self.missing(arm, key.format(q=q), missing)
                continue
            iv = percentile_ci(x, q) if x.size >= MIN_FOR_INTERVAL else None
            self.value(arm, key.format(q=q), float(np.percentile(x, q)), iv)

    def independent_percentiles(self, arm: str, values, qs=(50, 99), key: str = "p{q}_ms", scale: float = 1.0,
                                missing: str = "no request in this window") -> None:
        """Percentiles of independent draws (no queue couples them) with distribution-free order-statistic
        intervals (``sim.metrics.order_statistic_interval``); ``key`` may hold ``{q}``."""
        x = np.asarray(values, dtype=float) * scale
        for q in qs:
            iv = order_statistic_interval(x, q)
            self.value(arm, key.format(q=q), iv.estimate, iv, missing=missing)

    def share(self, arm: str, key: str, k: float, n: float, missing: str = "nothing to count at these settings",
              pct: bool = True) -> float:
        """k out of n as a percentage (or fraction), with a Wilson interval."""
        if n <= 0:
            return self.missing(arm, key, missing)
        iv = wilson(k, n)
        f = 100.0 if pct else 1.0
        return self.value(arm, key, f * iv.estimate, (f * iv.low, f * iv.high))

    def mean(self, arm: str, key: str, samples, missing: str = "no samples at these settings") -> float:
        """Mean of independent replications with a Student-t interval."""
        iv = t_interval(samples)
        if not _finite(iv.estimate):
            return self.missing(arm, key, missing)
        return self.value(arm, key, iv.estimate, iv)

    def batch_mean(self, arm: str, key: str, values, missing: str = "no samples at these settings") -> float:
        """Mean of one correlated series, with a batch-means interval."""
        iv = batch_means(values)
        if not _finite(iv.estimate):
            return self.missing(arm, key, missing)
        return self.value(arm, key, iv.estimate, iv)

    # ---------------------------------------------------------------- between arms
    def interval(self, arm: str, key: str) -> Interval:
        v = self.metrics.get(arm, {}).get(key, float("nan"))
        lo, hi = self.intervals.get(arm, {}).get(key, (float("nan"), float("nan")))
        return Interval(v, lo, hi)

    def ratio(self, arm: str, key: str, num: tuple[str, str], den: tuple[str, str],
              missing: str | None = None) -> float:
        """num / den (each an (arm, metric)), with a conservative interval when both have one."""
        a, b = self.interval(*num), self.interval(*den)
        if not (_finite(a.estimate) and _finite(b.estimate)) or b.estimate == 0:
            why = missing or f"{num[0]} {num[1]} or {den[0]} {den[1]} was not measured (or is zero)"
            return self.missing(arm, key, why)
        return self.value(arm, key, a.estimate / b.estimate, ratio_interval(a, b))

    def saving_pct(self, arm: str, key: str, after: tuple[str, str], before: tuple[str, str],
                   missing: str | None = None) -> float:
        """100 × (1 − after / before): the share of ``before`` that ``after`` saves."""
        a, b = self.interval(*after), self.interval(*before)
        if not (_finite(a.estimate) and _finite(b.estimate)) or b.estimate <= 0:
            why = missing or f"nothing to save: {before[0]} {before[1]} is zero or not measured"
            return self.missing(arm, key, why)
        lo_hi = ratio_interval(a, b)
        iv = (100 * (1 - lo_hi[1]), 100 * (1 - lo_hi[0])) if all(map(_finite, lo_hi)) else None
        return self.value(arm, key, 100.0 * (1 - a.estimate / b.estimate), iv)
