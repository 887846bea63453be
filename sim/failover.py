"""DNS failover between regions: Route 53-style health checks and resolver caches with a TTL.

Reference semantics (Amazon Route 53 Developer Guide, "How Amazon Route 53
determines whether a health check is healthy", and the ``HealthCheckConfig``
API; see ArchLab REFERENCES.md section 13):

* Health checkers in several locations probe an endpoint every
  ``request_interval`` seconds (Route 53 allows 10 or 30, default 30). The
  checkers do not coordinate, so each runs at its own phase.
* Each checker changes its view of the endpoint after ``failure_threshold``
  consecutive probes disagree with it (1-10, default 3); the same count
  applies in both directions (healthy -> unhealthy and back).
* Route 53 considers the endpoint healthy when **more than 18%** of the
  checkers report it healthy.
* A probe's verdict arrives ``result_delay`` seconds after it is sent: 0 for a
  refused connection or an error status, up to the 4 s connect limit (+2 s to
  first byte) for an endpoint that does not answer.
* Latency-based routing answers with the healthy record of lowest latency
  for the querying area. Health is the status last computed by the checkers
  (nothing is probed when a query arrives), and when no record in the group is
  healthy Route 53 treats them all as healthy, since it must answer something
  ("How Amazon Route 53 chooses records when health checking is configured";
  read in its zh_CN translation).

DNS caching (RFC 1035/2181 TTL semantics): a recursive resolver keeps an answer
for ``ttl`` seconds. Every client sits behind one resolver. A resolver that
serves many clients is queried continuously, so it re-fetches as soon as its
entry expires: it refreshes at ``phase + k * ttl`` with its own ``phase`` in
[0, ttl). A request at time t therefore uses the answer the authoritative
server gave at the resolver's last refresh at or before t, and a resolver
that still holds the failed region's address keeps sending its clients there
until its next refresh. ``ttl = 0`` (or below ``MIN_TTL``, a microsecond) means every request resolves afresh.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .components import FaultSchedule, Outage

ROUTE53_REQUEST_INTERVALS = (10, 30)
MIN_TTL = 1e-6  # s: a shorter TTL is no cache at all (and would overflow refresh arithmetic)
_EPS = 1e-9  # in TTL units: a time within float error of a refresh instant counts as that instant


@dataclass(frozen=True)
class HealthCheckConfig:
    """Route 53 health-check settings (names in snake_case; defaults are Route 53's)."""

    request_interval: float = 30.0
    failure_threshold: int = 3
    checkers: int = 8  # one per default health-checker region (us-east-1 ... sa-east-1)
    healthy_threshold_pct: float = 18.0  # healthy when MORE than this share of checkers say healthy
    result_delay: float = 0.0

    def __post_init__(self):
        if not self.request_interval > 0:
            raise ValueError(f"request_interval must be > 0 s, got {self.request_interval!r}")
        if int(self.failure_threshold) != self.failure_threshold or not 1 <= self.failure_threshold <= 10:
            raise ValueError(f"failure_threshold must be an integer in [1, 10], got {self.failure_threshold!r}")
        if int(self.checkers) != self.checkers or self.checkers < 1:
            raise ValueError(f"checkers must be a positive integer, got {self.checkers!r}")
        if not 0 <= self.healthy_threshold_pct < 100:
            raise ValueError(f"healthy_threshold_pct must be in [0, 100), got {self.healthy_threshold_pct!r}")
        if not 0 <= self.result_delay < self.request_interval:
            raise ValueError(f"result_delay must be in [0, request_interval), got {self.result_delay!r}")

    @property
    def min_healthy_checkers(self) -> int:
        """Fewest checkers reporting healthy for Route 53 to call the endpoint healthy."""
        # n healthy checkers suffice when n / checkers > pct / 100 (the 1e-9 absorbs float error at equality)
        return int(np.floor(self.checkers * self.healthy_threshold_pct / 100 + 1e-9)) + 1


@dataclass(frozen=True)
class HealthTimeline:
    """Route 53's aggregated view of one endpoint: healthy from ``times[k]`` while ``healthy[k]``.

    Starts healthy at time 0; ``checker_changes`` keeps each checker's own (time, healthy) flips.
    """

    times: np.ndarray
    healthy: np.ndarray
    checker_changes: tuple[tuple[tuple[float, bool], ...], ...] = ()

    @classmethod
    def always_healthy(cls) -> "HealthTimeline":
        return cls(np.array([0.0]), np.array([True]))

    def healthy_at(self, t):
        """Vectorised status at time(s) t (a change at t already applies at t)."""
        k = np.searchsorted(self.times, t, side="right") - 1
        return self.healthy[np.clip(k, 0, None)]

    def first_change_after(self, t: float, to_healthy: bool) -> float:
        """Time of the first change to ``to_healthy`` at or after t (nan if none)."""
        hit = (self.times >= t) & (self.healthy == to_healthy)
        return float(self.times[hit][0]) if hit.any() else float("nan")


def _checker_flips(config: HealthCheckConfig, faults: FaultSchedule, phase: float,
                   horizon: float) -> list[tuple[float, bool]]:
    """One checker: probes at phase + k*interval, flips after failure_threshold disagreeing verdicts.

    Probes that agree with the checker's view change nothing, so the loop jumps from such a
    probe to the first probe at or after the next outage boundary: the cost grows with the
    number of outages and the threshold, not with the horizon (same flips as probing every k).
    """
    step = (phase + config.request_interval) - phase  # numpy's arange steps by this difference
    bounds = sorted({o.start for o in faults.outages} | {o.end for o in faults.outages})
    status, run, flips, k = True, 0, [], 0
    while True:
        t = phase + k * step  # as np.arange(phase, horizon, step) spells its k-th value
        if t >= horizon:
            return flips
        ok = faults.mode_at(float(t)) is None
        if ok == status:
            run = 0
            j = bisect.bisect_right(bounds, t)
            if j == len(bounds):
                return flips
            k_next = max(k + 1, int(np.ceil((bounds[j] - phase) / step)))
            while phase + k_next * step < bounds[j]:
                k_next += 1
            k = k_next
            continue
        run += 1
        if run >= config.failure_threshold:
            status, run = ok, 0
            flips.append((float(t) + config.result_delay, status))
        k += 1


def simulate_health_checks(config: HealthCheckConfig, faults: FaultSchedule, horizon: float,
                           phases: Sequence[float]) -> HealthTimeline:
    """Run every checker over [0, horizon) and aggregate with the more-than-18% rule.

    ``phases`` (seconds, one per checker, each in [0, request_interval)) are the
    offsets of the uncoordinated checkers' first probes; draw them from a seeded
    stream as ``u * request_interval`` so settings can be compared on common numbers.
    """
    phases = np.asarray(phases, dtype=float)
    if phases.shape != (config.checkers,):
        raise ValueError(f"need one phase per checker ({config.checkers}), got shape {phases.shape}")
    if np.any((phases < 0) | (phases >= config.request_interval)):
        raise ValueError("checker phases must lie in [0, request_interval)")
    per_checker = tuple(tuple(_checker_flips(config, faults, p, horizon)) for p in phases)
    events = sorted((t, h) for flips in per_checker for t, h in flips)
    n_healthy, status = config.checkers, True
    times, healthy = [0.0], [True]
    for t, h in events:
        n_healthy += 1 if h else -1
        now = n_healthy >= config.min_healthy_checkers
        if now != status:
            status = now
            if times[-1] == t:
                healthy[-1] = now
            else:
                times.append(t)
                healthy.append(now)
    return HealthTimeline(np.array(times), np.array(healthy, dtype=bool), per_checker)


# ---------------------------------------------------------------- resolver caches
@dataclass(frozen=True)
class ResolverCaches:
    """Busy recursive resolvers that refresh one name every ``ttl`` seconds at their own phase."""

    phases: np.ndarray  # seconds, one per resolver, in [0, ttl) (ignored when ttl == 0)
    ttl: float

    def __post_init__(self):
        if self.ttl < 0:
            raise ValueError(f"ttl must be >= 0, got {self.ttl!r}")
        object.__setattr__(self, "phases", np.asarray(self.phases, dtype=float))

    @classmethod
    def from_uniforms(cls, u: np.ndarray, ttl: float) -> "ResolverCaches":
        """Phases u * ttl from uniforms u in [0, 1) (the same u give comparable runs across TTLs)."""
        return cls(np.asarray(u, dtype=float) * ttl, ttl)

    def last_refresh(self, resolver, t):
        """When the answer resolver(s) use at time(s) t was fetched (<= t)."""
        t = np.asarray(t, dtype=float)
        if self.ttl < MIN_TTL:
            return t
        ph = self.phases[resolver]
        return ph + np.floor((t - ph) / self.ttl + _EPS) * self.ttl

    def next_refresh(self, resolver, t):
        """First refresh at or after time(s) t: when a change made at t reaches the resolver."""
        t = np.asarray(t, dtype=float)
        if self.ttl < MIN_TTL:
            return np.broadcast_to(t, np.shape(self.phases[resolver])).astype(float)
        ph = self.phases[resolver]
        return ph + np.ceil((t - ph) / self.ttl - _EPS) * self.ttl


# ---------------------------------------------------------------- authoritative answers
def latency_routing(rtt_ms: np.ndarray, deployed: Sequence[int], healthy: np.ndarray) -> np.ndarray:
    """Route 53 latency-based routing: per area (row), the healthy deployed region of lowest RTT.

    ``healthy`` is a boolean per *column* of ``rtt_ms``; if no deployed region is
    healthy, all deployed regions are treated as healthy.
    """
    deployed = np.asarray(deployed, dtype=int)
    ok = np.asarray(healthy, dtype=bool)[deployed]
    usable = deployed[ok] if ok.any() else deployed
    return usable[np.argmin(rtt_ms[:, usable], axis=1)]


@dataclass(frozen=True)
class AnswerSchedule:
    """The authoritative DNS answer per user area over time: ``answers[k]`` from ``times[k]``."""

    times: np.ndarray
    answers: np.ndarray  # (len(times), areas) region indices

    def at(self, t, area):
        k = np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, None)
        return self.answers[k, area]


