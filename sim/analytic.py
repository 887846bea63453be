"""Closed-form queueing results and exact sample-path recursions.

This module is the yardstick for the simulator. The simulator is trusted only
where it matches these: the closed forms (M/M/1, M/M/c via Erlang C, M/D/1,
M/G/1 via Pollaczek-Khinchine) check long-run averages, and the recursions
(Lindley, Kiefer-Wolfowitz) check every customer's wait on the *same* sampled
inputs, with no statistical slack at all.

Conventions: consistent time units (seconds); ``lam`` is the arrival rate and
``mu`` the service rate of one server; ``c`` is the number of servers; FIFO
discipline. Unstable (rho >= 1) or invalid inputs raise ``ValueError``.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "QueueStats", "mm1", "erlang_c", "mmc", "md1", "mg1",
    "mmc_wait_quantile", "mm1_sojourn_quantile", "littles_law_l",
    "lindley", "kiefer_wolfowitz", "departures_fifo",
]


@dataclass(frozen=True)
class QueueStats:
    """Steady-state means of a queue.

    rho: per-server utilisation; wq / w: mean wait in queue / mean sojourn
    (wait + service); lq / l: mean number waiting / in system;
    p_wait: probability that an arrival has to wait.
    """

    rho: float
    wq: float
    w: float
    lq: float
    l: float
    p_wait: float


# ----------------------------------------------------------------- validation

def _nonneg(name, x) -> float:
    x = float(x)
    if not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    return x


def _pos(name, x) -> float:
    x = _nonneg(name, x)
    if x == 0:
        raise ValueError(f"{name} must be > 0, got {x!r}")
    return x


def _servers(c) -> int:
    if isinstance(c, bool) or not (isinstance(c, (int, np.integer)) or float(c).is_integer()) or c < 1:
        raise ValueError(f"number of servers c must be an integer >= 1, got {c!r}")
    return int(c)


def _stable(rho: float) -> float:
    if rho >= 1:
        raise ValueError(f"unstable queue: utilisation rho = {rho:.6g} >= 1")
    return rho


def _quantile(q) -> float:
    q = float(q)
    if not 0 <= q < 1:
        raise ValueError(f"quantile q must be in [0, 1), got {q!r}")
    return q


def _stats(lam, wq, mean_service, rho, p_wait) -> QueueStats:
    w = wq + mean_service
    return QueueStats(rho=rho, wq=wq, w=w, lq=lam * wq, l=lam * w, p_wait=p_wait)


# ---------------------------------------------------------------- closed forms

def mm1(lam, mu) -> QueueStats:
    """M/M/1: Wq = rho / (mu - lam), W = 1 / (mu - lam), P(wait) = rho."""
    lam, mu = _nonneg("lam", lam), _pos("mu", mu)
    rho = _stable(lam / mu)
    return _stats(lam, rho / (mu - lam), 1 / mu, rho, rho)


def erlang_c(c, a) -> float:
    """P(an arrival waits) in M/M/c with offered load a = lam / mu (Erlang C).

    Via the Erlang B recursion B(k) = a B(k-1) / (k + a B(k-1)), which never
    forms a^c or c!, so it is stable for thousands of servers.
    """
    c, a = _servers(c), _nonneg("offered load a", a)
    _stable(a / c)
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1 - b))


def mmc(lam, mu, c) -> QueueStats:
    """M/M/c: P(wait) = Erlang C, Wq = C / (c mu - lam)."""
    lam, mu, c = _nonneg("lam", lam), _pos("mu", mu), _servers(c)
    rho = _stable(lam / (c * mu))
    p = erlang_c(c, lam / mu)
    return _stats(lam, p / (c * mu - lam), 1 / mu, rho, p)


def mg1(lam, mean_service, scv) -> QueueStats:
    """M/G/1 by Pollaczek-Khinchine: Wq = rho E[S] (1 + scv) / (2 (1 - rho)).

    ``scv`` is the squared coefficient of variation of service, Var[S]/E[S]^2.
    """
    lam, es, scv = _nonneg("lam", lam), _pos("mean_service", mean_service), _nonneg("scv", scv)
    rho = _stable(lam * es)
    return _stats(lam, rho * es * (1 + scv) / (2 * (1 - rho)), es, rho, rho)


def md1(lam, service_time) -> QueueStats:
    """M/D/1: Pollaczek-Khinchine with scv = 0 (half the M/M/1 queueing delay)."""
    return mg1(lam, service_time, 0.0)


def mmc_wait_quantile(lam, mu, c, q) -> float:
    """q-quantile of the FIFO wait in M/M/c: P(Wq > t) = C exp(-(c mu - lam) t).

    Zero when q <= 1 - C (that fraction of arrivals does not wait at all).
    """
    q = _quantile(q)
    p = mmc(lam, mu, c).p_wait
    if q <= 1 - p:
        return 0.0
    return math.log(p / (1 - q)) / (_servers(c) * float(mu) - float(lam))


def mm1_sojourn_quantile(lam, mu, q) -> float:
    """q-quantile of M/M/1 FIFO sojourn time, which is Exp(mu - lam)."""
    q = _quantile(q)
    mm1(lam, mu)  # validates
    return -math.log1p(-q) / (float(mu) - float(lam))


def littles_law_l(lam, w) -> float:
    """Little's law, L = lam W (any stable system, any discipline)."""
    return _nonneg("lam", lam) * _nonneg("w", w)


# ------------------------------------------------------------------ recursions

_BLOCK = 128  # Lindley block length: bounds partial-sum magnitudes (rounding)


