"""A batch cluster scheduler: nodes, ResourceQuota admission, PriorityClass ordering and preemption.

Follows Kubernetes (REFERENCES.md §14 and §26):
- ResourceQuota: each namespace has hard caps on ``requests.cpu`` and ``requests.nvidia.com/gpu``
  summed over its live pods (pending, running or terminating). A pod that would exceed them is
  refused at creation (403). Here the job's controller keeps retrying, so the refused pod waits in
  its namespace's admission line and is created when a pod of that namespace goes away (Kueue's
  BestEffortFIFO, not plain Kubernetes, where the Job controller retries with backoff). A pod
  that asks for more than the whole quota can never be created: it is counted as refused.
- The scheduling queue is sorted by priority, then by creation time. Each cycle tries every
  pending pod in that order; a pod that does not fit is skipped (no head-of-line blocking).
- Node choice among nodes that fit: NodeResourcesFit with ``MostAllocated`` (bin packing), a
  supported scoring strategy; kube-scheduler's default is ``LeastAllocated``.
- Preemption (``preemptionPolicy: PreemptLowerPriority``): when a pod fits nowhere, every node is
  tried: remove all pods of strictly lower priority; if the pod still does not fit the node is
  dropped; otherwise re-add ("reprieve") the removed pods from most to least important while the
  pod still fits. The node is picked by lowest highest-victim priority, then smallest sum of victim
  priorities, then fewest victims, then latest start of the highest-priority victims, then first.
  Victims keep their resources for their graceful termination period; the preemptor is nominated
  to the node, the node's room is held for it against pods of lower priority, and it does not
  preempt again while its victims are terminating.
Simplifications: no PodDisruptionBudgets, no candidate-node sampling (every node is a candidate),
no LimitRange, one pod per job, two resources. A victim keeps the work up to its last checkpoint
and its replacement pod joins the queue with the job's original creation time.
The engine is a plain event loop (a heap of timed events): every event is a scheduler event.
Workload helpers at the end: on-off (bursty) Poisson arrivals and the unqueued demand used to size clusters.
"""
from __future__ import annotations

import heapq
import math
from bisect import insort
from dataclasses import dataclass

import numpy as np

PREEMPT_LOWER = "PreemptLowerPriority"
NEVER = "Never"

_ARRIVE, _GONE, _FINISH = 0, 1, 2  # event kinds, in the order they are handled at one instant

WAITING, PENDING, RUNNING, TERMINATING, DONE, REFUSED = range(6)


@dataclass(frozen=True)
class PriorityClass:
    """A Kubernetes PriorityClass: ``value`` (int32, at most 1e9 for users) and ``preemption_policy``."""

    name: str
    value: int
    preemption_policy: str = PREEMPT_LOWER

    def __post_init__(self):
        if not -2**31 <= self.value <= 1_000_000_000:
            raise ValueError(f"PriorityClass {self.name}: value {self.value} outside [-2^31, 1e9]")
        if self.preemption_policy not in (PREEMPT_LOWER, NEVER):
            raise ValueError(f"preemption_policy must be {PREEMPT_LOWER} or {NEVER}")


@dataclass(frozen=True)
class ResourceQuota:
    """Hard caps of one namespace: ``requests_cpu`` (cores) and ``requests_gpu`` (nvidia.com/gpu)."""

    requests_cpu: float = float("inf")
    requests_gpu: float = float("inf")


@dataclass
class Jobs:
    """One batch of jobs as arrays (creation time and duration in hours)."""

    arrival: np.ndarray
    duration: np.ndarray
    cpu: np.ndarray
    gpu: np.ndarray
    namespace: np.ndarray  # int index

    def __len__(self) -> int:
        return len(self.arrival)

    def subset(self, mask) -> "Jobs":
        return Jobs(*(getattr(self, k)[mask] for k in ("arrival", "duration", "cpu", "gpu", "namespace")))