def answer_schedule(health: dict[int, HealthTimeline], n_regions: int,
                    policy: Callable[[np.ndarray], np.ndarray]) -> AnswerSchedule:
    """Evaluate ``policy(healthy mask over regions) -> region per area`` at every health change."""
    times = np.unique(np.concatenate([[0.0]] + [h.times for h in health.values()]))
    rows = []
    for t in times:
        mask = np.ones(n_regions, dtype=bool)
        for r, h in health.items():
            mask[r] = bool(h.healthy_at(t))
        rows.append(policy(mask))
    return AnswerSchedule(times, np.array(rows, dtype=int))


def weighted_quantile(values, weights, q: float) -> float:
    """The q-quantile (0..1) of ``values`` where each carries ``weights`` (inverted CDF; nan if empty)."""
    v = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    keep = np.isfinite(v) & (w > 0)
    v, w = v[keep], w[keep]
    if v.size == 0:
        return float("nan")
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    return float(v[order][np.searchsorted(cum, q - 1e-12)])


def failover_times(health: HealthTimeline, caches: ResolverCaches, resolvers, weights, start: float,
                   end: float) -> dict:
    """How long an outage of [start, end) keeps traffic on the failed endpoint, per resolver and summarised.

    Route 53 stops answering with the endpoint when ``health`` first turns unhealthy at or
    after ``start`` (detection); each of ``resolvers`` (weighted by its traffic share) gets the
    new answer at its next refresh at or after detection, so its failover time is that refresh
    minus ``start``. Failback is the same after the endpoint is healthy again, measured from
    ``end``. When detection comes only at or after ``end`` (the outage was too short to be
    noticed) every time is NaN. Quantiles are traffic-weighted (``weighted_quantile``).
    """
    resolvers = np.asarray(resolvers, dtype=int)
    keys = ("detection_time_s", "failover_time_s", "failover_p50_s", "failover_max_s",
            "reroute_after_detect_s", "failback_time_s")
    detected = health.first_change_after(start, False)
    if not np.isfinite(detected) or detected >= end:
        return {**{k: float("nan") for k in keys}, "per_resolver_s": np.full(resolvers.size, np.nan)}
    switch = caches.next_refresh(resolvers, detected)
    back = caches.next_refresh(resolvers, health.first_change_after(end, True)) - end
    return {"detection_time_s": detected - start,
            "failover_time_s": weighted_quantile(switch - start, weights, 0.95),
            "failover_p50_s": weighted_quantile(switch - start, weights, 0.5),
            "failover_max_s": float(np.max(switch - start)) if resolvers.size else float("nan"),
            "reroute_after_detect_s": weighted_quantile(switch - detected, weights, 0.95),
            "failback_time_s": weighted_quantile(back, weights, 0.95), "per_resolver_s": switch - start}


