"""The Kubernetes Horizontal Pod Autoscaler, and a Deployment whose pods start cold.

Reference implementation: Kubernetes ``pkg/controller/podautoscaler``
(``replica_calculator.go``: ``GetResourceReplicas``, ``calcPlainMetricReplicas``,
``groupPods``; ``horizontal.go``: ``stabilizeRecommendationWithBehaviors``,
``convertDesiredReplicasWithBehaviorRate``,
``calculateScaleUpLimitWithScalingRules``,
``calculateScaleDownLimitWithBehaviors``) and the HPA documentation
(REFERENCES.md §6). Names follow the API fields in snake_case.

The rule, each ``sync_period_s`` (controller flag
``--horizontal-pod-autoscaler-sync-period``, 15 s):

1. Replica calculator. ``usage_ratio = mean(metric of counted pods) / target``;
   no change if ``|1 - usage_ratio| <= tolerance`` (0.1), else
   ``desired = ceil(usage_ratio * counted pods)``. Pods are grouped as the
   reference ``groupPods`` does: Pending pods are ignored; pods without a
   metric are *missing*; for the CPU resource metric a pod that is not Ready,
   or (within ``cpu_initialization_period_s`` = 300 s of starting) whose sample
   was taken less than one metric window after it turned Ready, is ignored.
   When scaling up, ignored and missing pods are counted at 0 ("not-ready
   pods count as 0 on scale-up"); when scaling down, missing pods count at
   100% of their request (CPU) or at the target (Pods metric) and ignored pods
   are left out; the ratio is recomputed and the change is dropped if it falls
   within the tolerance or flips direction. For CPU the reference divides
   summed usage by summed requests; with equal requests, as here, that is the
   mean of the pods' utilizations. (Older releases also ignored unready pods
   for custom metrics; the current code does so for CPU only, as here.)
2. Behaviour. Stabilization: the recommendation is held between the minimum of
   the raw recommendations in the last ``scale_up.stabilization_window_s``
   (default 0) and the maximum of those in the last
   ``scale_down.stabilization_window_s`` (default 300 s). Rate limits: each
   policy allows, relative to the replica count at the start of its period
   (current minus the changes recorded in the last ``period_s``),
   ``Pods: +value`` or ``Percent: ceil(start * (1 + value/100))`` on scale-up
   and ``Pods: -value`` or ``Percent: floor(start * (1 - value/100))`` on
   scale-down; ``select_policy`` ``Max`` takes the largest change, ``Min`` the
   smallest, ``Disabled`` none. Defaults: scale-up Percent 100 and Pods 4 per
   15 s with ``Max``; scale-down Percent 100 per 15 s. Then
   ``min_replicas``/``max_replicas`` bound the result.

``HorizontalPodAutoscaler.reconcile`` does one sync from a list of
``PodSample``; ``hpa_process`` runs it as a SimPy process. ``Deployment``
keeps pods for a SimPy model: a new pod is Running but not Ready while its
container starts and the model loads (``cold_start_s``), and turns Ready at
the first readiness probe after that (``readiness_period_s``, the probe's
``periodSeconds``, Kubernetes default 10 s). A scale-down removes not-ready
pods first, then the newest (the ReplicaSet's deletion ranking, simplified).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = [
    "HPAScalingPolicy",
    "HPAScalingRules",
    "HPAConfig",
    "PodSample",
    "replica_calculator",
    "HorizontalPodAutoscaler",
    "Decision",
    "hpa_process",
    "Pod",
    "Deployment",
]


@dataclass(frozen=True)
class HPAScalingPolicy:
    """``behavior.scaleUp/scaleDown.policies[]``: type ``Pods`` or ``Percent``, value, periodSeconds."""

    type: str
    value: int
    period_s: float

    def __post_init__(self):
        if self.type not in ("Pods", "Percent"):
            raise ValueError(f"policy type must be 'Pods' or 'Percent', got {self.type!r}")
        if self.value <= 0 or not 0 < self.period_s <= 1800:
            raise ValueError("policy value must be > 0 and period_s in (0, 1800]")


@dataclass(frozen=True)
class HPAScalingRules:
    """``behavior.scaleUp`` or ``behavior.scaleDown``."""

    stabilization_window_s: float
    policies: tuple[HPAScalingPolicy, ...]
    select_policy: str = "Max"

    def __post_init__(self):
        if self.select_policy not in ("Max", "Min", "Disabled"):
            raise ValueError(f"select_policy must be Max, Min or Disabled, got {self.select_policy!r}")
        if not 0 <= self.stabilization_window_s <= 3600:
            raise ValueError("stabilization_window_s must be in [0, 3600]")
        object.__setattr__(self, "policies", tuple(self.policies))

    @classmethod
    def default_scale_up(cls) -> "HPAScalingRules":
        return cls(0.0, (HPAScalingPolicy("Percent", 100, 15.0), HPAScalingPolicy("Pods", 4, 15.0)), "Max")

    @classmethod
    def default_scale_down(cls) -> "HPAScalingRules":
        return cls(300.0, (HPAScalingPolicy("Percent", 100, 15.0),), "Max")

    @property
    def longest_period_s(self) -> float:
        return max((p.period_s for p in self.policies), default=0.0)


@dataclass(frozen=True)
class HPAConfig:
    """One HPA with a single metric.

    ``metric``: ``"cpu"`` is a Resource metric with ``target`` as an average
    utilization in percent of the pods' request (unready pods filtered as for
    CPU); ``"pods"`` is a Pods metric with ``target`` as its average value per
    pod (e.g. requests in flight).
    """

    target: float
    metric: str = "cpu"
    min_replicas: int = 1
    max_replicas: int = 10
    tolerance: float = 0.1
    sync_period_s: float = 15.0
    scale_up: HPAScalingRules = field(default_factory=HPAScalingRules.default_scale_up)
    scale_down: HPAScalingRules = field(default_factory=HPAScalingRules.default_scale_down)
    cpu_initialization_period_s: float = 300.0
    initial_readiness_delay_s: float = 30.0

    def __post_init__(self):
        if self.metric not in ("cpu", "pods"):
            raise ValueError(f"metric must be 'cpu' or 'pods', got {self.metric!r}")
        if not self.target > 0:
            raise ValueError("target must be > 0")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 1 <= min_replicas <= max_replicas")
        if self.tolerance < 0 or self.sync_period_s <= 0:
            raise ValueError("tolerance must be >= 0 and sync_period_s > 0")


@dataclass(frozen=True)
class PodSample:
    """What the controller sees of one pod at a sync.

    ``value`` is the pod's metric (CPU utilization in % of its request, or the
    Pods metric), ``None`` when no sample exists (a *missing* pod).
    ``ready_since`` is the last time the Ready condition changed (None: never
    reported); ``sample_time``/``window_s`` describe the metric sample.
    """

    start_time: float
    ready: bool
    value: float | None
    pending: bool = False
    ready_since: float | None = None
    sample_time: float | None = None
    window_s: float = 15.0


def _group_pods(pods: Sequence[PodSample], now: float, cpu: bool, cpu_initialization_period_s: float,
                initial_readiness_delay_s: float):
    """``groupPods``: indices of counted pods, ignored pods and missing pods."""
    counted, ignored, missing = [], [], []
    for k, p in enumerate(pods):
        if p.pending:
            ignored.append(k)
            continue
        if p.value is None:
            missing.append(k)
            continue
        if cpu:
            if p.ready_since is None:
                ignore = True
            elif p.start_time + cpu_initialization_period_s > now:
                sample_time = now if p.sample_time is None else p.sample_time
                ignore = (not p.ready) or sample_time < p.ready_since + p.window_s
            else:
                ignore = (not p.ready) and p.start_time + initial_readiness_delay_s > p.ready_since
            if ignore:
                ignored.append(k)
                continue
        counted.append(k)
    return counted, ignored, missing


def replica_calculator(current_replicas: int, pods: Sequence[PodSample], target: float, tolerance: float = 0.1,
                       cpu: bool = True, now: float = 0.0, cpu_initialization_period_s: float = 300.0,
                       initial_readiness_delay_s: float = 30.0) -> int:
    """Desired replicas for one metric (``GetResourceReplicas`` / ``calcPlainMetricReplicas``).

    Raises ValueError when no pod has a usable metric (the controller then
    keeps the current scale and reports an error).
    """
    counted, ignored, missing = _group_pods(pods, now, cpu, cpu_initialization_period_s, initial_readiness_delay_s)
    if not counted:
        raise ValueError("did not receive metrics for any ready pods")
    values = {k: pods[k].value for k in counted}
    usage_ratio = sum(values.values()) / len(values) / target
    rebalance_ignored = bool(ignored) and usage_ratio > 1.0
    if not rebalance_ignored and not missing:
        if abs(1.0 - usage_ratio) <= tolerance:
            return current_replicas
        return math.ceil(usage_ratio * len(counted))
    if missing:
        if usage_ratio < 1.0:
            for k in missing:  # on a scale-down: 100% of the pod's request (CPU) or the target (Pods metric)
                values[k] = 100.0 if cpu else target
        elif usage_ratio > 1.0:
            for k in missing:
                values[k] = 0.0
    if rebalance_ignored:
        for k in ignored:
            values[k] = 0.0
    new_ratio = sum(values.values()) / len(values) / target
    if (abs(1.0 - new_ratio) <= tolerance or (usage_ratio < 1.0 < new_ratio)
            or (usage_ratio > 1.0 > new_ratio)):
        return current_replicas
    new_replicas = math.ceil(new_ratio * len(values))
    if cpu and ((new_ratio < 1.0 and new_replicas > current_replicas)
                or (new_ratio > 1.0 and new_replicas < current_replicas)):
        return current_replicas
    return new_replicas


@dataclass
class Decision:
    time_s: float
    current: int
    proposal: int  # the replica calculator's recommendation
    desired: int  # after stabilization, rate limits and min/max


class HorizontalPodAutoscaler:
    """One HPA's state across syncs: past recommendations and scale events."""

    def __init__(self, config: HPAConfig):
        self.config = config
        self.recommendations: list[tuple[float, int]] = []
        self.scale_up_events: list[tuple[float, int]] = []
        self.scale_down_events: list[tuple[float, int]] = []
        self.decisions: list[Decision] = []

    # ---- behaviour (horizontal.go)
    def _stabilize(self, now: float, current: int, desired: int) -> int:
        up = self.config.scale_up.stabilization_window_s
        down = self.config.scale_down.stabilization_window_s
        up_rec = down_rec = desired
        for t, rec in self.recommendations:
            if t > now - up:
                up_rec = min(up_rec, rec)
            if t > now - down:
                down_rec = max(down_rec, rec)
        horizon = max(up, down)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - horizon]
        self.recommendations.append((now, desired))
        recommendation = current
        if recommendation < up_rec:
            recommendation = up_rec
        if recommendation > down_rec:
            recommendation = down_rec
        return recommendation

    @staticmethod
    def _changed(events, now: float, period: float) -> int:
        return sum(change for t, change in events if t > now - period)

    def scale_up_limit(self, now: float, current: int) -> int:
        rules = self.config.scale_up
        if rules.select_policy == "Disabled":
            return current
        pick = max if rules.select_policy == "Max" else min
        result = None
        for p in rules.policies:
            start = (current - self._changed(self.scale_up_events, now, p.period_s)
                     + self._changed(self.scale_down_events, now, p.period_s))
            proposed = start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100))
            result = proposed if result is None else pick(result, proposed)
        return current if result is None else result

    def scale_down_limit(self, now: float, current: int) -> int:
        rules = self.config.scale_down
        if rules.select_policy == "Disabled":
            return current
        pick = min if rules.select_policy == "Max" else max  # Max = the largest change = fewest pods
        result = None
        for p in rules.policies:
            start = (current - self._changed(self.scale_up_events, now, p.period_s)
                     + self._changed(self.scale_down_events, now, p.period_s))
            proposed = start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100))
            result = proposed if result is None else pick(result, proposed)
        return current if result is None else result

    def normalize(self, now: float, current: int, desired: int) -> int:
        """Stabilization, then the behaviour's rate limits, then min/max replicas."""
        cfg = self.config
        d = self._stabilize(now, current, desired)
        if d > current:
            limit = min(max(self.scale_up_limit(now, current), current), cfg.max_replicas)
            d = min(d, limit)
        elif d < current:
            limit = max(min(self.scale_down_limit(now, current), current), cfg.min_replicas)
            d = max(d, limit)
        return d

    # ---- one sync
    def reconcile(self, now: float, current: int, pods: Sequence[PodSample]) -> int:
        """The replica count after one sync (equal to ``current`` when nothing changes)."""
        cfg = self.config
        if current > cfg.max_replicas:
            proposal = desired = cfg.max_replicas
        elif current < cfg.min_replicas:
            proposal = desired = cfg.min_replicas
        else:
            try:
                proposal = replica_calculator(current, pods, cfg.target, cfg.tolerance, cfg.metric == "cpu", now,
                                              cfg.cpu_initialization_period_s, cfg.initial_readiness_delay_s)
            except ValueError:
                proposal = current  # no usable metrics: keep the scale
            desired = self.normalize(now, current, proposal)
        if desired > current:
            self.scale_up_events.append((now, desired - current))
        elif desired < current:
            self.scale_down_events.append((now, current - desired))
        keep = max(cfg.scale_up.longest_period_s, cfg.scale_down.longest_period_s)
        self.scale_up_events = [e for e in self.scale_up_events if e[0] > now - keep]
        self.scale_down_events = [e for e in self.scale_down_events if e[0] > now - keep]
        self.decisions.append(Decision(now, current, proposal, desired))
        return desired


