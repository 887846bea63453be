"""Releasing a new model version to a replicated server: Recreate, RollingUpdate, blue-green.

References (REFERENCES.md §23 and §7):
- Kubernetes Deployment (``apps/v1``): ``Recreate`` deletes every old pod, then creates the
  new ones; ``RollingUpdate`` keeps total pods <= replicas + ``max_surge`` (percent, rounded
  up) and available pods >= replicas - ``max_unavailable`` (percent, rounded down; when both
  round to 0, max_unavailable becomes 1, as the controller's fence-post rule does). A pod
  takes traffic once its readiness probe passes (probes at ``initial_delay_seconds`` +
  k x ``period_seconds`` after the container starts) and counts as *available* for the
  rollout ``min_ready_seconds`` later. Scaling down first removes old pods that are not
  available, then available ones, as ``reconcileOldReplicaSets`` does. ``rollout undo`` is a
  new rolling update towards the old template, with the same pacing.
- Argo Rollouts blue-green: the green ReplicaSet is brought up at full size
  (``previewReplicaCount`` 100%), the active service's selector is switched once every green
  pod is available, and the blue pods are deleted ``scale_down_delay_seconds`` later. An
  abort while blue still runs is one selector switch back (green deleted
  ``abort_scale_down_delay_seconds`` later); after blue is gone, the way back is a full
  blue-green release of the old version.
Where we differ: a pod's start, image pull and model load are one random load time; pod
deletion is instant for routing (in-flight requests finish); a selector change reaches the
routers ``switch_delay_s`` later (kube-proxy propagation), one number for every router.
Requests share one queue in front of the routed, ready pods (one request per pod at a time)
and fail when no routed pod is ready, or when they wait longer than ``queue_timeout_s``.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import simpy

OLD, NEW = 0, 1
PENDING, OK, ERROR, NO_REPLICA, TIMEOUT = range(5)
STRATEGIES = ("recreate", "rolling", "blue_green")


def resolve_fenceposts(replicas: int, max_surge_pct: float, max_unavailable_pct: float) -> tuple[int, int]:
    """(surge, unavailable) pods: percentages of replicas, surge rounded up and unavailable down;
    both zero becomes unavailable = 1 (Kubernetes ``ResolveFenceposts``)."""
    surge = math.ceil(replicas * max_surge_pct / 100 - 1e-9)
    unavailable = math.floor(replicas * max_unavailable_pct / 100 + 1e-9)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def ready_time(created: float, load_s: float, initial_delay_seconds: float, period_seconds: float) -> float:
    """The first readiness probe at or after the model has loaded (success threshold 1)."""
    first = created + initial_delay_seconds
    loaded = created + load_s
    if loaded <= first:
        return first
    return first + math.ceil((loaded - first) / period_seconds - 1e-9) * period_seconds


@dataclass
class Config:
    replicas: int = 8
    max_surge: float = 25.0  # percent of replicas
    max_unavailable: float = 25.0  # percent of replicas
    min_ready_seconds: float = 0.0
    initial_delay_seconds: float = 0.0
    period_seconds: float = 10.0
    scale_down_delay_seconds: float = 30.0
    abort_scale_down_delay_seconds: float = 30.0
    switch_delay_s: float = 2.0
    queue_timeout_s: float = 10.0
    analysis_interval_s: float = 60.0
    analysis_count: int = 5
    min_calls: int = 10
    error_threshold_pct: float = 5.0


@dataclass(eq=False)
class Pod:
    version: int
    created: float
    ready_at: float
    available_at: float
    deleted_at: float = math.inf
    busy: bool = False
    serving: bool = False  # ready, not deleted, selected by the routers

    def ready(self, t: float) -> bool:
        return self.ready_at <= t < self.deleted_at

    def available(self, t: float) -> bool:
        return self.available_at <= t < self.deleted_at


@dataclass
class Timeline:
    """Piecewise-constant record: pods per version and routed ready pods per version."""
    times: list = field(default_factory=list)
    pods: list = field(default_factory=list)  # (old, new)
    serving: list = field(default_factory=list)  # (old, new)

    def frame(self):
        import pandas as pd
        p, s = np.asarray(self.pods).reshape(-1, 2), np.asarray(self.serving).reshape(-1, 2)
        return pd.DataFrame({"time_s": self.times, "pods_old": p[:, 0], "pods_new": p[:, 1],
                             "serving_old": s[:, 0], "serving_new": s[:, 1]})


class Deployment:
    """One strategy's controller, the pods, the routers and the requests of one run (one SimPy env)."""

    def __init__(self, env: simpy.Environment, strategy: str, cfg: Config, load_times: np.ndarray):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.env, self.strategy, self.cfg = env, strategy, cfg
        self._loads, self._next_load = load_times, 0
        self.pods: list[Pod] = []
        self.selector: int | None = None if strategy != "blue_green" else OLD  # None: every version
        self.free: list[Pod] = []
        self.queue: deque = deque()
        self.changed = env.event()
        self.timeline = Timeline()
        self.detected_at = math.nan
        self.rollback_done_at = math.nan
        self.first_new_at = math.nan
        self.done_at = math.nan
        self.new_served = self.new_errors = 0
        self.target = OLD
        self.log: Requests | None = None
        self.n_serving = 0

    # ---------------------------------------------------------------- pods
    def _load(self) -> float:
        v = float(self._loads[self._next_load % len(self._loads)])
        self._next_load += 1
        return v

    def create(self, version: int, at_start: bool = False) -> Pod:
        now = self.env.now
        if at_start:
            pod = Pod(version, now, now, now)
        else:
            r = ready_time(now, self._load(), self.cfg.initial_delay_seconds, self.cfg.period_seconds)
            pod = Pod(version, now, r, r + self.cfg.min_ready_seconds)
            for t in {r, pod.available_at}:
                self.env.timeout(t - now).callbacks.append(lambda _e: self._refresh())
        self.pods.append(pod)
        return pod

    def delete(self, pod: Pod) -> None:
        if pod.deleted_at == math.inf:
            pod.deleted_at = self.env.now

    def live(self, version: int | None = None) -> list[Pod]:
        return [p for p in self.pods if p.deleted_at == math.inf and (version is None or p.version == version)]

    def set_selector(self, version: int, delay: float) -> None:
        def switch(_e):
            self.selector = version
            self._refresh()
        self.env.timeout(delay).callbacks.append(switch)

    # ---------------------------------------------------------------- state changes
    def _refresh(self) -> None:
        """Recompute which pods serve, record the timeline, wake controllers, drain the queue."""
        now = self.env.now
        counts, serving = [0, 0], [0, 0]
        for pod in self.pods:
            if pod.deleted_at <= now:
                pod.serving = False
                continue
            counts[pod.version] += 1
            pod.serving = pod.ready(now) and (self.selector is None or self.selector == pod.version)
            if pod.serving:
                serving[pod.version] += 1
                if not pod.busy and pod not in self.free:
                    self.free.append(pod)
        self.pods = [p for p in self.pods if p.deleted_at > now]
        self.n_serving = serving[OLD] + serving[NEW]
        tl = self.timeline
        if tl.times and tl.times[-1] == now:
            tl.pods[-1], tl.serving[-1] = tuple(counts), tuple(serving)
        else:
            tl.times.append(now), tl.pods.append(tuple(counts)), tl.serving.append(tuple(serving))
        if serving[NEW] and math.isnan(self.first_new_at):
            self.first_new_at = now
        if (not math.isnan(self.detected_at) and math.isnan(self.rollback_done_at) and serving[NEW] == 0
                and serving[OLD] >= self.cfg.replicas):
            self.rollback_done_at = now
        self._drain()
        ev, self.changed = self.changed, self.env.event()
        ev.succeed()

    # ---------------------------------------------------------------- requests
    def _take_free(self, u: float) -> Pod | None:
        """A random idle routed pod (kube-proxy picks endpoints at random); ``u`` is a uniform draw."""
        free = self.free
        while free:
            k = int(u * len(free))
            pod = free[k]
            free[k] = free[-1]
            free.pop()
            if pod.serving and not pod.busy:
                return pod
        return None

    def arrive(self, i: int) -> None:
        log = self.log
        if not self.n_serving:
            log.finish(i, self.env.now, NO_REPLICA, -1)
            return
        self.queue.append(i)
        log.deadline[i] = self.env.now + self.cfg.queue_timeout_s
        self._drain()

    def _drain(self) -> None:
        log = self.log
        while self.queue:
            i = self.queue[0]
            if log.deadline[i] < self.env.now:
                self.queue.popleft()
                log.finish(i, log.deadline[i], TIMEOUT, -1)
                continue
            pod = self._take_free(log.route[i])
            if pod is None:
                return
            self.queue.popleft()
            pod.busy = True
            self.env.timeout(log.service[i]).callbacks.append(lambda _e, i=i, pod=pod: self._done(i, pod, log))

    def _done(self, i: int, pod: Pod, log: "Requests") -> None:
        failed = pod.version == NEW and log.bad[i]
        log.finish(i, self.env.now, ERROR if failed else OK, pod.version)
        if pod.version == NEW:
            self.new_served += 1
            self.new_errors += int(failed)
        pod.busy = False
        if pod.serving:
            self.free.append(pod)
            self._drain()

    def close(self, horizon: float) -> None:
        """Requests still queued at the end time out at their deadline (if it falls inside the horizon)."""
        log = self.log
        for i in self.queue:
            if log.deadline[i] <= horizon:
                log.finish(i, log.deadline[i], TIMEOUT, -1)

    # ---------------------------------------------------------------- controllers
    def start(self, replicas: int) -> None:
        for _ in range(replicas):
            self.create(OLD, at_start=True)
        self._refresh()

    def release(self, rollout_at: float):
        """The whole scenario: roll out NEW at ``rollout_at``, watch it, roll back if the analysis fails."""
        env, cfg = self.env, self.cfg
        yield env.timeout(rollout_at)
        self.target = NEW
        worker = env.process(self._converge(NEW))
        verdict = yield env.process(self._analysis())
        if verdict == "failed":
            self.detected_at = env.now
            if worker.is_alive:
                worker.interrupt()
            if self.strategy == "blue_green" and self.live(OLD):
                self.set_selector(OLD, cfg.switch_delay_s)  # blue is still up: one switch back
                for pod in self.live(NEW):
                    env.timeout(cfg.abort_scale_down_delay_seconds).callbacks.append(
                        lambda _e, pod=pod: (self.delete(pod), self._refresh()))
                yield env.timeout(max(cfg.switch_delay_s, cfg.abort_scale_down_delay_seconds))
                self._refresh()
            else:
                self.target = OLD
                yield env.process(self._converge(OLD))
        elif worker.is_alive:
            yield worker
        self.done_at = env.now

    def _analysis(self):
        """Tumbling windows of ``analysis_interval_s`` over NEW's responses, from its first routed pod;
        'failed' at the first window whose error share reaches the threshold (failureLimit 0)."""
        env, cfg = self.env, self.cfg
        while math.isnan(self.first_new_at):
            yield self.changed
        n0 = e0 = 0
        for _ in range(cfg.analysis_count):
            yield env.timeout(cfg.analysis_interval_s)
            n, e = self.new_served - n0, self.new_errors - e0
            n0, e0 = self.new_served, self.new_errors
            if n >= cfg.min_calls and 100.0 * e / n >= cfg.error_threshold_pct:
                return "failed"
        return "passed"

    def _converge(self, target: int):
        try:
            if self.strategy == "recreate":
                yield from self._recreate(target)
            elif self.strategy == "rolling":
                yield from self._rolling(target)
            else:
                yield from self._blue_green(target)
        except simpy.Interrupt:
            return

    def _recreate(self, target: int):
        for pod in self.live():
            if pod.version != target:
                self.delete(pod)
        for _ in range(self.cfg.replicas - len(self.live(target))):
            self.create(target)
        self._refresh()
        while sum(p.available(self.env.now) for p in self.live(target)) < self.cfg.replicas:
            yield self.changed

    def _rolling(self, target: int):
        cfg, R = self.cfg, self.cfg.replicas
        surge, unavailable = resolve_fenceposts(R, cfg.max_surge, cfg.max_unavailable)
        min_available = R - unavailable
        while True:
            now = self.env.now
            tgt = self.live(target)
            others = [p for p in self.live() if p.version != target]
            if len(tgt) >= R and not others and all(p.available(now) for p in tgt):
                return
            total, acted = len(tgt) + len(others), False
            if len(tgt) < R and total < R + surge:  # reconcileNewReplicaSet
                for _ in range(min(R + surge - total, R - len(tgt))):
                    self.create(target)
                acted = True
            else:  # reconcileOldReplicaSets: old pods that are not available go first, then available ones
                tgt_unavailable = sum(not p.available(now) for p in tgt)
                budget = total - min_available - tgt_unavailable
                for pod in sorted((p for p in others if not p.available(now)), key=lambda p: -p.created):
                    if budget <= 0:
                        break
                    self.delete(pod)
                    budget, acted = budget - 1, True
                others = [p for p in others if p.deleted_at == math.inf]
                available = sum(p.available(now) for p in self.live())
                for pod in sorted(others, key=lambda p: -p.created)[:max(0, available - min_available)]:
                    self.delete(pod)
                    acted = True
            self._refresh()
            if not acted:
                yield self.changed

    def _blue_green(self, target: int):
        cfg, env = self.cfg, self.env
        old = [p for p in self.live() if p.version != target]
        for _ in range(cfg.replicas - len(self.live(target))):
            self.create(target)
        self._refresh()
        while sum(p.available(env.now) for p in self.live(target)) < cfg.replicas:
            yield self.changed
        self.set_selector(target, cfg.switch_delay_s)
        yield env.timeout(cfg.scale_down_delay_seconds)
        for pod in old:
            self.delete(pod)
        self._refresh()
        if cfg.switch_delay_s > cfg.scale_down_delay_seconds:
            yield env.timeout(cfg.switch_delay_s - cfg.scale_down_delay_seconds)