def _inputs(interarrivals, services) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(interarrivals, dtype=float)
    s = np.asarray(services, dtype=float)
    if a.ndim != 1 or a.shape != s.shape:
        raise ValueError(f"interarrivals and services must be 1-D of equal length, got {a.shape} and {s.shape}")
    for name, x in (("interarrivals", a), ("services", s)):
        if not np.all(np.isfinite(x) & (x >= 0)):
            raise ValueError(f"{name} must be finite and >= 0")
    return a, s


def lindley(interarrivals, services) -> np.ndarray:
    """Wait in queue of each customer at a single FIFO server (Lindley).

    W_0 = 0, W_{n+1} = max(0, W_n + S_n - A_{n+1}); ``interarrivals[i]`` is the
    gap before customer i (``interarrivals[0]`` only places the first arrival).

    Vectorised via the cumulative-max form W_n = X_n - min_{k<=n} X_k with
    X = cumsum(S_n - A_{n+1}), but applied per block of ``_BLOCK`` customers:
    a block starting with wait w0 and local partial sums Y (Y_0 = 0) has
    W_j = max(w0 + Y_j, Y_j - min_{k<=j} Y_k), and only the carried w0 needs a
    (short) loop over blocks. One global cumsum drifts to -n(1-rho)E[S] and
    the subtraction then cancels ~1e-11 at 1e5 customers; blocks keep every
    partial sum small, so the result agrees with the plain loop to rounding.
    """
    a, s = _inputs(interarrivals, services)
    if a.size < 2:
        return np.zeros(a.size)
    d = s[:-1] - a[1:]
    nb = -(-d.size // _BLOCK)
    padded = np.zeros(nb * _BLOCK)  # zero increments leave waits unchanged
    padded[: d.size] = d
    y = np.cumsum(padded.reshape(nb, _BLOCK), axis=1)
    r = y - np.minimum(np.minimum.accumulate(y, axis=1), 0.0)  # waits if block starts empty
    w0 = np.empty(nb)
    carry = 0.0
    for b, (y_end, r_end) in enumerate(zip(y[:, -1].tolist(), r[:, -1].tolist())):
        w0[b] = carry
        carry = max(carry + y_end, r_end)
    w = np.maximum(w0[:, None] + y, r).ravel()[: d.size]
    return np.concatenate(([0.0], w))


def kiefer_wolfowitz(interarrivals, services, c) -> np.ndarray:
    """Wait in queue of each customer of a FIFO c-server queue (G/G/c).

    Kiefer-Wolfowitz: with V the sorted residual workloads of the c servers,
    customer n waits V[0], then V[0] += S_n and V = sort(max(V - A_{n+1}, 0)).
    Implemented with a heap of server free times on a local clock t, so that
    V = max(free - t, 0) in heap order; subtracting t from all c entries
    (the O(c) step) is done lazily, once every c customers, which keeps the
    numbers near the size of the waits (no drift to large absolute times) at
    O(log c) amortised cost per customer. For c = 1 this is Lindley.
    """
    a, s = _inputs(interarrivals, services)
    c = _servers(c)
    free = [0.0] * c  # a valid heap
    t = 0.0
    waits = [0.0] * a.size
    for n, (gap, svc) in enumerate(zip(a.tolist(), s.tolist())):
        t += gap if n else 0.0
        if n % c == 0:  # rebase the clock; a monotone map keeps the heap valid
            free = [f - t if f > t else 0.0 for f in free]
            t = 0.0
        f = free[0]
        if f > t:
            waits[n] = f - t
            heapq.heapreplace(free, f + svc)
        else:
            heapq.heapreplace(free, t + svc)
    return np.array(waits)


def departures_fifo(arrivals, services, c) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of service for each customer, from absolute arrival times.

    ``arrivals`` must be non-decreasing and >= 0; customers are served FIFO by
    c servers (Kiefer-Wolfowitz waits). ``end`` is not sorted when c > 1.
    """
    t = np.asarray(arrivals, dtype=float)
    if t.ndim != 1 or (t.size and (t[0] < 0 or np.any(np.diff(t) < 0))):
        raise ValueError("arrivals must be a 1-D, non-decreasing array of times >= 0")
    gaps = np.diff(t, prepend=0.0)
    start = t + kiefer_wolfowitz(gaps, services, c)
    return start, start + np.asarray(services, dtype=float)


def departures_fifo_limited(arrivals, services, c: int, queue: float) -> tuple[np.ndarray, int]:
    """End of service for each customer of a FIFO queue with ``c`` servers and at most ``queue`` waiting
    (G/G/c/c+queue): an arrival that finds every server busy and the queue full is refused (end NaN).
    Returns (end, refused). With ``queue`` = inf it equals :func:`departures_fifo`'s end."""
    t = np.asarray(arrivals, dtype=float)
    s = np.asarray(services, dtype=float)
    free = [0.0] * int(c)  # when each server is next free (a heap)
    waiting: list[float] = []  # start times of accepted customers that have not started yet (a heap)
    end = np.full(t.size, np.nan)
    refused = 0
    for i, at in enumerate(t):
        while waiting and waiting[0] <= at:  # customers that have started by now left the queue
            heapq.heappop(waiting)
        if free[0] > at and len(waiting) >= queue:
            refused += 1
            continue
        begin = max(at, heapq.heappop(free))
        heapq.heappush(free, begin + s[i])
        if begin > at:
            heapq.heappush(waiting, begin)
        end[i] = begin + s[i]
    return end, refused
