"""Per-request records and the summaries every lab reports.

Requests are recorded in preallocated numpy arrays (a few dozen bytes each,
never a Python object per request) so that a 30k-request run stays cheap and
summaries are vectorised. Times are seconds; summaries report milliseconds
with the unit in the key (``p99_ms``), as the labs' metric tables do.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import stdtrit

# Outcome codes stored per request.
PENDING, OK, ERROR, TIMEOUT, REJECTED, FALLBACK, DROPPED = range(7)
OUTCOME_NAMES = ("pending", "ok", "error", "timeout", "rejected", "fallback", "dropped")


class RequestLog:
    """Fixed-capacity columns: arrival, start (service began), end, outcome, tag.

    ``tag`` is a small integer a lab may use freely (replica index, tenant,
    model version ...). ``arm`` names the arm the log belongs to.
    """

    def __init__(self, capacity: int, arm: str = "baseline"):
        if capacity < 1:
            raise ValueError("RequestLog capacity must be >= 1")
        self.arm = arm
        self.arrival = np.full(capacity, np.nan)
        self.start = np.full(capacity, np.nan)
        self.end = np.full(capacity, np.nan)
        self.outcome = np.zeros(capacity, dtype=np.int8)
        self.tag = np.zeros(capacity, dtype=np.int16)

    def __len__(self):
        return self.arrival.size

    def finished(self) -> np.ndarray:
        return self.outcome != PENDING

    @property
    def latency(self) -> np.ndarray:
        return self.end - self.arrival

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "arm": self.arm,
            "arrival": self.arrival,
            "start": self.start,
            "end": self.end,
            "latency_s": self.latency,
            "outcome": pd.Categorical.from_codes(self.outcome, OUTCOME_NAMES),
            "tag": self.tag,
        })


class TimeWeighted:
    """Time-average of a piecewise-constant quantity (busy servers, queue length)."""

    __slots__ = ("_t0", "_last_t", "_value", "_area", "times", "values")

    def __init__(self, t0: float = 0.0, value: float = 0.0, keep_history: bool = False):
        self._t0 = self._last_t = t0
        self._value = value
        self._area = 0.0
        self.times = [t0] if keep_history else None
        self.values = [value] if keep_history else None

    def update(self, t: float, value: float) -> None:
        self._area += self._value * (t - self._last_t)
        self._last_t = t
        self._value = value
        if self.times is not None:
            self.times.append(t)
            self.values.append(value)

    @property
    def value(self) -> float:
        return self._value

    def mean(self, t: float) -> float:
        span = t - self._t0
        if span <= 0:
            return float(self._value)
        if t < self._last_t:  # the running area already includes time after t
            if self.times is None:
                raise ValueError(f"mean({t!r}) is before the last update at {self._last_t!r}; "
                                 "create with keep_history=True to look back")
            ts, vs = np.asarray(self.times), np.asarray(self.values, dtype=float)
            width = np.clip(np.minimum(np.append(ts[1:], t), t) - ts, 0.0, None)
            return float(np.sum(vs * width)) / span
        return (self._area + self._value * (t - self._last_t)) / span

    def series(self) -> pd.DataFrame:
        if self.times is None:
            raise ValueError("created without keep_history")
        return pd.DataFrame({"time_s": self.times, "value": self.values})


# ---------------------------------------------------------------- confidence intervals
@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_tuple(self):
        return (self.estimate, self.low, self.high)


def _t_quantile(confidence: float, dof: int) -> float:
    """Student-t quantile; scipy.special's is the same number as scipy.stats.t.ppf, at a third of the import."""
    return float(stdtrit(dof, (1 + confidence) / 2))


