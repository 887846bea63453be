"""A sidecar mesh: proxy cost per hop, Envoy's jittered back-off and retry budget, retries through layers.

References (REFERENCES §2, §22, §28):

* **Back-off** is Envoy's router back-off: retry ``n`` (1-based) waits ``U[0, min(cap, (2^n − 1)·base))``
  with ``base_interval`` 25 ms and ``max_interval`` 10 × base = 250 ms (Istio keeps the same base).
  ``envoy_backoff`` draws it.
* **Retry budget** is Envoy's ``retry_budget``: concurrent retries are capped at
  ``max(min_retry_concurrency, budget_percent% × active requests)`` (20% and 3 by default;
  Istio's ``TrafficPolicy.retry_budget`` has the same defaults and ``budget_interval`` 0, so only
  requests active now count). A retry beyond the cap is not sent (Envoy counts it as
  ``upstream_rq_retry_overflow``) and the failure goes back to the caller. Here a retry holds a
  budget slot from the decision to retry (through its back-off) until its answer comes back.
* **Sidecar cost** is Istio's published figure: the client and server proxies together add about
  2.7 ms at P90 at 1,000 rps (1 kB, mutual TLS on, 2 worker threads), and one proxy spends about
  0.20 vCPU per 1,000 rps, i.e. 0.2 ms of CPU per request. ``sidecar_latency`` turns that into a
  queue: each proxy has ``proxy_workers`` Envoy worker threads, a connection is pinned to one
  worker (Envoy does not move connections between workers), and each worker is a FIFO
  single-server queue (the Lindley recursion, vectorised); the rest of the published latency
  (kernel, iptables redirect, buffering) is a fixed delay per proxy, calibrated so that one unloaded
  hop adds the published figure on average.

``retry_chain`` is the SimPy model: ``layers`` services in a chain, each one's sidecar retrying
its call to the next, the last one calling a backend of ``backend_replicas`` single-worker
replicas chosen at random per attempt (no outlier detection). During an outage the first
``down`` replicas fail every attempt fast (a connect failure, ``error_s``); the others keep
serving, so retries pile onto them. Every request has one deadline (the route timeout, which
in Envoy includes all retries): after it no layer starts another attempt; an attempt already
queued at a replica is still served (the server never learns the caller left). No per-try
timeout (Istio's default). Differs from Envoy in: retries on every failure (``retry_on: 5xx,
connect-failure``), no hedging, no outlier ejection, no ``Retry-After``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from .metrics import Interval, _t_quantile

POLICIES = ("immediate", "backoff", "budget")


# ------------------------------------------------------------------ back-off and budget
def envoy_backoff(rng: np.random.Generator, retry: int, base_s: float = 0.025, cap_s: float | None = None) -> float:
    """Envoy's fully jittered back-off before retry ``retry`` (1-based): U[0, min(cap, (2^n − 1)·base))."""
    if retry < 1:
        raise ValueError(f"retry must be >= 1, got {retry}")
    cap = 10 * base_s if cap_s is None else cap_s
    return float(rng.uniform(0.0, min(cap, (2 ** retry - 1) * base_s)))


@dataclass
class RetryBudget:
    """Envoy's ``retry_budget``: concurrent retries ≤ max(min_retry_concurrency, budget_percent% × active)."""

    budget_percent: float = 20.0
    min_retry_concurrency: int = 3
    active: int = 0  # requests (first tries and retries) in flight to the upstream
    retries: int = 0  # retries holding a budget slot
    overflow: int = 0  # retries refused

    def limit(self) -> float:
        return max(float(self.min_retry_concurrency), self.budget_percent / 100.0 * self.active)

    def try_acquire(self) -> bool:
        if self.retries < self.limit():
            self.retries += 1
            return True
        self.overflow += 1
        return False

    def release(self) -> None:
        self.retries -= 1


# ------------------------------------------------------------------ sidecar latency
def fifo_departures(arrivals: np.ndarray, service: np.ndarray) -> np.ndarray:
    """Departures of a single-server FIFO queue (Lindley), for arrivals in any order: d = max(a, d_prev) + s."""
    order = np.argsort(arrivals, kind="stable")
    a, s = arrivals[order], service[order]
    c = np.cumsum(s)
    d = c + np.maximum.accumulate(a - (c - s))
    out = np.empty_like(d)
    out[order] = d
    return out


