"""Splitting a system into services: blast radius on an endpoint x component graph, cores per latency target.

**Graph.** ``random_system`` draws a system: ``components`` components of which the first
``shared`` sit on every endpoint's path (a gateway, auth, a shared store), and ``endpoints``
endpoints, each calling the shared ones and then a chain of ``fanout`` distinct domain
components in call order. ``blast_radius`` gives the share of endpoints one failing
component takes down, by failure kind and deployment:

* ``crash`` (the process dies): in a monolith every endpoint goes with the one process; in
  services, the endpoints whose path runs through that component.
* ``defect`` (wrong answers or errors from one code path, the process keeps serving): the
  endpoints whose path runs through it, whatever the deployment.
* ``exhaustion`` (a pool, memory or CPU runs out): in a monolith the pool is the process's,
  so every endpoint; in services the component's own endpoints when its callers time out
  (bounded waits and bulkheads), else its callers' workers block on it and run out in turn,
  up the call graph (the cascading failure of the Google SRE book, "Addressing Cascading
  Failures"), so every endpoint whose path meets a blocked component.

**Cores.** ``cores_for_wait`` is the fewest servers of an M/M/c queue (Erlang C, the closed form
``sim.analytic`` validates) whose P95 wait is at most the target. ``core_plan`` sizes a path of components
whose per-request CPU differs (one heavy component, ``ratio`` times the others): a modular
monolith scaled uniformly (every replica keeps one worker share per component, so each share
is as large as the busiest needs: ``partitioned``) or with one pool for all code (``shared``),
against services scaled one by one, each paying its measured hop CPU plus a sidecar whose
cost per 1,000 rps is an input (Istio 1.24 publishes about 0.20 vCPU, REFERENCES.md §28).
``first_where`` finds a crossover: the smallest value from which services need fewer cores.
Differences: failures are one component at a time; a graph has no retries or fallbacks.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np


FAILURE_KINDS = ("crash", "defect", "exhaustion")
FAILING = ("average", "shared", "leaf")


@dataclass(frozen=True)
class System:
    components: int
    shared: int
    paths: tuple[tuple[int, ...], ...]  # per endpoint: component ids in call order

    @property
    def endpoints(self) -> int:
        return len(self.paths)

    @functools.cached_property
    def uses(self) -> np.ndarray:
        """endpoints x components: True where the endpoint's path runs through the component."""
        u = np.zeros((self.endpoints, self.components), dtype=bool)
        for e, path in enumerate(self.paths):
            u[e, list(path)] = True
        return u

    @functools.cached_property
    def callers(self) -> list[set[int]]:
        """For each component, the components that call it on some path."""
        out: list[set[int]] = [set() for _ in range(self.components)]
        for path in self.paths:
            for a, b in zip(path, path[1:]):
                out[b].add(a)
        return out

    def leaves(self) -> list[int]:
        """Components that are used and call nobody on any path."""
        calls = {a for path in self.paths for a in path[:-1]}
        used = {c for path in self.paths for c in path}
        return sorted(used - calls)


def random_system(rng: np.random.Generator, components: int, endpoints: int, fanout: int, shared: int) -> System:
    if not 0 <= shared < components:
        raise ValueError("shared must be in [0, components)")
    domain = np.arange(shared, components)
    k = min(fanout, len(domain))
    paths = tuple(tuple(range(shared)) + tuple(int(x) for x in rng.choice(domain, size=k, replace=False))
                  for _ in range(endpoints))
    return System(components, shared, paths)


def affected(system: System, failing: int, kind: str, deployment: str, caller_timeouts: bool = True) -> np.ndarray:
    """Boolean per endpoint: down when ``failing`` fails this way under ``deployment`` (monolith|services)."""
    if kind not in FAILURE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FAILURE_KINDS)}")
    uses = system.uses
    if deployment == "monolith" and kind in ("crash", "exhaustion"):
        return np.ones(system.endpoints, dtype=bool)
    if deployment not in ("monolith", "services"):
        raise ValueError("deployment must be monolith or services")
    blocked = {failing}
    if deployment == "services" and kind == "exhaustion" and not caller_timeouts:
        callers, todo = system.callers, [failing]
        while todo:  # callers of a blocked component block too
            for a in callers[todo.pop()]:
                if a not in blocked:
                    blocked.add(a)
                    todo.append(a)
    return uses[:, sorted(blocked)].any(axis=1)


def blast_radius(system: System, kind: str, deployment: str, failing: str = "average",
                 caller_timeouts: bool = True) -> float:
    """Mean share of endpoints down when one component fails, over the components ``failing`` names
    (every used component, the shared ones, or the leaves); NaN when there is none of that sort."""
    uses = system.uses
    used = np.flatnonzero(uses.any(axis=0))
    pool = {"average": used, "shared": used[used < system.shared], "leaf": np.array(system.leaves(), dtype=int)}[failing]
    if pool.size == 0:
        return float("nan")
    if deployment == "monolith" and kind in ("crash", "exhaustion"):
        return 1.0
    if deployment == "services" and kind == "exhaustion" and not caller_timeouts:
        return float(np.mean([affected(system, int(c), kind, deployment, caller_timeouts).mean() for c in pool]))
    if kind not in FAILURE_KINDS or deployment not in ("monolith", "services"):
        raise ValueError("unknown failure kind or deployment")
    return float(uses[:, pool].mean(axis=0).mean())  # only the endpoints that run through the component


