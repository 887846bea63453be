"""Traffic shifting for a strangler-fig migration: weighted routing, mirroring, a regression monitor.

Reference: Envoy ``RouteAction.weighted_clusters`` and ``request_mirror_policies``
(envoyproxy/data-plane-api ``route_components.proto``) and Istio's
``HTTPRouteDestination.weight`` / ``mirrorPercentage`` (istio/api ``virtual_service.proto``).

* ``WeightedClusters``: weights are relative, the sum must be > 0 and ≤ 2^32−1; each request
  draws a random value, takes it modulo the sum and walks the clusters in order (Envoy's pick);
  a weight of 0 gets nothing, a single cluster everything.
* ``RequestMirrorPolicy``: a copy of a share ``runtime_fraction`` of requests (absent = all) goes
  to the shadow cluster, fire and forget: the user's answer always comes from the primary.
* ``nested_split``: the per-request pick aggregated over a window. With one uniform per request,
  the number routed to a cluster holding weight share w is Binomial(A, w); for several shares
  w1 < w2 < ... the counts are nested (every request counted at w1 is also counted at w2), which
  is what lets arms with different weights share their random numbers. This is where we differ
  from Envoy: it is the distribution of Envoy's per-request choice, not a per-request loop.
* ``window_alarms``: the monitor. At the end of each analysis window (Flagger's ``interval``)
  it runs a one-sided test of the new side's error count against the legacy reference rate,
  once at least ``min_requests`` new-side requests have accumulated (fewer carry over, like
  resilience4j's minimum number of calls). Tests are ``binomial`` (exact tail, conservative)
  or ``z`` (the pooled two-proportion z-test, anti-conservative for rare errors in small
  windows). ``sidak_alpha`` spreads a false-alarm budget over the planned windows.
* ``required_samples``: the two-proportion sample size from REFERENCES §25 (one-sided here), and
  its one-sample form for a reference rate known from a long history.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import bdtrc, ndtr, ndtri

MAX_TOTAL_WEIGHT = 2**32 - 1


class WeightedClusters:
    """Envoy ``weighted_clusters``: ``{cluster name: weight}``, picked per request by a random value."""

    def __init__(self, clusters: dict[str, int]):
        if not clusters:
            raise ValueError("weighted_clusters needs at least one cluster")
        for name, w in clusters.items():
            if int(w) != w or w < 0:
                raise ValueError(f"cluster {name!r}: weight must be a non-negative integer, got {w!r}")
        total = sum(int(w) for w in clusters.values())
        if total <= 0 or total > MAX_TOTAL_WEIGHT:
            raise ValueError(f"the sum of weights must be in [1, {MAX_TOTAL_WEIGHT}], got {total}")
        self.names = tuple(clusters)
        self.weights = np.array([int(w) for w in clusters.values()], dtype=np.int64)
        self.total = total
        self._upper = np.cumsum(self.weights)  # cluster k takes values in [upper[k-1], upper[k])

    def pick(self, random_value: int) -> str:
        """The cluster for one request's random value (Envoy: value % total, then walk in order)."""
        v = int(random_value) % self.total
        return self.names[int(np.searchsorted(self._upper, v, side="right"))]

    def pick_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Indices of the clusters for n requests, one random value each."""
        v = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64) % self.total
        return np.searchsorted(self._upper, v, side="right")

    def shares(self) -> dict[str, float]:
        """Istio's reading: share = weight / sum of weights."""
        return {n: float(w) / self.total for n, w in zip(self.names, self.weights)}