def proxy_station(arrivals: np.ndarray, cpu_s: np.ndarray, worker: np.ndarray, workers: int,
                  fixed_s: float) -> np.ndarray:
    """One sidecar: each request waits for its connection's worker thread, uses cpu_s, then fixed_s."""
    out = np.empty_like(arrivals)
    for w in range(workers):
        idx = np.flatnonzero(worker == w)
        if idx.size:
            out[idx] = fifo_departures(arrivals[idx], cpu_s[idx])
    return out + fixed_s


def calibrate_fixed_s(added_s: float, cpu_mean_s: float) -> float:
    """Fixed delay per proxy so that two unloaded proxies add ``added_s`` on average.

    Istio's published P90 and P99 differences are within 0.1-0.2 ms of each other, so the added time
    is nearly constant: the published P90 difference is used as the unloaded mean.
    """
    return max(0.0, added_s / 2 - cpu_mean_s)


def cpu_times(rng: np.random.Generator, mean_s: float, cv: float, shape) -> np.ndarray:
    if mean_s <= 0:
        return np.zeros(shape)
    k = 1.0 / cv ** 2
    return rng.gamma(k, mean_s / k, size=shape)


def sidecar_latency(arrivals: np.ndarray, app_s: np.ndarray, net_s: np.ndarray, cpu_s: np.ndarray,
                    worker: np.ndarray, workers: int, fixed_s: float, connect_s: np.ndarray,
                    handshake_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """End-to-end latency through ``hops`` hops, without and with a client and a server sidecar per hop.

    Arrays are (requests, hops) except ``cpu_s`` and ``worker`` (requests, hops, 2: client, server proxy).
    A call on a new connection pays ``connect_s`` (TCP, no mesh) or ``handshake_s`` (mutual TLS between
    the sidecars; on loopback a handshake is CPU, alternating between the two ends, so half of it occupies
    each proxy's worker); 0 when reused.
    """
    n, hops = app_s.shape
    base = arrivals + (net_s + app_s + connect_s).sum(axis=1)
    t = arrivals.astype(float).copy()
    for h in range(hops):
        t = proxy_station(t, cpu_s[:, h, 0] + handshake_s[:, h] / 2, worker[:, h, 0], workers, fixed_s)
        t = t + net_s[:, h]
        t = proxy_station(t, cpu_s[:, h, 1] + handshake_s[:, h] / 2, worker[:, h, 1], workers, fixed_s)
        t = t + app_s[:, h]
    return base - arrivals, t - arrivals


def paired_percentile_diff(a: np.ndarray, b: np.ndarray, q: float, n_batches: int = 20) -> Interval:
    """P_q(b) − P_q(a) over paired series in arrival order, with a batch-means t interval."""
    est = float(np.percentile(b, q) - np.percentile(a, q))
    if a.size < 2 * n_batches:
        return Interval(est, np.nan, np.nan)
    m = (a.size // n_batches) * n_batches
    per = (np.percentile(b[:m].reshape(n_batches, -1), q, axis=1)
           - np.percentile(a[:m].reshape(n_batches, -1), q, axis=1))
    h = _t_quantile(0.95, n_batches - 1) * per.std(ddof=1) / np.sqrt(n_batches)
    return Interval(est, est - h, est + h)


def ratio_reduction(after: np.ndarray, before: np.ndarray) -> Interval:
    """1 − Σafter / Σbefore over paired bins, with a delta-method (ratio estimator) t interval."""
    total = float(np.sum(before))
    if total <= 0:
        return Interval(np.nan, np.nan, np.nan)
    k = before.size
    ratio = float(np.sum(after)) / total
    if k < 2:
        return Interval(1 - ratio, np.nan, np.nan)
    resid = after - ratio * before
    se = np.sqrt(k / (k - 1) * np.sum(resid ** 2)) / total
    h = _t_quantile(0.95, k - 1) * se
    return Interval(1 - ratio, 1 - ratio - h, 1 - ratio + h)


# ------------------------------------------------------------------ retries through layers
@dataclass
class ChainResult:
    ok: np.ndarray  # per request: succeeded before its deadline
    end: np.ndarray  # per request: when its answer (or its failure) reached the client
    attempt_t: np.ndarray  # per backend attempt: when it was sent
    attempt_req: np.ndarray  # per backend attempt: the request it belongs to
    wait_start: np.ndarray  # per queued attempt: when it joined a healthy replica's queue
    wait_end: np.ndarray  # ... and when a worker took it
    overflow: int  # retries the budget refused


def retry_chain(arrivals: np.ndarray, service_s: np.ndarray, policy: str, layers: int, num_retries: int,
                replicas: int, down: int, outage: tuple[float, float] | None, deadline_s: float,
                error_s: float, rng_route: np.random.Generator, rng_backoff: np.random.Generator,
                base_s: float = 0.025, cap_s: float = 0.25, budget_percent: float = 20.0,
                min_retry_concurrency: int = 3) -> ChainResult:
    """Run one retry policy (``immediate``, ``backoff``, ``budget`` = back-off + retry budget) on the chain.

    ``service_s[i]`` is the work of request i at a healthy replica (every attempt of it costs that much).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    env = simpy.Environment()
    free_at = [0.0] * replicas  # when each replica's worker finishes what it has queued
    budgets = [RetryBudget(budget_percent, min_retry_concurrency) for _ in range(layers)]
    n = arrivals.size
    ok = np.zeros(n, dtype=bool)
    end = np.full(n, np.nan)
    att_t: list[float] = []
    att_r: list[int] = []
    w0: list[float] = []
    w1: list[float] = []
    o0, o1 = outage if outage is not None else (np.inf, -np.inf)
    route = rng_route.integers(0, replicas, size=n * 4 + 16)
    pos = [0]
    use_backoff, use_budget = policy != "immediate", policy == "budget"

    def pick() -> int:
        if pos[0] >= route.size:  # a storm ran past the pre-drawn routes: draw more (same stream)
            route.resize(route.size * 2, refcheck=False)
            route[route.size // 2:] = rng_route.integers(0, replicas, size=route.size // 2)
        r = int(route[pos[0]])
        pos[0] += 1
        return r

    def backend(i: int):
        now = env.now
        att_t.append(now)
        att_r.append(i)
        r = pick()
        if r < down and o0 <= now < o1:
            yield env.timeout(error_s)
            return False
        # a single-worker FIFO replica whose queued attempts never leave: the start is known on arrival
        start = max(now, free_at[r])
        free_at[r] = start + service_s[i]
        w0.append(now)
        w1.append(start)
        yield env.timeout(free_at[r] - now)
        return True

    def call(level: int, i: int, deadline: float):
        b = budgets[level]
        retry = 0
        while True:
            b.active += 1
            if level == layers - 1:
                good = yield from backend(i)
            else:
                good = yield from call(level + 1, i, deadline)
            b.active -= 1
            if retry:
                b.release()
            if good:
                return True
            if retry >= num_retries or env.now >= deadline:
                return False
            if use_budget and not b.try_acquire():
                return False
            if not use_budget:
                b.retries += 1  # counted for symmetry; released after the attempt
            retry += 1
            if use_backoff:
                wait = envoy_backoff(rng_backoff, retry, base_s, cap_s)
                if env.now + wait >= deadline:
                    b.release()
                    return False
                yield env.timeout(wait)

    def request(i: int):
        deadline = arrivals[i] + deadline_s
        good = yield from call(0, i, deadline)
        ok[i] = good and env.now <= deadline
        end[i] = min(env.now, deadline)

    def source():
        for i in range(n):
            if arrivals[i] > env.now:
                yield env.timeout(arrivals[i] - env.now)
            env.process(request(i))

    env.process(source())
    env.run()
    return ChainResult(ok, end, np.asarray(att_t), np.asarray(att_r, dtype=int), np.asarray(w0), np.asarray(w1),
                       sum(b.overflow for b in budgets))


def backlog_clear_time(wait_start: np.ndarray, wait_end: np.ndarray, after: float) -> float:
    """First time ≥ ``after`` at which no attempt is waiting for a worker (union of waiting intervals)."""
    mask = wait_end > after
    if not mask.any():
        return after
    s, e = wait_start[mask], wait_end[mask]
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    reach = np.maximum.accumulate(e)
    t = after
    for k in range(s.size):
        if s[k] > t:
            return t
        t = max(t, reach[k])
    return t
