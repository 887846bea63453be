"""A fan-out request tree across services, simulated for many requests at once.

A request enters at the root service. Each service does its own work and, in
between, calls downstream services in *stages*: the calls of one stage run in
parallel and the next stage starts when the slowest of them returns (the
scatter-gather pattern of a gateway that fetches features and candidates
together, then scores, then ranks). A call may be conditional (a database
read only on a cache miss), with a fixed probability.

Model, and what it leaves out:

* A service's own work per call is an independent draw (the lab supplies it,
  typically lognormal) and is split into ``len(stages) + 1`` equal pieces: one
  before the first stage, one between consecutive stages and one after the
  last. The gaps keep sequential calls strictly apart in time, as real code
  does, which is what a trace's critical path needs (Jaeger's walk-back only
  picks a child that ends strictly before the next one starts).
* Services are infinite-server stations: a call never queues behind another,
  so every request's tree is independent of the others. That is what makes
  the whole run a handful of numpy operations per service instead of one
  SimPy process per span; contention (a slow service's queue growing) is out
  of scope and the labs say so.
* Errors: a call that fails (``origin``) still takes its time and still calls
  its children (a late 5xx); its failure propagates to every ancestor, so the
  request fails. The *origin* of an error is a failing call none of whose
  children failed.
* Visibility: an uninstrumented service emits no span, and its caller emits no
  client span for it; it must be a leaf (otherwise its children's spans would
  start disconnected traces, which this model does not represent). Its time
  then shows up as its caller's own time, and an error it returns shows up as
  originating in its caller.

``CallTree.run`` returns, per request and service: whether the service was
called, the call's start offset (from the request's arrival) and duration,
whether it failed, and each service's exclusive time on the critical path,
both the true one and the one a trace viewer computes from the visible spans
(the same result as the generic Jaeger walk in ``sim.tracing``, which the
tests check trace by trace).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Call:
    """One downstream call: the callee's name and the probability that the call is made."""

    child: str
    p: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"call probability of {self.child} must be in [0, 1], got {self.p}")


@dataclass(frozen=True)
class Service:
    """A service: mean own work per call (ms), its coefficient of variation, and its call stages."""

    name: str
    mean_ms: float
    cv: float = 0.5
    stages: tuple[tuple[Call, ...], ...] = field(default_factory=tuple)

    @property
    def children(self) -> tuple[str, ...]:
        return tuple(c.child for stage in self.stages for c in stage)


@dataclass
class TreeRun:
    """Per-request, per-service results (arrays of shape (n, S), seconds; columns in ``CallTree.names`` order)."""

    called: np.ndarray
    start: np.ndarray
    duration: np.ndarray
    own: np.ndarray
    failed: np.ndarray
    origin_seen: np.ndarray  # failing visible call with no failing visible child (what a trace shows)
    cp_self: np.ndarray  # true exclusive time on the critical path
    cp_self_seen: np.ndarray  # the same, computed from the visible spans only
    root: int

    @property
    def latency(self) -> np.ndarray:
        return self.duration[:, self.root]

    @property
    def request_failed(self) -> np.ndarray:
        return self.failed[:, self.root]