@dataclass
class ClusterRun:
    """What happened to each job, and the cluster's allocation over time."""

    start: np.ndarray        # first time a pod of the job was bound (NaN if never)
    end: np.ndarray          # completion time (NaN if refused)
    preempted: np.ndarray    # times the job's pod was preempted
    lost_gpu_h: np.ndarray   # GPU-hours of work thrown away (progress after the last checkpoint, grace)
    refused: np.ndarray      # bool: larger than its namespace's quota, never created
    alloc_t: np.ndarray      # times at which allocation changed
    alloc_gpu: np.ndarray    # GPUs held by pods from alloc_t[k] to alloc_t[k+1]
    alloc_cpu: np.ndarray
    capacity_gpu: float
    capacity_cpu: float

    def mean_allocated(self, t0: float, t1: float, grid: int = 400, which: str = "gpu") -> np.ndarray:
        """Allocated GPUs (or CPUs) sampled at ``grid`` midpoints of [t0, t1], for batch means."""
        t = t0 + (np.arange(grid) + 0.5) * (t1 - t0) / grid
        k = np.searchsorted(self.alloc_t, t, side="right") - 1
        series = self.alloc_gpu if which == "gpu" else self.alloc_cpu
        return np.where(k >= 0, series[np.clip(k, 0, None)], 0.0)

    def allocated_hours(self, t0: float, t1: float, which: str = "gpu") -> float:
        """Exact integral of allocated GPUs (or CPUs) over [t0, t1]."""
        series = self.alloc_gpu if which == "gpu" else self.alloc_cpu
        last = t1 if np.isfinite(t1) else max(t0, self.alloc_t[-1])  # nothing is held after the last event
        edges = np.clip(np.append(self.alloc_t, last), t0, last)
        return float(np.sum(series * np.diff(edges)))