def hpa_process(env, hpa: HorizontalPodAutoscaler, observe: Callable[[float], tuple[int, list[PodSample]]],
                scale: Callable[[int], None], first_sync_s: float | None = None):
    """SimPy process: every ``sync_period_s`` observe (current replicas, pod samples) and scale."""
    period = hpa.config.sync_period_s
    yield env.timeout(period if first_sync_s is None else first_sync_s)
    while True:
        current, pods = observe(env.now)
        desired = hpa.reconcile(env.now, current, pods)
        if desired != current:
            scale(desired)
        yield env.timeout(period)


# --------------------------------------------------------------------------- pods
@dataclass
class Pod:
    id: int
    created: float
    ready_at: float  # when the readiness probe first passes
    deleted: float | None = None

    def is_ready(self, t: float) -> bool:
        return self.ready_at <= t and (self.deleted is None or t < self.deleted)


class Deployment:
    """Pods of one model server: created on scale-up, Ready after a cold start, removed on scale-down.

    ``on_ready(pod)`` and ``on_removed(pod)`` let a model put a pod into, and
    take it out of, the load balancer's rotation.
    """

    def __init__(self, env, cold_start_s: float, readiness_period_s: float = 10.0,
                 on_ready: Callable[[Pod], None] | None = None, on_removed: Callable[[Pod], None] | None = None,
                 on_created: Callable[[Pod], None] | None = None):
        if cold_start_s < 0 or readiness_period_s < 0:
            raise ValueError("cold_start_s and readiness_period_s must be >= 0")
        self.env = env
        self.cold_start_s = float(cold_start_s)
        self.readiness_period_s = float(readiness_period_s)
        self.on_ready = on_ready
        self.on_removed = on_removed
        self.on_created = on_created
        self.pods: list[Pod] = []  # live pods, oldest first
        self.all_pods: list[Pod] = []
        self.scale_events: list[tuple[float, int, int]] = []  # (time, from, to)

    @property
    def replicas(self) -> int:
        """``spec.replicas``: live pods, ready or not."""
        return len(self.pods)

    def ready_pods(self, t: float | None = None) -> list[Pod]:
        t = self.env.now if t is None else t
        return [p for p in self.pods if p.is_ready(t)]

    def readiness_delay(self) -> float:
        """Seconds from creation to Ready: the cold start, rounded up to the next probe."""
        if self.readiness_period_s <= 0:
            return self.cold_start_s
        return math.ceil(self.cold_start_s / self.readiness_period_s - 1e-9) * self.readiness_period_s

    def start(self, replicas: int, warm: bool = True) -> None:
        """Create the initial pods (``warm``: already Ready at time now)."""
        for _ in range(replicas):
            self._create(warm)

    def _create(self, warm: bool = False) -> Pod:
        now = self.env.now
        pod = Pod(len(self.all_pods), now, now if warm else now + self.readiness_delay())
        self.pods.append(pod)
        self.all_pods.append(pod)
        if self.on_created:
            self.on_created(pod)
        if warm:
            if self.on_ready:
                self.on_ready(pod)
        else:
            self.env.process(self._become_ready(pod))
        return pod

    def _become_ready(self, pod: Pod):
        yield self.env.timeout(pod.ready_at - self.env.now)
        if pod.deleted is None and self.on_ready:
            self.on_ready(pod)

    def scale(self, replicas: int) -> None:
        now = self.env.now
        before = len(self.pods)
        self.scale_events.append((now, before, replicas))
        while len(self.pods) < replicas:
            self._create()
        if len(self.pods) > replicas:
            # not-ready pods go first, then the newest ready ones
            victims = sorted(self.pods, key=lambda p: (p.is_ready(now), -p.created, -p.id))
            for p in victims[: len(self.pods) - replicas]:
                was_ready = p.is_ready(now)
                p.deleted = now
                self.pods.remove(p)
                if was_ready and self.on_removed:
                    self.on_removed(p)

    def samples(self, now: float, value: Callable[[Pod], float | None], window_s: float) -> list[PodSample]:
        """What the HPA sees: one PodSample per live pod, its metric from ``value(pod)``."""
        out = []
        for p in self.pods:
            ready = p.is_ready(now)
            out.append(PodSample(start_time=p.created, ready=ready, value=value(p),
                                 ready_since=p.ready_at if ready else p.created, sample_time=now,
                                 window_s=window_s))
        return out