class Requests:
    """Per-request columns (preallocated): arrival, end, outcome, version that answered."""

    def __init__(self, arrivals: np.ndarray, service: np.ndarray, bad: np.ndarray, route: np.ndarray):
        n = arrivals.size
        self.arrival, self.service, self.bad, self.route = arrivals, service, bad, route
        self.end = np.full(n, np.nan)
        self.deadline = np.full(n, np.nan)
        self.outcome = np.zeros(n, dtype=np.int8)
        self.version = np.full(n, -1, dtype=np.int8)

    def finish(self, i: int, t: float, outcome: int, version: int) -> None:
        self.end[i], self.outcome[i], self.version[i] = t, outcome, version


def run_strategy(strategy: str, cfg: Config, *, arrivals: np.ndarray, service: np.ndarray, bad: np.ndarray,
                 route: np.ndarray, load_times: np.ndarray, rollout_at: float, new_is_bad: bool,
                 horizon: float, tail_s: float = 60.0) -> dict:
    """Simulate one strategy until the scenario is over (+ ``tail_s``) or ``horizon``, whichever is first."""
    env = simpy.Environment()
    dep = Deployment(env, strategy, cfg, load_times)
    dep.start(cfg.replicas)
    log = dep.log = Requests(arrivals, service, bad if new_is_bad else np.zeros_like(bad), route)
    scenario = env.process(dep.release(rollout_at))

    def feed():
        for i, t in enumerate(arrivals):
            if t > env.now:
                yield env.timeout(t - env.now)
            dep.arrive(i)

    env.process(feed())
    env.run(until=simpy.AnyOf(env, [scenario, env.timeout(horizon)]))
    end = min(horizon, env.now + tail_s) if not scenario.is_alive else horizon
    if end > env.now:
        env.run(until=end)
    dep.close(end)
    dep._refresh()
    return {"deployment": dep, "requests": log, "end": end, "finished": not scenario.is_alive}


def summarize(dep: Deployment, end: float, rate_rps: float, replica_rps: float, start: float) -> dict:
    """Downtime, degraded time, replica-hours and peak pods read off the timeline over [start, end]."""
    t = np.append(np.asarray(dep.timeline.times, dtype=float), end)
    pods = np.asarray(dep.timeline.pods, dtype=float).reshape(-1, 2).sum(axis=1)
    serving = np.asarray(dep.timeline.serving, dtype=float).reshape(-1, 2).sum(axis=1)
    lo, hi = np.clip(t[:-1], start, end), np.clip(t[1:], start, end)
    dt = np.maximum(hi - lo, 0.0)
    seen = dt > 0
    return {
        "downtime_s": float(dt[serving == 0].sum()),
        "degraded_s": float(dt[serving * replica_rps < rate_rps].sum()),
        "replica_hours": float((pods * dt).sum() / 3600),
        "extra_replica_hours": float(((pods - dep.cfg.replicas) * dt).sum() / 3600),
        "peak_pods": float(pods[seen].max()) if seen.any() else float(dep.cfg.replicas),
    }