class Cluster:
    """``nodes`` identical nodes of ``node_cpu`` cores and ``node_gpu`` GPUs shared by namespaces.

    ``priority[ns]`` is the PriorityClass of every pod of namespace ``ns``; ``quotas[ns]`` its
    ResourceQuota (None: no quota). ``grace_h`` is the victims' terminationGracePeriod, ``checkpoint_h``
    how often a job saves its progress (0: never; a preempted job restarts from scratch).
    """

    def __init__(self, nodes: int, node_cpu: float, node_gpu: float, priority: list[PriorityClass],
                 quotas: list[ResourceQuota] | None = None, grace_h: float = 30 / 3600,
                 checkpoint_h: float = 0.5):
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.n_nodes, self.node_cpu, self.node_gpu = int(nodes), float(node_cpu), float(node_gpu)
        self.priority = list(priority)
        self.quotas = quotas
        self.grace_h, self.checkpoint_h = float(grace_h), float(checkpoint_h)

    # ------------------------------------------------------------------ run
    def run(self, jobs: Jobs) -> ClusterRun:
        n = len(jobs)
        ns_arr = jobs.namespace.astype(int)
        arrival, duration = jobs.arrival.astype(float).tolist(), jobs.duration.astype(float).tolist()
        cpu, gpu, ns = jobs.cpu.astype(float).tolist(), jobs.gpu.astype(float).tolist(), ns_arr.tolist()
        prio = [self.priority[k].value for k in ns]
        can_preempt = [pc.preemption_policy == PREEMPT_LOWER for pc in self.priority]
        n_nodes, inv_g, inv_c = self.n_nodes, 1.0 / self.node_gpu, 1.0 / self.node_cpu
        free_cpu = np.full(n_nodes, self.node_cpu)
        free_gpu = np.full(n_nodes, self.node_gpu)
        on_node: list[set[int]] = [set() for _ in range(n_nodes)]
        low: dict[int, np.ndarray] = {}  # priority -> (2, nodes) CPUs and GPUs of running pods per node
        nominated: list[list[int]] = [[] for _ in range(n_nodes)]  # preemptors waiting for each node
        nominated_to = [-1] * n
        n_nominated = [0]  # pods nominated to some node
        victims_left = [0] * n  # preemptor -> its victims still terminating
        waiting_for = [-1] * n  # victim -> the preemptor it makes room for
        node_of = [-1] * n
        state = [WAITING] * n
        version = [0] * n
        run_start = [float("nan")] * n
        done_work = [0.0] * n
        start, end = [float("nan")] * n, [float("nan")] * n
        preempted, lost = [0] * n, [0.0] * n
        n_ns = len(self.priority)
        used_cpu, used_gpu = [0.0] * n_ns, [0.0] * n_ns
        admission: list[list] = [[] for _ in range(n_ns)]  # (creation time, job), in order
        pending: list[tuple] = []
        shapes: dict[tuple, int] = {}  # (gpu, cpu, priority) -> pending pods of that shape
        alloc = {"t": [0.0], "gpu": [0.0], "cpu": [0.0]}
        total = {"gpu": 0.0, "cpu": 0.0}
        events: list[tuple] = [(arrival[j], _ARRIVE, j, 0) for j in range(n)]
        heapq.heapify(events)

        def record(now):
            if alloc["t"][-1] == now:
                alloc["gpu"][-1], alloc["cpu"][-1] = total["gpu"], total["cpu"]
            else:
                alloc["t"].append(now), alloc["gpu"].append(total["gpu"]), alloc["cpu"].append(total["cpu"])

        def quota_fits(j):
            if self.quotas is None or self.quotas[ns[j]] is None:
                return True
            q = self.quotas[ns[j]]
            return used_cpu[ns[j]] + cpu[j] <= q.requests_cpu + 1e-9 and used_gpu[ns[j]] + gpu[j] <= q.requests_gpu + 1e-9

        def too_big_for_quota(j):
            q = None if self.quotas is None else self.quotas[ns[j]]
            return q is not None and (cpu[j] > q.requests_cpu + 1e-9 or gpu[j] > q.requests_gpu + 1e-9)

        def create(j):
            k = ns[j]
            used_cpu[k] += cpu[j]
            used_gpu[k] += gpu[j]
            state[j] = PENDING
            insort(pending, (-prio[j], arrival[j], j))
            shape = (gpu[j], cpu[j], prio[j])
            shapes[shape] = shapes.get(shape, 0) + 1

        def admit(k):
            """Usage of namespace k fell: create its waiting pods that now fit, in creation order."""
            keep, refused_shapes = [], set()
            for entry in admission[k]:
                j = entry[1]
                shape = (cpu[j], gpu[j])
                if shape not in refused_shapes and quota_fits(j):
                    create(j)
                else:
                    refused_shapes.add(shape)
                    keep.append(entry)
            admission[k] = keep

        def reserved(node, p, j):
            """Room held on ``node`` for nominated pods of priority >= p (other than j)."""
            rc = rg = 0.0
            for m in nominated[node]:
                if m != j and prio[m] >= p:
                    rc += cpu[m]
                    rg += gpu[m]
            return rc, rg

        def best_fit(j):
            """The node that fits j with the least room left (MostAllocated), or -1."""
            c, g, p = cpu[j], gpu[j], prio[j]
            fc, fg = free_cpu, free_gpu
            held = [node for node in range(n_nodes) if nominated[node]] if n_nominated[0] else ()
            if held:
                fc, fg = free_cpu.copy(), free_gpu.copy()
                for node in held:
                    rc, rg = reserved(node, p, j)
                    fc[node] -= rc
                    fg[node] -= rg
            if n_nodes <= 32:  # a plain loop beats numpy's per-call overhead on small clusters
                best, best_score = -1, float("inf")
                for node, (a, b) in enumerate(zip(fg.tolist(), fc.tolist())):
                    if a + 1e-9 >= g and b + 1e-9 >= c:
                        score = (a - g) * inv_g + (b - c) * inv_c
                        if score < best_score:
                            best, best_score = node, score
                return best
            score = (fg - g) * inv_g + (fc - c) * inv_c
            score[(fg + 1e-9 < g) | (fc + 1e-9 < c)] = np.inf
            node = int(np.argmin(score))
            return node if score[node] < np.inf else -1

        def bind(j, node, now):
            if nominated_to[j] >= 0:
                nominated[nominated_to[j]].remove(j)
                n_nominated[0] -= 1
                nominated_to[j] = -1
            free_cpu[node] -= cpu[j]
            free_gpu[node] -= gpu[j]
            total["cpu"] += cpu[j]
            total["gpu"] += gpu[j]
            on_node[node].add(j)
            running(node, j, 1)
            node_of[j], state[j], run_start[j] = node, RUNNING, now
            if start[j] != start[j]:
                start[j] = now
            version[j] += 1
            heapq.heappush(events, (now + duration[j] - done_work[j], _FINISH, j, version[j]))

        def running(node, j, sign):
            acc = low.get(prio[j])
            if acc is None:
                acc = low[prio[j]] = np.zeros((2, n_nodes))
            acc[0, node] += sign * cpu[j]
            acc[1, node] += sign * gpu[j]

        def select_victims(j, node):
            """SelectVictimsOnNode: remove all lower-priority pods, then reprieve the most important."""
            p = prio[j]
            lower = [v for v in on_node[node] if state[v] == RUNNING and prio[v] < p]
            if not lower:
                return None
            rc, rg = reserved(node, prio[j], j)
            fc = free_cpu[node] - rc + sum(cpu[v] for v in lower)
            fg = free_gpu[node] - rg + sum(gpu[v] for v in lower)
            if fc + 1e-9 < cpu[j] or fg + 1e-9 < gpu[j]:
                return None
            victims = []
            for v in sorted(lower, key=lambda v: (-prio[v], run_start[v], v)):  # most important first
                if fc - cpu[v] + 1e-9 >= cpu[j] and fg - gpu[v] + 1e-9 >= gpu[j]:
                    fc -= cpu[v]
                    fg -= gpu[v]
                else:
                    victims.append(v)
            return victims

        def preempt(j, now) -> bool:
            best_key, best = None, None
            room = np.stack([free_cpu, free_gpu])
            for q, acc in low.items():
                if q < prio[j]:
                    room = room + acc
            # nodes where even evicting every lower-priority pod would not make room are dropped at once
            for node in np.flatnonzero((room[0] + 1e-9 >= cpu[j]) & (room[1] + 1e-9 >= gpu[j])).tolist():
                victims = select_victims(j, node)
                if not victims:
                    continue
                top = max(prio[v] for v in victims)
                latest = max(run_start[v] for v in victims if prio[v] == top)
                key = (top, sum(prio[v] for v in victims), len(victims), -latest, node)
                if best_key is None or key < best_key:
                    best_key, best = key, (node, victims)
            if best is None:
                return False
            node, victims = best
            for v in victims:
                evict(v, j, now)
            if nominated_to[j] >= 0:
                nominated[nominated_to[j]].remove(j)
                n_nominated[0] -= 1
            nominated_to[j] = node
            nominated[node].append(j)
            n_nominated[0] += 1
            victims_left[j] = len(victims)
            return True

        def evict(v, preemptor, now):
            ran = now - run_start[v]
            saved = 0.0 if self.checkpoint_h <= 0 else math.floor(ran / self.checkpoint_h) * self.checkpoint_h
            lost[v] += (ran - saved + self.grace_h) * gpu[v]
            done_work[v] += saved
            preempted[v] += 1
            running(node_of[v], v, -1)
            state[v] = TERMINATING
            waiting_for[v] = preemptor
            version[v] += 1
            heapq.heappush(events, (now + self.grace_h, _GONE, v, version[v]))

        def release(j, now):
            node = node_of[j]
            free_cpu[node] += cpu[j]
            free_gpu[node] += gpu[j]
            total["cpu"] -= cpu[j]
            total["gpu"] -= gpu[j]
            on_node[node].discard(j)
            node_of[j] = -1
            used_cpu[ns[j]] -= cpu[j]
            used_gpu[ns[j]] -= gpu[j]

        def cycle(now):
            if not pending:
                return
            failed_fit: set = set()
            dead: set = set()  # shapes that can neither fit nor preempt in this cycle
            for entry in list(pending):
                if len(dead) == len(shapes):
                    break
                j = entry[2]
                shape = (gpu[j], cpu[j], prio[j])
                if shape in dead:
                    continue
                node = -1 if shape in failed_fit else best_fit(j)
                if node >= 0:
                    pending.remove(entry)
                    shapes[shape] -= 1
                    if not shapes[shape]:
                        del shapes[shape]
                    bind(j, node, now)
                    continue
                failed_fit.add(shape)
                if not can_preempt[ns[j]]:
                    dead.add(shape)
                elif victims_left[j] == 0 and not preempt(j, now):
                    dead.add(shape)

        while events:
            now = events[0][0]
            touched = set()
            while events and events[0][0] == now:
                _, kind, j, ver = heapq.heappop(events)
                if kind == _ARRIVE:
                    if too_big_for_quota(j):
                        state[j] = REFUSED
                        continue
                    if quota_fits(j):  # a new pod is checked against the quota at once
                        create(j)
                    else:
                        insort(admission[ns[j]], (arrival[j], j))
                elif ver != version[j]:
                    continue
                elif kind == _FINISH:
                    running(node_of[j], j, -1)
                    release(j, now)
                    state[j], end[j] = DONE, now
                    touched.add(ns[j])
                else:  # _GONE: a victim's grace period is over; its job makes a new pod
                    release(j, now)
                    p = waiting_for[j]
                    if p >= 0 and victims_left[p] > 0:
                        victims_left[p] -= 1
                    waiting_for[j] = -1
                    state[j] = WAITING
                    insort(admission[ns[j]], (arrival[j], j))
                    touched.add(ns[j])
            for k in sorted(touched):
                admit(k)
            cycle(now)
            record(now)
        return ClusterRun(np.array(start), np.array(end), np.array(preempted), np.array(lost),
                          np.array(state) == REFUSED, np.array(alloc["t"]),
                          np.array(alloc["gpu"]), np.array(alloc["cpu"]),
                          self.n_nodes * self.node_gpu, self.n_nodes * self.node_cpu)


