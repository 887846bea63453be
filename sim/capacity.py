"""Capacity search: the largest offered load at which a latency percentile meets its objective.

``max_load_within_slo`` finds, for a simulated system whose tail latency grows
with load, the largest load rho in [0, top] (a fraction of capacity) with
P99(rho) <= SLO. Every evaluation should use the same random numbers (common
random numbers), so the P99 curve is a deterministic, nearly monotone function
of rho and a bracketing root search converges in a handful of runs. The search
is regula falsi (Illinois variant) on log(P99 / SLO) against x = -log(1 - rho),
in which a queue's tail latency grows roughly linearly.

``rate_at_utilisation`` finds the rate at which a busy share reaches a target (the
scaling speedup at a fixed utilisation), and ``FarmSearch`` runs both searches on a
balanced replica farm (``sim.balancer``) with common random numbers, optionally with
a shared back end every request calls.
"""
from __future__ import annotations

import math
from typing import Callable


def _feasible_end(f: Callable[[float], float], lo: float, flo: float, hi: float, fhi: float, width: float,
                  close: float, max_evaluations: int, margin: float) -> float:
    """Regula falsi (Illinois) on an increasing f with f(lo) <= 0 < f(hi): the feasible end of the bracket.

    Stops when the bracket is narrower than ``width`` (returning ``lo``) or when |f(x)| < ``close``
    (returning x); each new point stays ``margin`` x the bracket away from its ends.
    """
    side = 0
    for _ in range(max_evaluations):
        if hi - lo < width:
            break
        span = hi - lo
        x = hi - fhi * span / (fhi - flo)  # fhi > 0 >= flo: no division by zero
        x = min(max(x, lo + margin * span), hi - margin * span)
        fx = f(x)
        if fx <= 0:
            lo, flo = x, fx
            if side == -1:
                fhi /= 2
            side = -1
        else:
            hi, fhi = x, fx
            if side == 1:
                flo /= 2
            side = 1
        if abs(fx) < close:
            return x
    return lo


def max_load_within_slo(p99_at: Callable[[float], float], slo: float, p99_at_zero: float, top: float,
                        tolerance: float = 0.005, max_evaluations: int = 40) -> float:
    """Largest load rho in [0, top] (0 <= top < 1) whose ``p99_at(rho)`` is within ``slo``.

    ``p99_at_zero`` is the P99 with no queueing (the service time's own P99). Returns
    ``top`` when it is feasible, 0.0 when even an idle system misses the objective,
    and otherwise the feasible end of a bracket narrower than ``tolerance`` in rho
    (or a load whose P99 is within 0.2% of the objective).
    """
    if not (slo > 0 and 0 <= top < 1):
        raise ValueError(f"need slo > 0 and 0 <= top < 1, got slo={slo!r}, top={top!r}")
    if not p99_at_zero <= slo or top == 0:
        return 0.0
    g = lambda x: math.log(p99_at(1 - math.exp(-x)) / slo)  # noqa: E731
    hi = -math.log(1 - top)
    ghi = g(hi)
    if ghi <= 0:
        return top
    # a bracket of width w in x is narrower than tolerance in rho once 1 - exp(-w) < tolerance
    x = _feasible_end(g, 0.0, math.log(max(p99_at_zero, 1e-300) / slo), hi, ghi, -math.log(1 - tolerance),
                      0.002, max_evaluations, 0.02)
    return 1 - math.exp(-x)