# ---------------------------------------------------------------------- a load step on an autoscaled farm
@dataclass
class LoadStepRun:
    """What ``run_load_step`` measured: per request, per window, and the scale-out times."""

    latency: "object"  # np.ndarray, arrival -> end (s); a request that gave up ends at arrival + timeout
    served: "object"
    arrivals: "object"
    timeline: "object"  # pandas DataFrame, one row per window
    decisions: list
    scale_out_s: float  # the HPA's first scale-up after the step -> first request served by a pod it added
    detection_s: float  # step -> that first scale-up
    recovery_s: float  # step -> first of ``recovery_windows`` windows in a row meeting the objective again
    ups: int
    replicas_final: int
    ready_final: int


def run_load_step(arrivals, service, policy, config: HPAConfig, cold_start_s: float, readiness_period_s: float,
                  client_timeout_s: float, step_at_s: float, horizon_s: float, slo_s: float,
                  window_s: float = 10.0, recovery_windows: int = 3, in_flight_metric: bool = False) -> LoadStepRun:
    """A ``FifoFarm`` grown and shrunk by the HPA while ``arrivals`` (with ``service``) come in.

    Pods start at ``config.min_replicas`` (warm) and a new pod takes traffic once Ready
    (``cold_start_s`` + the next readiness probe). Every ``config.sync_period_s`` the HPA reads
    each Ready pod's busy share (CPU, %) or its time-averaged requests in flight over the last
    period. Requests are routed lazily: every control event (a sync, a pod turning Ready or
    leaving) first routes the arrivals before it, so each decision sees the replica set of its
    own instant. A window meets the objective when 99% of its requests were answered within
    ``slo_s``; a caller that gave up (``client_timeout_s`` in a queue) never is.
    """
    import numpy as np
    import pandas as pd
    import simpy

    from .balancer import FifoFarm
    from .metrics import grouped_percentile

    arrivals = np.asarray(arrivals, dtype=float)
    n = arrivals.size
    env = simpy.Environment()
    farm = FifoFarm(policy, 0, timeout=client_timeout_s)
    ready_log: list[tuple[float, int]] = []
    a_list, s_list, k_list = arrivals.tolist(), np.asarray(service, dtype=float).tolist(), [0] * n
    host, start, end, served = [0] * n, [0.0] * n, [0.0] * n, [False] * n
    state = {"i": 0}
    snap: dict[int, tuple[float, float, float]] = {}  # pod -> (time, busy s, in-flight area) at the previous sync

    def route_until(t: float) -> None:
        state["i"] = farm.route_batch(a_list, s_list, k_list, state["i"], t, host, start, end, served)

    def on_ready(pod):
        route_until(env.now)  # arrivals before this instant were routed without the new pod
        farm.hosts.append(pod.id)
        ready_log.append((env.now, len(farm.hosts)))

    def on_removed(pod):
        route_until(env.now)
        farm.hosts.remove(pod.id)
        ready_log.append((env.now, len(farm.hosts)))

    def on_created(pod):
        route_until(env.now)
        while len(farm.active) <= pod.id:
            farm.add_host()
        snap[pod.id] = (env.now, 0.0, 0.0)

    deploy = Deployment(env, cold_start_s, readiness_period_s, on_ready, on_removed, on_created)
    hpa = HorizontalPodAutoscaler(config)

    def value(pod, now):
        t0, b0, f0 = snap[pod.id]
        busy, area = farm.busy_until(pod.id, now), farm.in_flight_area(pod.id, now)
        snap[pod.id] = (now, busy, area)
        if not pod.is_ready(now) or now <= t0:
            return 0.0
        return (area - f0) / (now - t0) if in_flight_metric else 100.0 * (busy - b0) / (now - t0)

    def hpa_loop():
        while True:
            yield env.timeout(config.sync_period_s)
            now = env.now
            route_until(now)
            farm.advance(now)
            current = deploy.replicas
            desired = hpa.reconcile(now, current, deploy.samples(now, lambda pod: value(pod, now),
                                                                 config.sync_period_s))
            if desired != current:
                route_until(now)
                deploy.scale(desired)

    deploy.start(config.min_replicas, warm=True)
    env.process(hpa_loop())
    env.run(until=horizon_s)
    route_until(math.inf)
    end_a, served_a = np.asarray(end), np.asarray(served, dtype=bool)
    latency = end_a - arrivals
    # the timeline by arrival window
    edges = np.arange(0.0, horizon_s + window_s, window_s)
    n_win = edges.size - 1
    win = np.clip((arrivals // window_s).astype(int), 0, n_win - 1)
    ready_t, ready_v = np.array([t for t, _ in ready_log]), np.array([v for _, v in ready_log])
    spec_t = np.array([0.0] + [t for t, _, _ in deploy.scale_events])
    spec_v = np.array([config.min_replicas] + [to for _, _, to in deploy.scale_events])
    count = np.bincount(win, minlength=n_win)
    per = lambda w: np.where(count > 0, 100 * w / np.maximum(count, 1), np.nan)  # noqa: E731
    timeline = pd.DataFrame({
        "time_s": edges[:-1], "requests": count,
        "p99_ms": grouped_percentile(latency, win, n_win, 99) * 1e3,
        "timeout_pct": per(np.bincount(win, weights=~served_a, minlength=n_win)),
        "within_slo_pct": per(np.bincount(win, weights=served_a & (latency <= slo_s), minlength=n_win)),
        "ready_replicas": ready_v[np.searchsorted(ready_t, edges[:-1], side="right") - 1].astype(int),
        "spec_replicas": spec_v[np.searchsorted(spec_t, edges[:-1], side="right") - 1].astype(int)})
    # scale-out: the HPA's first scale-up after the step -> first request served by a pod it added
    ups = [d for d in hpa.decisions if d.time_s >= step_at_s and d.desired > d.current]
    scale_out = detection = math.nan
    if ups:
        trigger = ups[0].time_s
        detection = trigger - step_at_s
        firsts = [farm.first_start[q.id] for q in deploy.all_pods if q.created == trigger and farm.served_by[q.id]]
        if firsts:
            scale_out = min(firsts) - trigger
    # recovery: from the step to the first of recovery_windows windows in a row meeting the objective again,
    # after the first window after the step that missed it (0 if none missed it)
    after = timeline[timeline["time_s"] >= step_at_s - 1e-9]
    ok = ((after["within_slo_pct"] >= 99.0) | (after["requests"] == 0)).to_numpy()
    times, missed = after["time_s"].to_numpy(), np.flatnonzero(~ok)
    recovery = 0.0 if missed.size == 0 else math.nan
    if missed.size:
        for k in range(missed[0] + 1, len(ok) - recovery_windows + 1):
            if ok[k:k + recovery_windows].all():
                recovery = float(times[k] - step_at_s)
                break
    return LoadStepRun(latency, served_a, arrivals, timeline, list(hpa.decisions), float(scale_out), float(detection),
                       float(recovery), len(ups), deploy.replicas, len(farm.hosts))


def hpa_config(target: float, metric: str, min_replicas: int, max_replicas: int, tolerance: float = 0.1,
               sync_period_s: float = 15.0, scale_down_window_s: float = 300.0, scale_up_percent: float = 100,
               scale_up_pods: int = 4, scale_up_period_s: float = 15.0) -> HPAConfig:
    """An HPAConfig with the default behaviour's shape: scale up by the larger of a Percent and a Pods policy
    per period with no stabilization, scale down by 100% per 15 s after ``scale_down_window_s``."""
    up = HPAScalingRules(0.0, (HPAScalingPolicy("Percent", scale_up_percent, scale_up_period_s),
                               HPAScalingPolicy("Pods", scale_up_pods, scale_up_period_s)), "Max")
    down = HPAScalingRules(scale_down_window_s, (HPAScalingPolicy("Percent", 100, 15.0),), "Max")
    return HPAConfig(target=target, metric=metric, min_replicas=min_replicas, max_replicas=max_replicas,
                     tolerance=tolerance, sync_period_s=sync_period_s, scale_up=up, scale_down=down)