def t_interval(samples, confidence: float = 0.95) -> Interval:
    """Student-t interval for the mean of independent replications."""
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Interval(np.nan, np.nan, np.nan)
    m = float(x.mean())
    if x.size < 2:
        return Interval(m, np.nan, np.nan)
    h = _t_quantile(confidence, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return Interval(m, m - h, m + h)


def batch_means(values, statistic=np.mean, n_batches: int = 20, confidence: float = 0.95) -> Interval:
    """Interval for a statistic of one long, correlated run by non-overlapping batches.

    The point estimate is the statistic over all values; the interval comes
    from the spread of the statistic across ``n_batches`` consecutive batches
    (the classic batch-means method). ``statistic(array, axis=...)`` must
    reduce along an axis, as numpy's reductions do. Works for percentiles
    too, where it is slightly conservative.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2 * n_batches:
        est = float(statistic(x, axis=0)) if x.size else np.nan
        return Interval(est, np.nan, np.nan)
    est = float(statistic(x, axis=0))
    usable = x[: (x.size // n_batches) * n_batches].reshape(n_batches, -1)
    per_batch = statistic(usable, axis=1)
    h = _t_quantile(confidence, n_batches - 1) * per_batch.std(ddof=1) / np.sqrt(n_batches)
    return Interval(est, est - h, est + h)


def percentile_ci(latencies, q: float, n_batches: int = 20) -> Interval:
    """Batch-means interval for the q-th percentile (q in 0..100), kept inside the observed range."""
    iv = batch_means(latencies, lambda b, axis: np.percentile(b, q, axis=axis), n_batches)
    if not np.isfinite(iv.low):
        return iv
    x = np.asarray(latencies, dtype=float)
    return Interval(iv.estimate, max(iv.low, float(np.nanmin(x))), min(iv.high, float(np.nanmax(x))))


def order_statistic_interval(values, q: float, confidence: float = 0.95, min_n: int = 20) -> Interval:
    """Distribution-free interval for the q-th percentile (q in 0..100) of independent draws.

    The count B of draws below the true quantile is Binomial(n, q/100), so the order
    statistics at ranks lo = F^-1(alpha/2) and hi = F^-1(1 - alpha/2) + 1 of that binomial
    (1-based) bracket the quantile with probability P(lo <= B < hi) >= ``confidence``.
    Exact for continuous data whatever the distribution; valid only for independent values
    (use ``percentile_ci``, batch means, for one correlated series). The estimate is
    ``np.percentile``; bounds are NaN below ``min_n`` values, and when a rank falls outside
    [1, n] (too few draws for a tail quantile: a P99 of 50 values has no upper bound).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return Interval(np.nan, np.nan, np.nan)
    est = float(np.percentile(x, q))
    if n < min_n:
        return Interval(est, np.nan, np.nan)
    lo, hi = _order_ranks(n, q, confidence)
    if lo < 1 or hi > n:
        return Interval(est, np.nan, np.nan)
    xs = np.partition(x, (lo - 1, hi - 1))  # the two order statistics, in O(n) rather than a sort
    return Interval(est, float(xs[lo - 1]), float(xs[hi - 1]))


@functools.lru_cache(maxsize=4096)
def _order_ranks(n: int, q: float, confidence: float) -> tuple[int, int]:
    """The 1-based ranks (lo, hi) of ``order_statistic_interval`` for n draws: binomial quantiles, memoised
    (labs ask for the same few n and q again and again). ``scipy.stats.binom.ppf`` is this ufunc for
    0 < alpha < 1 (a test checks they agree); calling it directly spares importing scipy.stats (seconds
    in a fresh process) and its per-call overhead."""
    try:
        from scipy.special._ufuncs import _binom_ppf
    except ImportError:  # another scipy: the public (slower to import) route
        from scipy.stats import binom

        _binom_ppf = binom.ppf
    alpha = (1 - confidence) / 2
    return int(_binom_ppf(alpha, n, q / 100)), int(_binom_ppf(1 - alpha, n, q / 100)) + 1


# ---------------------------------------------------------------- summaries
def summarize(log: RequestLog, horizon: float | None = None, warmup: float = 0.0,
              ok_outcomes=(OK, FALLBACK)) -> dict[str, float]:
    """Headline metrics of one arm.

    Latency percentiles cover every finished request (errors and timeouts
    included: a caller waits for those too). ``availability_pct`` counts
    ``ok_outcomes`` as answered; ``error_rate_pct`` is the rest.
    """
    done = log.finished() & (log.arrival >= warmup)
    lat = log.latency[done]
    n = int(done.sum())
    if horizon is None:
        horizon = float(np.nanmax(log.end[done])) if n else 0.0
    span = max(horizon - warmup, 1e-12)
    good = np.isin(log.outcome[done], ok_outcomes)
    out = {
        "requests": float(n),
        "mean_ms": float(lat.mean() * 1e3) if n else np.nan,
        "p50_ms": float(np.percentile(lat, 50) * 1e3) if n else np.nan,
        "p95_ms": float(np.percentile(lat, 95) * 1e3) if n else np.nan,
        "p99_ms": float(np.percentile(lat, 99) * 1e3) if n else np.nan,
        "throughput_rps": float(good.sum() / span),
        "availability_pct": float(100.0 * good.mean()) if n else np.nan,
        "error_rate_pct": float(100.0 * (1 - good.mean())) if n else np.nan,
    }
    return out


def percentile_intervals(log: RequestLog, warmup: float = 0.0, qs=(50, 95, 99)) -> dict[str, Interval]:
    """Batch-means confidence bands for the latency percentiles of one arm."""
    done = log.finished() & (log.arrival >= warmup)
    order = np.argsort(log.arrival[done], kind="stable")
    lat_ms = log.latency[done][order] * 1e3
    return {f"p{q}_ms": percentile_ci(lat_ms, q) for q in qs}


def windowed(log: RequestLog, width: float, horizon: float | None = None) -> pd.DataFrame:
    """Per-window time series by arrival time: requests, P50/P99 latency (ms), error share (%)."""
    done = log.finished()
    arr = log.arrival[done]
    if horizon is None:
        horizon = float(arr.max()) if arr.size else 0.0
    n_win = max(int(np.ceil(horizon / width)), 1)
    frame = pd.DataFrame({
        "window": np.clip((arr // width).astype(int), 0, n_win - 1),
        "latency_ms": log.latency[done] * 1e3,
        "failed": ~np.isin(log.outcome[done], (OK, FALLBACK)),
    })
    g = frame.groupby("window")
    out = pd.DataFrame({
        "requests": g.size(),
        "p50_ms": g["latency_ms"].quantile(0.5),
        "p99_ms": g["latency_ms"].quantile(0.99),
        "error_pct": 100.0 * g["failed"].mean(),
    }).reindex(range(n_win))
    out["requests"] = out["requests"].fillna(0).astype(int)
    out.insert(0, "time_s", np.arange(n_win) * width)
    out["arm"] = log.arm
    return out.reset_index(drop=True)


def grouped_percentile(values, group, n_groups: int, q: float) -> np.ndarray:
    """The q-th percentile (0..100) of ``values`` within each group 0..n_groups-1, in one sort.

    Equal to ``np.percentile(values[group == k], q)`` (numpy's default linear
    interpolation) for every non-empty group k; NaN for an empty group.
    """
    values = np.asarray(values, dtype=float)
    group = np.asarray(group, dtype=np.int64)
    out = np.full(n_groups, np.nan)
    if values.size == 0:
        return out
    order = np.lexsort((values, group))
    v = values[order]
    counts = np.bincount(group, minlength=n_groups)[:n_groups]
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    pos = q / 100.0 * (counts[has] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts[has] - 1)
    frac = pos - lo
    out[has] = v[first[has] + lo] * (1 - frac) + v[first[has] + hi] * frac
    return out


def wilson(k: float, n: float, z: float = 1.959964) -> Interval:
    """Wilson score interval for a share k/n (as a fraction); NaN bounds when n is 0."""
    if n <= 0:
        return Interval(np.nan, np.nan, np.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k <= 0 else float(max(0.0, centre - h))  # exact ends: rounding must not lift 0/n above 0
    high = 1.0 if k >= n else float(min(1.0, centre + h))
    return Interval(float(p), low, high)


def ratio_interval(num: Interval, den: Interval) -> tuple[float, float]:
    """A conservative interval for num/den from two intervals of positive quantities (NaN if unknown)."""
    if not (np.isfinite([num.low, num.high, den.low, den.high]).all()) or den.low <= 0 or num.low < 0:
        return (np.nan, np.nan)
    return (num.low / den.high, num.high / den.low)
