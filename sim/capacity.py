"""Capacity search: the largest offered load at which a latency percentile meets its objective.

``max_load_within_slo`` finds, for a simulated system whose tail latency grows
with load, the largest load rho in [0, top] (a fraction of capacity) with
P99(rho) <= SLO. Every evaluation should use the same random numbers (common
random numbers), so the P99 curve is a deterministic, nearly monotone function
of rho and a bracketing root search converges in a handful of runs. The search
is regula falsi (Illinois variant) on log(P99 / SLO) against x = -log(1 - rho),
in which a queue's tail latency grows roughly linearly.
"""
from __future__ import annotations

import math
from typing import Callable


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
    if not p99_at_zero <= slo:
        return 0.0
    if top == 0:
        return 0.0
    g = lambda x: math.log(p99_at(1 - math.exp(-x)) / slo)  # noqa: E731
    lo, glo = 0.0, math.log(max(p99_at_zero, 1e-300) / slo)
    hi = -math.log(1 - top)
    ghi = g(hi)
    if ghi <= 0:
        return top
    side = 0
    for _ in range(max_evaluations):
        if (1 - math.exp(-hi)) - (1 - math.exp(-lo)) < tolerance:
            break
        span = hi - lo
        x = hi - ghi * span / (ghi - glo)  # ghi > 0 >= glo: no division by zero
        x = min(max(x, lo + 0.02 * span), hi - 0.02 * span)  # inside the bracket, away from its ends
        gx = g(x)
        if gx <= 0:
            lo, glo = x, gx
            if side == -1:
                ghi /= 2
            side = -1
        else:
            hi, ghi = x, gx
            if side == 1:
                glo /= 2
            side = 1
        if abs(gx) < 0.002:  # P99 within 0.2% of the objective: take this load
            lo = x
            break
    return 1 - math.exp(-lo)