# ---------------------------------------------------------------------- workload helpers
def on_off_arrivals(rng, rate: float, burstiness: float, on_h: float, window: float) -> np.ndarray:
    """Poisson arrivals at rate x burstiness during on periods (Exp(on_h)), none during off (Exp(on_h (b-1)))."""
    if burstiness <= 1.0:
        return np.sort(rng.uniform(0, window, rng.poisson(rate * window)))
    off_h = on_h * (burstiness - 1)
    t, on, out = 0.0, rng.random() < 1 / burstiness, []
    while t < window:
        length = rng.exponential(on_h if on else off_h)
        if on:
            end = min(t + length, window)
            out.append(rng.uniform(t, end, rng.poisson(rate * burstiness * (end - t))))
        t, on = t + length, not on
    return np.sort(np.concatenate(out)) if out else np.zeros(0)


def unqueued_demand(jobs: Jobs, t: np.ndarray, which: str) -> np.ndarray:
    """Requests of the jobs running at each time if every job started on arrival (no queue)."""
    req = jobs.gpu if which == "gpu" else jobs.cpu
    a, e = np.argsort(jobs.arrival), np.argsort(jobs.arrival + jobs.duration)
    up = np.concatenate([[0], np.cumsum(req[a])])[np.searchsorted(jobs.arrival[a], t, side="right")]
    down = np.concatenate([[0], np.cumsum(req[e])])[np.searchsorted((jobs.arrival + jobs.duration)[e], t, "right")]
    return up - down


def time_quantile(jobs: Jobs, window: float, which: str, q: float) -> float:
    """Exact time-weighted q-quantile over [0, window] of the unqueued demand (a step function)."""
    req = jobs.gpu if which == "gpu" else jobs.cpu
    t = np.concatenate([jobs.arrival, jobs.arrival + jobs.duration, [0.0, window]])
    step = np.concatenate([req, -req, [0.0, 0.0]])
    order = np.argsort(t, kind="stable")
    t, level = np.clip(t[order], 0, window), np.cumsum(step[order])
    dwell = np.diff(t)  # level[k] holds from t[k] to t[k+1]
    levels, dwell = level[:-1][dwell > 0], dwell[dwell > 0]
    if levels.size == 0:
        return 0.0
    by = np.argsort(levels, kind="stable")
    cum = np.cumsum(dwell[by])
    k = min(int(np.searchsorted(cum, q * cum[-1] - 1e-9)), levels.size - 1)
    return float(levels[by][k])