@dataclass(frozen=True)
class RequestMirrorPolicy:
    """Envoy ``request_mirror_policies[]``: ``cluster`` and ``runtime_fraction`` (None = mirror all)."""

    cluster: str
    runtime_fraction: float | None = None

    def __post_init__(self):
        if self.runtime_fraction is not None and not 0.0 <= self.runtime_fraction <= 1.0:
            raise ValueError(f"runtime_fraction must be in [0, 1], got {self.runtime_fraction!r}")

    def mirrored(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Which of n requests send a shadow copy; their users still get the primary's answer."""
        if self.runtime_fraction is None:
            return np.ones(n, dtype=bool)
        return rng.random(n) < self.runtime_fraction


def serve_with_mirror(primary_answers: np.ndarray, shadow_answers: np.ndarray, mirrored: np.ndarray):
    """What users receive and what the shadow cluster's stats see: the shadow never reaches users."""
    return np.asarray(primary_answers).copy(), np.asarray(shadow_answers)[np.asarray(mirrored, dtype=bool)]


def nested_split(rng: np.random.Generator, arrivals: np.ndarray, shares) -> np.ndarray:
    """Counts routed at each of the increasing ``shares``, nested, for arrays of window arrivals.

    Returns shape ``arrivals.shape + (len(shares),)``; entry k is Binomial(A, shares[k]) and
    entry k ≥ entry k−1 (the requests with a random value below a smaller share are a subset).
    """
    shares = [float(s) for s in shares]
    if any(b < a for a, b in zip(shares, shares[1:])) or not all(0.0 <= s <= 1.0 for s in shares):
        raise ValueError(f"shares must increase within [0, 1], got {shares}")
    a = np.asarray(arrivals, dtype=np.int64)
    out = np.zeros(a.shape + (len(shares),), dtype=np.int64)
    taken, prev = np.zeros_like(a), 0.0
    for k, s in enumerate(shares):
        if s > prev:
            # of the requests not yet counted, a share (s - prev) / (1 - prev) falls below s
            p = 1.0 if prev >= 1.0 else min(1.0, (s - prev) / (1.0 - prev))
            taken = taken + rng.binomial(a - taken, p)
        out[..., k] = taken
        prev = max(prev, s)
    return out


def sidak_alpha(alpha: float, tests: int) -> float:
    """Per-test level that keeps P(any false alarm over ``tests`` independent tests) at ``alpha``."""
    return 1.0 - (1.0 - alpha) ** (1.0 / max(1, int(tests)))


def one_sided_pvalue(errors_new, n_new, errors_ref, n_ref, method: str = "binomial") -> np.ndarray:
    """P-value of "the new side fails more often than the reference", elementwise.

    ``z``: pooled two-proportion z statistic, p = 1 − Φ(z). ``binomial``: the reference rate
    e_ref / n_ref taken as known (the legacy's long history), p = P(Binomial(n_new, p_ref) ≥ e_new).
    Windows with no new-side requests get p = 1.
    """
    e1, n1 = np.asarray(errors_new, dtype=float), np.asarray(n_new, dtype=float)
    e0, n0 = np.asarray(errors_ref, dtype=float), np.asarray(n_ref, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "z":
            pooled = (e1 + e0) / (n1 + n0)
            se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
            z = (e1 / n1 - e0 / n0) / se
            p = np.where(se > 0, 1.0 - ndtr(z), np.where(e1 / n1 > e0 / n0, 0.0, 1.0))
        elif method == "binomial":
            k = e1 - 1  # P(X >= e) = P(X > e - 1); bdtrc is the binomial upper tail
            p = np.where(k < 0, 1.0, bdtrc(np.maximum(k, 0).astype(np.int64), n1.astype(np.int64), e0 / n0))
        else:
            raise ValueError(f"method must be 'binomial' or 'z', got {method!r}")
    return np.where(n1 > 0, p, 1.0)


def window_alarms(errors: np.ndarray, requests: np.ndarray, ref_errors, ref_requests,
                  alpha_window: float, min_requests: int = 1, method: str = "binomial",
                  active: np.ndarray | None = None) -> np.ndarray:
    """Index of the first window whose test fires, per row (−1 when none fires).

    ``errors`` and ``requests`` (rows × windows) are the new side's counts per window; counts
    of a window with fewer than ``min_requests`` accumulated requests carry into the next one,
    and a test that does not fire resets the accumulation (windows never overlap).
    ``ref_errors``/``ref_requests`` are the legacy reference counts (a number or one per row);
    ``active`` (rows × windows, optional) marks windows where the monitor runs.
    """
    e, n = np.asarray(errors), np.asarray(requests)
    rows, windows = n.shape
    ref_e = np.broadcast_to(np.asarray(ref_errors, dtype=float), (rows,))
    ref_n = np.broadcast_to(np.asarray(ref_requests, dtype=float), (rows,))
    first = np.full(rows, -1, dtype=np.int64)
    acc_e, acc_n = np.zeros(rows), np.zeros(rows)
    for w in range(windows):
        live = first < 0 if active is None else (first < 0) & active[:, w]
        acc_e += np.where(live, e[:, w], 0)
        acc_n += np.where(live, n[:, w], 0)
        ready = live & (acc_n >= max(1, min_requests))
        if not ready.any():
            continue
        fired = np.zeros(rows, dtype=bool)
        fired[ready] = _fires(acc_e[ready], acc_n[ready], ref_e[ready], ref_n[ready], alpha_window, method)
        first[fired] = w
        acc_e[ready], acc_n[ready] = 0.0, 0.0
    return first


def _fires(e, n, e0, n0, alpha_window: float, method: str) -> np.ndarray:
    """p ≤ alpha_window, computing exact binomial tails only where they could be that small.

    Slud's inequality: for p ≤ 1/4 and e ≥ n p, P(Binomial(n, p) ≥ e) ≥ 1 − Φ((e − n p) / sqrt(n p (1 − p))),
    so where that normal tail exceeds alpha_window the exact test cannot fire either.
    """
    if method != "binomial":
        return one_sided_pvalue(e, n, e0, n0, method) <= alpha_window
    p = e0 / n0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (e - n * p) / np.sqrt(n * p * (1 - p))
    maybe = (e > n * p) & ((p > 0.25) | ~(1.0 - ndtr(z) > alpha_window))
    out = np.zeros(e.shape, dtype=bool)
    out[maybe] = one_sided_pvalue(e[maybe], n[maybe], e0[maybe], n0[maybe], method) <= alpha_window
    return out


def required_samples(p0: float, p1: float, alpha: float = 0.05, power: float = 0.8,
                     reference: str = "known") -> float:
    """New-side requests to tell p1 from p0 with a one-sided test at level alpha and the given power.

    ``equal``: two samples of n each (REFERENCES §25, one-sided):
    n = (z_{1−α} + z_{power})² (p0q0 + p1q1) / (p1 − p0)².
    ``known``: the reference rate p0 is known (the monitor's long legacy history):
    n = (z_{1−α} √(p0q0) + z_{power} √(p1q1))² / (p1 − p0)².
    """
    if p1 <= p0:
        return math.inf
    za, zb = ndtri(1 - alpha), ndtri(power)
    if reference == "equal":
        return float((za + zb) ** 2 * (p0 * (1 - p0) + p1 * (1 - p1)) / (p1 - p0) ** 2)
    if reference == "known":
        return float((za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))) ** 2 / (p1 - p0) ** 2)
    raise ValueError(f"reference must be 'known' or 'equal', got {reference!r}")