# ------------------------------------------------------------------------------------------ cores
def wait_quantile(lam: float, service_s: float, c: int, q: float = 0.95) -> float:
    """q-quantile of the M/M/c wait, P(W > t) = C exp(-(c mu - lam) t), with Erlang B from the Poisson
    pmf / cdf (B = pmf(c; a) / cdf(c; a)), so it costs the same for 5 servers or 500,000; inf if unstable."""
    from scipy.special import gammaln, pdtr

    a = lam * service_s
    if c <= a:
        return math.inf
    b = math.exp(c * math.log(a) - a - gammaln(c + 1)) / pdtr(c, a)
    p_wait = c * b / (c - a * (1 - b))
    if q <= 1 - p_wait:
        return 0.0
    return math.log(p_wait / (1 - q)) / (c / service_s - lam)


def cores_for_wait(lam: float, service_s: float, wait_s: float, q: float = 0.95) -> int:
    """Fewest M/M/c servers (cores) with the q-quantile of the wait at most ``wait_s`` (the wait falls as
    servers are added, so a doubling then a bisection finds it)."""
    if lam <= 0 or service_s <= 0:
        return 0
    lo = max(1, math.floor(lam * service_s) + 1)
    if wait_quantile(lam, service_s, lo, q) <= wait_s:
        return lo
    hi = lo * 2
    while wait_quantile(lam, service_s, hi, q) > wait_s:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # wait(lo) > target >= wait(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if wait_quantile(lam, service_s, mid, q) <= wait_s else (mid, hi)
    return hi


@dataclass(frozen=True)
class CorePlan:
    monolith_cores: float       # cores of the monolith's replicas plus its entry sidecar
    services_cores: float       # every service's cores plus all sidecars
    per_service: tuple[int, ...]  # cores of each service
    sidecar_vcpu: float         # sidecar CPU the split adds (internal hops)
    monolith_pool: int = 0      # the monolith's own cores (partitioned: k equal shares)


def core_plan(rate_rps: float, work_s: list[float], hop_cpu_s: float, wait_s: float, sidecar_vcpu_per_krps: float,
              pooling: str = "partitioned") -> CorePlan:
    """Cores a path of components needs so each one's P95 wait stays within ``wait_s`` at ``rate_rps``.

    Monolith: ``partitioned`` = replicas hold one worker share per component, all shares scaled
    together, so k x the busiest share; ``shared`` = one pool serving the whole path. Services: each
    sized alone with ``hop_cpu_s`` extra per call it receives (all but the entry) and per call it
    makes, plus sidecars: one proxy traversal at the entry and two per internal hop (both arms pay
    the entry's)."""
    k = len(work_s)
    hops = k - 1
    if pooling == "partitioned":
        mono = k * max(cores_for_wait(rate_rps, w, wait_s) for w in work_s)
    elif pooling == "shared":
        mono = cores_for_wait(rate_rps, sum(work_s), wait_s)
    else:
        raise ValueError("pooling must be partitioned or shared")
    per = []
    for j, w in enumerate(work_s):
        extra = hop_cpu_s * ((1 if j > 0 else 0) + (1 if j < hops else 0))
        per.append(cores_for_wait(rate_rps, w + extra, wait_s))
    side = sidecar_vcpu_per_krps * rate_rps / 1000.0
    return CorePlan(mono + side, sum(per) + side * (1 + 2 * hops), tuple(per), side * 2 * hops, int(mono))


# ------------------------------------------------------------------------------------------ teams
def weekly_cost_h(engineers: float, services: int, deploys_per_week: float, deploy_h: float, coordination_h: float,
                  ops_h_per_service: float, cores: float, core_week_h: float, split: bool) -> float:
    """Engineer-hours a week (assumed model): pairwise coordination among the engineers who share a
    deployable (n(n-1)/2 pairs x ``coordination_h``), waiting for the release pipeline (M/D/1, one
    pipeline for the monolith, one per team when split; each team releases ``deploys_per_week``), the
    operations overhead of each service when split, and the cores priced in engineer-hours."""
    teams = services
    per_team = engineers / teams
    if split:
        pairs = teams * per_team * (per_team - 1) / 2 + (teams - 1)  # one channel per interface
        pipes, rate = teams, deploys_per_week
    else:
        pairs = engineers * (engineers - 1) / 2
        pipes, rate = 1, deploys_per_week * teams
    rho = rate * deploy_h / 40.0  # a pipeline works a 40-hour week
    if rho >= 1:
        return float("inf")
    wait = rho * deploy_h / (2 * (1 - rho))
    waiting = pipes * rate * wait * per_team
    return coordination_h * max(pairs, 0.0) + waiting + (ops_h_per_service * services if split else 0.0) + \
        cores * core_week_h


def first_where(values, better) -> float:
    """The smallest value from which ``better(v)`` holds at every larger value tried; NaN if never."""
    ok = [bool(better(v)) for v in values]
    if not ok[-1]:
        return float("nan")
    i = len(ok) - 1
    while i > 0 and ok[i - 1]:
        i -= 1
    return float(values[i])