def health_through_outage(config: HealthCheckConfig, start: float, end: float, phases) -> HealthTimeline:
    """Route 53's view of one endpoint down over [start, end), simulated until it is surely healthy again.

    After ``end`` each checker needs ``failure_threshold`` passing probes, so the timeline is run to
    ``end + (failure_threshold + 1) * request_interval``; its status is constant from there on.
    """
    horizon = end + (config.failure_threshold + 1) * config.request_interval
    return simulate_health_checks(config, FaultSchedule([Outage(start, end, "error")]), horizon, phases)


# ---------------------------------------------------------------- one region's outage, replayed
@dataclass(frozen=True)
class OutageReplay:
    """An outage of region ``failed`` over [start, end), replayed on several draws of checker and resolver phases.

    ``rtt_ms`` (areas x regions) drives latency routing over the ``deployed`` regions; every
    area has ``resolvers_per_area`` resolvers and sends ``area_weights`` of the traffic, split
    evenly over its resolvers. Row r of ``u_checkers`` (reps x checkers) and ``u_resolvers``
    (reps x resolvers) holds replay r's uniforms: checker phases are ``u * request_interval``
    and resolver phases ``u * ttl``, so settings compare on common random numbers.
    """

    rtt_ms: np.ndarray
    deployed: tuple
    failed: int
    area_weights: np.ndarray
    resolvers_per_area: int
    u_checkers: np.ndarray
    u_resolvers: np.ndarray
    start: float
    end: float

    def route(self, healthy: np.ndarray) -> np.ndarray:
        return latency_routing(self.rtt_ms, self.deployed, healthy)

    @property
    def steady(self) -> np.ndarray:
        """Region per area with every region healthy."""
        return self.route(np.ones(self.rtt_ms.shape[1], dtype=bool))

    @property
    def affected(self) -> np.ndarray:
        """Resolvers whose users the steady routing sends to the failed region (areas with traffic only)."""
        area = np.arange(self.u_resolvers.shape[1]) // self.resolvers_per_area
        return np.flatnonzero((self.steady[area] == self.failed) & (self.area_weights[area] > 0))

    def health(self, request_interval: float, failure_threshold: int) -> list[HealthTimeline]:
        """Route 53's view of the failed region in every replay."""
        config = HealthCheckConfig(float(request_interval), int(failure_threshold), self.u_checkers.shape[1])
        return [health_through_outage(config, self.start, self.end, u * request_interval) for u in self.u_checkers]

    def runs(self, health: list[HealthTimeline], ttl: float) -> list[dict]:
        """``failover_times`` of every replay (health from ``health``, resolver caches of ``ttl``)."""
        res = self.affected
        weights = self.area_weights[res // self.resolvers_per_area]
        return [failover_times(h, ResolverCaches.from_uniforms(u, ttl), res, weights, self.start, self.end)
                for h, u in zip(health, self.u_resolvers)]

    def answers(self, health: HealthTimeline) -> AnswerSchedule:
        """The authoritative answers per area through one replay's outage."""
        return answer_schedule({self.failed: health}, self.rtt_ms.shape[1], self.route)

    def mean_failover(self, request_interval: float, failure_threshold: int, ttls) -> list[float]:
        """Mean over the replays of the P95 failover time (outage start -> 95% of traffic moved), per TTL."""
        health = self.health(request_interval, failure_threshold)
        return [float(np.mean([r["failover_time_s"] for r in self.runs(health, ttl)])) for ttl in ttls]