def rate_at_utilisation(utilisation_at: Callable[[float], float], target: float, top: float,
                        tolerance: float = 0.002, max_evaluations: int = 30) -> float:
    """The arrival rate in (0, top] at which ``utilisation_at(rate)`` reaches ``target`` (or ``top``).

    ``utilisation_at`` must grow with the rate from 0 at rate 0 (a busy share, a back end's
    occupancy); evaluate it on common random numbers so it is a deterministic curve. The search
    is regula falsi (Illinois) on ``utilisation_at(rate) - target``, starting from the bracket
    [0, top]; it stops when the bracket is narrower than ``tolerance`` x top or the utilisation
    is within ``tolerance`` (relative) of the target, returning that rate or the bracket's feasible end.
    """
    if not (top > 0 and 0 < target):
        raise ValueError(f"need top > 0 and target > 0, got top={top!r}, target={target!r}")
    fhi = utilisation_at(top) - target
    if fhi <= 0:
        return top
    return _feasible_end(lambda r: utilisation_at(r) - target, 0.0, -target, top, fhi, tolerance * top,
                         tolerance * target, max_evaluations, 0.01)


class FarmSearch:
    """Load searches on one replica farm over common random numbers (the same draws at every load).

    ``unit_arrivals`` are Poisson arrival times at rate 1 (rate r uses ``unit_arrivals / r``),
    ``service`` the inference times, ``backend`` the shared back end's time per call (or None: no
    back end), ``policy(n)`` a fresh balancer for n replicas and ``keys`` the session keys (or None).
    The first ``warmup`` share of requests is left out of every measurement.
    """

    def __init__(self, unit_arrivals, service, policy, mean_service: float, backend=None, keys=None,
                 warmup: float = 0.1):
        import numpy as np

        self.np = np
        self.unit_arrivals = np.asarray(unit_arrivals, dtype=float)
        self.service = np.asarray(service, dtype=float)
        self.backend = None if backend is None else np.asarray(backend, dtype=float)
        self.policy, self.keys, self.mean_service = policy, keys, float(mean_service)
        self.skip = int(self.unit_arrivals.size * warmup)

    def run(self, n: int, rate: float, backend: bool = False):
        """The farm of n replicas at ``rate`` req/s (with the back end if asked and present)."""
        from .balancer import simulate_farm, simulate_farm_backend

        arrivals = self.unit_arrivals / rate
        keys = self.keys if n > 1 else None
        if backend and self.backend is not None:
            run = simulate_farm_backend(arrivals, self.service, self.backend, self.policy(n), n, keys)
        else:
            run = simulate_farm(arrivals, self.service, self.policy(n), n, keys)
        return arrivals, run

    def latency(self, n: int, rate: float):
        """(latency, host) after the warm-up, no back end."""
        arrivals, run = self.run(n, rate)
        return (run.end - arrivals)[self.skip:], run.host[self.skip:]

    def sustainable(self, n: int, slo_s: float, top: float, tolerance: float = 0.005) -> float:
        """Largest rate (req/s) with P99 within ``slo_s``, at most ``top`` x n replicas' capacity."""
        np, mu = self.np, 1.0 / self.mean_service
        own = float(np.percentile(self.service[self.skip:], 99))
        rho = max_load_within_slo(lambda r: float(np.percentile(self.latency(n, r * n * mu)[0], 99)), slo_s, own,
                                  top, tolerance)
        return rho * n * mu

    def busy_per_request(self, n: int, rate: float) -> float:
        """Mean seconds a worker is held per request: the mean inference time plus the mean back-end response."""
        if self.backend is None:
            return self.mean_service
        _, run = self.run(n, rate, backend=True)
        held = (run.end - run.start - self.service)[self.skip:]
        return self.mean_service + float(held.mean())

    def rate_at_utilisation(self, n: int, target: float, share: float, backend_capacity: float = math.inf) -> float:
        """Rate (req/s) at which the busiest replica, taking ``share`` of all requests, is busy ``target`` of the time.

        Utilisation = rate x share x (mean inference time + mean back-end response), the
        back-end response read off the simulated farm; no back end: exactly target / (share x E[S]).
        """
        top = min(target / (share * self.mean_service), backend_capacity * (1 - 1e-9))
        return rate_at_utilisation(lambda r: r * share * self.busy_per_request(n, r), target, top)