class CallTree:
    """A tree of services rooted at ``root``; ``names`` gives the column order (pre-order)."""

    def __init__(self, services: Sequence[Service], root: str):
        self.services = {s.name: s for s in services}
        if len(self.services) != len(services):
            raise ValueError("service names must be unique")
        if root not in self.services:
            raise ValueError(f"unknown root service {root!r}")
        self.root = root
        self.parent: dict[str, str | None] = {root: None}
        order, stack = [], [root]
        while stack:
            name = stack.pop()
            order.append(name)
            for child in reversed(self.services[name].children):
                if child not in self.services:
                    raise ValueError(f"{name} calls unknown service {child!r}")
                if child in self.parent:
                    raise ValueError(f"{child} has two callers: the services must form a tree")
                self.parent[child] = name
                stack.append(child)
        if len(order) != len(self.services):
            missing = sorted(set(self.services) - set(order))
            raise ValueError(f"services not reachable from {root}: {', '.join(missing)}")
        self.names: tuple[str, ...] = tuple(order)  # pre-order: a parent before its children
        self.index = {n: k for k, n in enumerate(self.names)}
        self.call_p = np.array([1.0 if n == root else self._p(n) for n in self.names])
        self.mean_s = np.array([self.services[n].mean_ms / 1e3 for n in self.names])
        self.cv = np.array([self.services[n].cv for n in self.names])

    def _p(self, name: str) -> float:
        for stage in self.services[self.parent[name]].stages:
            for c in stage:
                if c.child == name:
                    return c.p
        raise AssertionError(name)

    # ------------------------------------------------------------ topology helpers
    def __len__(self) -> int:
        return len(self.names)

    def is_leaf(self, name: str) -> bool:
        return not self.services[name].stages

    def depth(self, name: str) -> int:
        d = 0
        while self.parent[name] is not None:
            name, d = self.parent[name], d + 1
        return d

    def breadth_first(self, start: str | None = None) -> list[str]:
        """Services in breadth-first order from ``start`` (default the root), children in call order."""
        out, frontier = [], [start or self.root]
        while frontier:
            out.extend(frontier)
            frontier = [c for n in frontier for c in self.services[n].children]
        return out

    def call_probability(self, name: str) -> float:
        """Probability that a request reaches ``name`` (product of call probabilities on its path)."""
        p = 1.0
        while name is not None:
            p *= self.call_p[self.index[name]]
            name = self.parent[name]
        return p

    def search_order(self, mode: str, alerts: dict[str, bool], rng: np.random.Generator | None = None) -> list[str]:
        """The order in which someone without traces examines services: ``topology`` (breadth-first
        from the root), ``alerts_top_down`` / ``alerts_bottom_up`` (alerting services first, from the
        root or deepest first: symptoms propagate upwards; ties keep breadth-first order, then the rest
        breadth-first) or ``random`` (a permutation drawn from ``rng``)."""
        bfs = self.breadth_first()
        if mode == "topology":
            return bfs
        if mode == "random":
            return [bfs[i] for i in (rng or np.random.default_rng()).permutation(len(bfs))]
        if mode not in ("alerts_top_down", "alerts_bottom_up"):
            raise ValueError(f"unknown search order {mode!r}")
        firing = [s for s in bfs if alerts[s]]
        if mode == "alerts_bottom_up":
            firing = sorted(firing, key=lambda s: -self.depth(s))  # stable sort
        return firing + [s for s in bfs if not alerts[s]]

    def detour(self, named: str, culprit: str, order: list[str]) -> int:
        """Services examined to reach ``culprit`` when pointed at ``named``: it and its subtree
        breadth-first, then the rest in ``order``."""
        path = self.breadth_first(named)
        return (path + [s for s in order if s not in path]).index(culprit) + 1

    def spans_per_call(self, called: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """Spans each call records: its server span plus one client span per call to an instrumented
        callee (0 for calls not made and for uninstrumented services)."""
        visible = np.asarray(visible, dtype=bool)
        return np.where(visible[None, :] & called, 1 + self.client_calls(called, visible), 0)

    # ------------------------------------------------------------ simulation
    def calls(self, u: np.ndarray) -> np.ndarray:
        """Which services each request calls, from uniforms ``u`` of shape (n, S)."""
        called = u < self.call_p
        for k, name in enumerate(self.names):  # pre-order: the parent's column is final
            parent = self.parent[name]
            if parent is not None:
                called[:, k] &= called[:, self.index[parent]]
        return called

    def client_calls(self, called: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """Number of calls each service makes to visible (instrumented) children, per request."""
        out = np.zeros(called.shape, dtype=np.int16)
        for name in self.names:
            k = self.index[name]
            for child in self.services[name].children:
                j = self.index[child]
                if visible[j]:
                    out[:, k] += called[:, j]
        return out

    def latency(self, own: np.ndarray, called: np.ndarray) -> np.ndarray:
        """End-to-end latency of each request: ``run(own, called).latency`` (the same arithmetic, so the
        same numbers) without the failures, start times and critical paths ``run`` also works out."""
        n, S = own.shape
        if called.shape != (n, S) or S != len(self.names):
            raise ValueError("own and called must have shape (n, number of services)")
        idx = self.index
        called_t = np.ascontiguousarray(called.T)
        own_t = np.where(called_t, own.T, 0.0)
        dur = np.zeros((S, n))
        for name in reversed(self.names):  # post-order: children first
            k = idx[name]
            total = own_t[k].copy()
            for stage in self.services[name].stages:
                cols = [idx[c.child] for c in stage]
                m = dur[cols[0]].copy()
                for c in cols[1:]:
                    np.maximum(m, dur[c], out=m)
                total += m
            dur[k] = np.where(called_t[k], total, 0.0)
        return dur[idx[self.root]].copy()

    def run(self, own: np.ndarray, called: np.ndarray, origin: np.ndarray | None = None,
            visible: np.ndarray | None = None) -> TreeRun:
        """Simulate ``n`` requests.

        ``own`` (n, S): own work per call in seconds (fault delay and span costs already added);
        ``called`` (n, S): from ``calls``; ``origin`` (n, S): calls that fail on their own;
        ``visible`` (S,): services that emit spans (default all).
        """
        n, S = own.shape
        if called.shape != (n, S) or S != len(self.names):
            raise ValueError("own and called must have shape (n, number of services)")
        visible = np.ones(S, dtype=bool) if visible is None else np.asarray(visible, dtype=bool)
        if not visible[self.index[self.root]]:
            raise ValueError("the root service must be instrumented")
        for name in self.names:
            if not visible[self.index[name]] and not self.is_leaf(name):
                raise ValueError(f"an uninstrumented service must be a leaf; {name} calls others")
        # one contiguous row per service: column slices of (n, S) arrays are strided and slow
        called_t = np.ascontiguousarray(called.T)
        own_t = np.where(called_t, own.T, 0.0)
        origin_t = (np.zeros((S, n), dtype=bool) if origin is None
                    else np.ascontiguousarray(origin.T) & called_t)
        idx = self.index
        stage_cols = {name: [[idx[c.child] for c in stage] for stage in self.services[name].stages]
                      for name in self.names}

        dur = np.zeros((S, n))
        failed = origin_t.copy()
        stage_max: dict[str, list[np.ndarray]] = {}
        for name in reversed(self.names):  # post-order: children first
            k = idx[name]
            total = own_t[k].copy()
            maxes = []
            for cols in stage_cols[name]:
                m = dur[cols[0]].copy()
                for c in cols[1:]:
                    np.maximum(m, dur[c], out=m)
                    failed[k] |= failed[c]
                failed[k] |= failed[cols[0]]
                maxes.append(m)
                total += m
            stage_max[name] = maxes
            dur[k] = np.where(called_t[k], total, 0.0)
            failed[k] &= called_t[k]

        start = np.zeros((S, n))
        on_cp = np.zeros((S, n), dtype=bool)
        on_seen = np.zeros((S, n), dtype=bool)
        cp_seen = np.zeros((S, n))
        r = idx[self.root]
        on_cp[r] = called_t[r]
        on_seen[r] = called_t[r]
        for name in self.names:  # pre-order: the parent is placed before its children
            k = idx[name]
            cols_list = stage_cols[name]
            gap = own_t[k] / (len(cols_list) + 1)
            t = start[k] + gap
            covered = np.zeros(n)
            for cols, m in zip(cols_list, stage_max[name]):
                # true critical child: the slowest call of the stage (the last to finish); first on ties
                taken = np.zeros(n, dtype=bool)
                for c in cols:
                    start[c] = t
                    crit = (dur[c] == m) & ~taken & called_t[c]
                    taken |= crit
                    on_cp[c] = crit & on_cp[k]
                # seen critical child: the slowest *visible* call that was made
                vcols = [c for c in cols if visible[c]]
                if vcols:
                    mv = dur[vcols[0]].copy()
                    for c in vcols[1:]:
                        np.maximum(mv, dur[c], out=mv)
                    taken = np.zeros(n, dtype=bool)
                    for c in vcols:
                        best = (dur[c] == mv) & ~taken & called_t[c]
                        taken |= best
                        on_seen[c] = best & on_seen[k]
                    covered += mv
                t = t + m + gap
            if visible[k]:
                cp_seen[k] = np.where(on_seen[k], dur[k] - covered, 0.0)
        cp_self = np.where(on_cp, own_t, 0.0)

        # error origin as a trace shows it: a failing visible span with no failing visible child
        origin_seen = failed & visible[:, None]
        for name in self.names:
            k = idx[name]
            for child in self.services[name].children:
                j = idx[child]
                if visible[j]:
                    origin_seen[k] &= ~failed[j]
        return TreeRun(called, start.T, dur.T, own_t.T, failed.T, origin_seen.T, cp_self.T, cp_seen.T, r)


def log_alerts(tree: CallTree, run: TreeRun, after: np.ndarray, p99_ratio: float = 1.5,
               error_pct: float = 1.0) -> dict[str, bool]:
    """Per service, whether its own logged calls alert after a change at ``after`` (requests, bool):
    the P99 of its call durations is at least ``p99_ratio`` x the P99 before, or its error rate is at
    least ``error_pct`` % and at least double the rate before. No calls on either side: no alert."""
    out = {}
    for name in tree.names:
        k = tree.index[name]
        pre, post = run.called[~after, k], run.called[after, k]
        if not pre.any() or not post.any():
            out[name] = False
            continue
        d, f = run.duration[:, k], run.failed[:, k]
        slow = np.percentile(d[after][post], 99) >= p99_ratio * np.percentile(d[~after][pre], 99)
        e_pre, e_post = f[~after][pre].mean(), f[after][post].mean()
        out[name] = bool(slow or (100.0 * e_post >= error_pct and e_post >= 2.0 * e_pre))
    return out
