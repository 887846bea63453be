"""Q30: many ML teams on one platform: dedicated clusters, or one shared cluster with or without guardrails.

Each tenant submits GPU training and CPU-only jobs in on-off bursts (Poisson while on; peak/mean =
``burstiness``); one bronze tenant also floods the queue with ``flood_jobs`` jobs mid-window. The same jobs
(common random numbers) run on three set-ups built from ``sim.cluster`` (Kubernetes semantics): a cluster per
tenant sized for its own demand quantile; one cluster sized for the aggregate's quantile with a ResourceQuota
per namespace and gold/bronze PriorityClasses (gold preempts bronze); the same cluster with namespaces only.
Isolation is checked exhaustively with ``sim.netpolicy``: every cross-tenant (pod, pod, port) attempt between
tenant namespaces. Cost is node-hours over the arrival window; its interval comes from the sizing quantile's.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.cluster import (NEVER, Cluster, Jobs, PriorityClass, ResourceQuota, on_off_arrivals, time_quantile,
                         unqueued_demand)
from sim.dist import Lognormal
from sim.metrics import batch_means, percentile_ci
from sim.netpolicy import (POLICY_VARIANTS, count_leaks, cross_tenant_attempts, declared_flows_allowed_pct,
                           platform_policies)
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param
from .measure import Measurements

GOLD, BRONZE = PriorityClass("gold", 1000), PriorityClass("bronze", 100)
EQUAL = PriorityClass("standard", 0, NEVER)
GPU_SIZES, GPU_PROBS = np.array([1, 2, 4, 8]), np.array([0.4, 0.3, 0.2, 0.1])
CPU_SIZES = np.array([2, 4, 8, 16])
PORTS = [(22, "TCP"), (53, "UDP"), (443, "TCP"), (5432, "TCP"), (6379, "TCP"), (8080, "TCP"), (8888, "TCP"),
         (9090, "TCP")]
FLOOD_AT, FLOOD_SPAN = 0.4, 0.1  # the flood arrives at 40% of the window; "during" is the next 10%


class MultiTenantLab(Lab):
    id = "q30"
    headline = ("comparison", "cost_reduction_pct")
    refine_param = "jobs"
    arms = (Arm("baseline", "Dedicated clusters", "one cluster per tenant, sized for that tenant's own demand quantile"),
            Arm("pattern", "Shared, quotas + priority", "one cluster sized for the aggregate; ResourceQuota per "
                "namespace, gold PriorityClass preempts bronze, default-deny NetworkPolicies"),
            Arm("no_quota", "Shared, namespaces only", "the same cluster with no quota, one priority and no "
                "NetworkPolicy: first come, first served"))
    assumptions = (
        "Job run times are lognormal (cv 1); GPU jobs ask 1/2/4/8 GPUs (40/30/20/10%) and CPUs in the node's ratio.",
        "Clusters are sized once, from the regular jobs' demand with every job started at once (no queue); "
        "the flood is unplanned.",
        "Cost is node-hours over the arrival window; every node costs the same and none is added or removed.",
        "The flooding tenant is bronze; its flood jobs ask 1 GPU each and run as long as other jobs.",
        "Utilisation is GPUs held by pods (requests, including terminating victims) over GPUs paid for.",
    )
    params = (
        Param("tenants", 10, 1, 50, unit="tenants", key=True, help="teams sharing the platform"),
        Param("tenant_gpus", 8.0, 1.0, 64.0, unit="GPUs", key=True,
              help="load: mean GPUs each tenant's regular jobs keep busy"),
        Param("burstiness", 3.0, 1.0, 10.0, unit="x", key=True,
              help="peak/mean of each tenant's arrival rate (on-off; 1 = plain Poisson, no bursts)"),
        Param("burst_hours", 6.0, 0.5, 48.0, unit="h", help="mean length of a tenant's on period"),
        Param("jobs", 3000, 300, 30000, unit="jobs", help="regular-job budget over all tenants; sets the window"),
        Param("job_hours", 2.0, 0.1, 24.0, unit="h", help="mean run time of a job (lognormal, cv 1)"),
        Param("cpu_job_share", 0.3, 0.0, 0.9, unit="fraction", help="share of jobs that are CPU-only (inference, ETL)"),
        Param("node_gpus", 8, 1, 16, unit="GPUs", help="GPUs per node"),
        Param("node_cpus", 96, 8, 256, unit="cores", help="CPU cores per node"),
        Param("sizing_quantile", 0.99, 0.5, 1.0, unit="quantile",
              help="every cluster is sized for this quantile of its own unqueued demand (1 = its peak)"),
        Param("quota_pct", 30.0, 5.0, 100.0, unit="%", key=True,
              help="each namespace's ResourceQuota, as a share of the shared cluster's GPUs and CPUs"),
        Param("priority_classes", "tiered", choices=("tiered", "equal"), key=True,
              help="tiered: gold tenants preempt bronze; equal: one class, preemptionPolicy Never"),
        Param("gold_share", 0.3, 0.0, 1.0, unit="fraction", help="share of tenants in the gold class (never the flooder)"),
        Param("flood_jobs", 400, 0, 2000, unit="jobs", help="jobs the noisy bronze tenant submits at once (0: none)"),
        Param("grace_s", 30.0, 0.0, 600.0, unit="s", help="terminationGracePeriodSeconds of a preempted pod"),
        Param("checkpoint_min", 30.0, 0.0, 600.0, unit="min",
              help="a job saves progress this often; a victim loses the rest (0: restarts from scratch)"),
        Param("policy_variant", "default_deny", choices=POLICY_VARIANTS,
              help="NetworkPolicies of the pattern arm (empty_namespace_selector: the all-namespaces bug)"),
    )
    parts = {"isolation": ("tenants", "policy_variant")}
    exercises = (
        Exercise("Turn priorities off (one class, no preemption). How slow do gold tenants' jobs get during the flood?",
                 {"priority_classes": "equal"}, ("pattern", "gold_slowdown_p95"),
                 why="The pattern arm also caps every namespace with a ResourceQuota, so the flooding tenant can hold "
                 "only its quota of GPUs: gold jobs still find room with equal priorities. Priorities start to "
                 "matter when quotas leave the cluster full (raise quota_pct or flood_jobs)."),
        Exercise("Put 30 tenants on the platform instead of 10. Where does the shared cluster's utilisation go?",
                 {"tenants": 30}, ("pattern", "utilization_pct"),
                 why="More tenants with independent bursts average out on a shared cluster: the peaks rarely "
                 "coincide, so the same capacity is busy a larger share of the time."),
        Exercise("Write the same-namespace rule with an empty namespaceSelector. How many cross-tenant attempts "
                 "get through?", {"policy_variant": "empty_namespace_selector"}, ("pattern", "leaks"),
                 why="An empty namespaceSelector selects every namespace, so the rule meant for the tenant's own "
                 "namespace admits traffic from all of them."),
        Exercise("Remove the bursts (burstiness 1). What utilisation do dedicated clusters reach now?",
                 {"burstiness": 1.0}, ("baseline", "utilization_pct"),
                 why="A dedicated cluster is sized for its tenant's peak; without bursts the peak is close to the "
                 "mean, so the cluster idles less."),
    )

    # ------------------------------------------------------------------ simulate
    def simulate(self, seed: int, p) -> Outcome:
        jobs, regular, window = _workload(Streams(seed), p)
        n_t, noisy = p.tenants, p.tenants - 1
        n_gold = min(round(p.gold_share * n_t), n_t - 1)
        tiers = [GOLD if k < n_gold else BRONZE for k in range(n_t)]
        grace_h, ckpt_h = p.grace_s / 3600, p.checkpoint_min / 60

        sizes, shared = [], _size(regular, window, p)
        for k in range(n_t):
            sizes.append(_size(regular.subset(regular.namespace == k), window, p))
        runs = {"baseline": [Cluster(sizes[k][0], p.node_cpus, p.node_gpus, [EQUAL] * n_t, None, grace_h, ckpt_h)
                             .run(jobs.subset(jobs.namespace == k)) for k in range(n_t)]}
        nodes = shared[0]
        cap_cpu, cap_gpu = nodes * p.node_cpus, nodes * p.node_gpus
        quota = ResourceQuota(p.quota_pct / 100 * cap_cpu, p.quota_pct / 100 * cap_gpu)
        classes = tiers if p.priority_classes == "tiered" else [EQUAL] * n_t
        runs["pattern"] = [Cluster(nodes, p.node_cpus, p.node_gpus, classes, [quota] * n_t, grace_h, ckpt_h).run(jobs)]
        runs["no_quota"] = [Cluster(nodes, p.node_cpus, p.node_gpus, [EQUAL] * n_t, None, grace_h, ckpt_h).run(jobs)]

        m = Measurements(("baseline", "pattern", "no_quota", "comparison"))
        order = {"baseline": np.concatenate([np.flatnonzero(jobs.namespace == k) for k in range(n_t)])}
        gold_ns = np.array([t is GOLD for t in tiers])
        for arm, rs in runs.items():
            idx = order.get(arm, np.arange(len(jobs)))
            _job_metrics(m, arm, rs, jobs, idx, gold_ns, noisy, (FLOOD_AT * window, (FLOOD_AT + FLOOD_SPAN) * window))
            _capacity_metrics(m, arm, rs, window, sizes if arm == "baseline" else [shared], p)
        iso = self.part("isolation", seed, p)
        for arm in ("baseline", "pattern", "no_quota"):
            leaks, total, declared = iso[arm]
            m.value(arm, "leaks", leaks)
            m.value(arm, "cross_tenant_blocked_pct", 100 * (total - leaks) / total if total else np.nan,
                    missing="one tenant: there is no other tenant to reach")
            m.value(arm, "declared_flows_allowed_pct", declared)
        m.saving_pct("comparison", "cost_reduction_pct", ("pattern", "node_hours"), ("baseline", "node_hours"))
        m.ratio("comparison", "others_slowdown_protection_x", ("no_quota", "others_flood_slowdown_p95"),
                ("pattern", "others_flood_slowdown_p95"), missing="one tenant: there are no other tenants to protect")

        series = {"allocation": _allocation_series(runs, window, p), "demand": _demand_series(regular, window, p, sizes,
                                                                                              shared),
                  "flood": pd.DataFrame({"start_h": [FLOOD_AT * window], "end_h": [(FLOOD_AT + FLOOD_SPAN) * window]})}
        notes = [f"Window: {window:.0f} h of arrivals ({len(regular)} regular jobs, {p.flood_jobs} flood jobs at "
                 f"{FLOOD_AT * window:.0f} h); {n_t} tenants, {n_gold} gold.",
                 f"Nodes: dedicated {sum(s[0] for s in sizes)} in total, shared {nodes}; each sized for the "
                 f"{p.sizing_quantile:g} quantile of its unqueued demand.",
                 "Cross-tenant attempts: every ordered pair of tenant namespaces x pods x ports, checked exhaustively."]
        return Outcome(m, series, notes=notes)

    def part_isolation(self, seed: int, p):
        out = {}
        tenants = [f"team-{k:02d}" for k in range(p.tenants)]
        for arm, variant in (("pattern", p.policy_variant), ("no_quota", "none")):
            ps = platform_policies(tenants, variant)
            leaks, total = count_leaks(ps, cross_tenant_attempts(ps, tenants, PORTS))
            out[arm] = (leaks, total, declared_flows_allowed_pct(ps, tenants))
        # dedicated clusters: no pod network spans two tenants, so no attempt has a route at all
        ps = platform_policies(tenants, "default_deny")
        total = sum(1 for _ in cross_tenant_attempts(ps, tenants, PORTS))
        out["baseline"] = (0, total, declared_flows_allowed_pct(ps, tenants))
        return out

    # ------------------------------------------------------------------ plots
    def plots(self, result):
        from .plotting import figure, grouped_bars, lines_by_arm

        demand, flood = result.series["demand"], result.series["flood"].iloc[0]
        spans = [(flood.start_h, flood.end_h)]
        held = lines_by_arm(result.series["allocation"], "time_h", "allocated_pct",
                            "GPUs held by pods, % of the GPUs paid for", "allocated (%)", spans=spans,
                            span_label="flood window")
        held.axes[0].set_xlabel("time (h)")
        fig, ax = figure("Unqueued GPU demand against the clusters' GPUs")
        for k, (what, df) in enumerate(demand.groupby("what", sort=False)):
            ax.plot(df["time_h"], df["gpus"], label=what, lw=1.2 if k == 0 else 2, ls="-" if k == 0 else "--")
        ax.set_xlabel("time (h)")
        ax.set_ylabel("GPUs")
        ax.legend(fontsize=8)
        groups = (("gold", "gold_flood_slowdown_p95"), ("others", "others_flood_slowdown_p95"),
                  ("noisy tenant", "noisy_slowdown_p95"))
        table = pd.DataFrame({arm: [result.metrics[arm][key] for _, key in groups]
                              for arm in ("baseline", "pattern", "no_quota")}, index=[g for g, _ in groups])
        bars, _ = grouped_bars(table.fillna(0.0), "P95 slowdown (completion / run time): gold and others in the flood window, noisy tenant overall",
                               "slowdown (x)", hline=1.0, hline_label="no wait")
        return [held, fig, bars]


# ---------------------------------------------------------------------- workload and sizing
def _workload(streams: Streams, p) -> tuple[Jobs, Jobs, float]:
    """Regular on-off jobs of every tenant (same draws in every arm), plus the noisy tenant's flood."""
    gpu_sizes = np.minimum(GPU_SIZES, p.node_gpus)
    mean_gpu = float(np.sum(gpu_sizes * GPU_PROBS))
    gpu_rate = p.tenant_gpus / (mean_gpu * p.job_hours)  # GPU jobs per hour per tenant
    rate = gpu_rate / (1 - p.cpu_job_share)
    window = p.jobs / (p.tenants * rate)
    arrivals, owners = [], []
    for k in range(p.tenants):
        rng = streams[f"tenant-{k}"]
        arrivals.append(on_off_arrivals(rng, rate, p.burstiness, p.burst_hours, window))
        owners.append(np.full(arrivals[-1].size, k))
    arrival = np.concatenate(arrivals)
    owner = np.concatenate(owners)
    n = arrival.size
    sizes = streams["sizes"]
    is_cpu = sizes.random(n) < p.cpu_job_share
    gpu = np.where(is_cpu, 0, sizes.choice(gpu_sizes, n, p=GPU_PROBS))
    cpu_per_gpu = p.node_cpus / p.node_gpus
    cpu = np.where(is_cpu, np.minimum(sizes.choice(CPU_SIZES, n), p.node_cpus), gpu * cpu_per_gpu)
    duration = Lognormal(p.job_hours, 1.0).sample(streams["durations"], n)
    regular = Jobs(arrival, duration, cpu.astype(float), gpu.astype(float), owner)
    f = p.flood_jobs
    flood = Jobs(np.full(f, FLOOD_AT * window), Lognormal(p.job_hours, 1.0).sample(streams["flood"], f),
                 np.full(f, cpu_per_gpu), np.ones(f), np.full(f, p.tenants - 1))
    jobs = Jobs(*(np.concatenate([getattr(regular, a), getattr(flood, a)])
                  for a in ("arrival", "duration", "cpu", "gpu", "namespace")))
    return jobs, regular, window


GRID = 2000


def _size(jobs: Jobs, window: float, p) -> tuple[int, int, int]:
    """Nodes for the sizing quantile of unqueued demand (GPUs and CPUs); low and high from a batch-means
    interval of the quantile over a time grid."""
    t = (np.arange(GRID) + 0.5) * window / GRID
    q = 100 * p.sizing_quantile
    out = []
    for which, per_node in (("gpu", p.node_gpus), ("cpu", p.node_cpus)):
        est = time_quantile(jobs, window, which, p.sizing_quantile)
        iv = percentile_ci(unqueued_demand(jobs, t, which), q)
        lo, hi = (iv.low, iv.high) if math.isfinite(iv.low) else (est, est)
        out.append([math.ceil(x / per_node - 1e-9) for x in (est, min(lo, est), max(hi, est))])
    return tuple(max(1, max(g, c)) for g, c in zip(*out))


# ---------------------------------------------------------------------- metrics
def _job_metrics(m: Measurements, arm: str, runs, jobs: Jobs, idx, gold_ns, noisy: int, flood: tuple) -> None:
    end = np.concatenate([r.end for r in runs])
    refused = np.concatenate([r.refused for r in runs])
    preempted = np.concatenate([r.preempted for r in runs])
    ns, arrival, duration = jobs.namespace[idx], jobs.arrival[idx], jobs.duration[idx]
    order = np.argsort(arrival, kind="stable")
    ns, arrival, duration, end, refused, preempted = (x[order] for x in (ns, arrival, duration, end, refused,
                                                                        preempted))
    slow = (end - arrival) / duration
    ok = ~refused
    groups = {"slowdown_p95": ok, "gold_slowdown_p95": ok & gold_ns[ns],
              "bronze_slowdown_p95": ok & ~gold_ns[ns] & (ns != noisy), "noisy_slowdown_p95": ok & (ns == noisy),
              "others_slowdown_p95": ok & (ns != noisy)}
    during = (arrival >= flood[0]) & (arrival < flood[1])
    groups.update({"gold_flood_slowdown_p95": groups["gold_slowdown_p95"] & during,
                   "others_flood_slowdown_p95": groups["others_slowdown_p95"] & during})
    for key, mask in groups.items():
        m.percentiles(arm, slow[mask], (95,), key=key, scale=1.0,
                      missing=f"no job of {key.split('_')[0]} tenants in this group at these settings")
    m.percentiles(arm, slow[ok], (50,), key="slowdown_p{q}", scale=1.0)
    _share(m, arm, "preempted_pct", int(np.sum(preempted > 0)), len(slow))
    m.value(arm, "preemptions", float(preempted.sum()))
    m.value(arm, "lost_gpu_hours", float(sum(r.lost_gpu_h.sum() for r in runs)))
    _share(m, arm, "refused_pct", int(refused.sum()), len(slow))


def _share(m: Measurements, arm: str, key: str, k: int, n: int) -> None:
    """A Wilson share whose low end is exactly 0 when nothing was counted (sim.metrics.wilson can return
    a rounding residue such as 1e-17 there, which would read as 'more than zero')."""
    m.share(arm, key, k, n)
    if k == 0 and key in m.intervals[arm]:
        m.intervals[arm][key] = (0.0, m.intervals[arm][key][1])


def _capacity_metrics(m: Measurements, arm: str, runs, window: float, sizes, p) -> None:
    for which, key in (("gpu", "utilization_pct"), ("cpu", "cpu_utilization_pct")):
        held = sum(r.mean_allocated(0.0, window, which=which) for r in runs)
        cap = sum(r.capacity_gpu if which == "gpu" else r.capacity_cpu for r in runs)
        iv = batch_means(100 * held / cap)
        m.value(arm, key, 100 * sum(r.allocated_hours(0.0, window, which) for r in runs) / (cap * window),
                (iv.low, iv.high))
    nodes = [sum(s[k] for s in sizes) for k in range(3)]
    m.value(arm, "nodes", nodes[0], (nodes[1], nodes[2]))
    m.value(arm, "node_hours", nodes[0] * window, (nodes[1] * window, nodes[2] * window))


def _allocation_series(runs, window: float, p) -> pd.DataFrame:
    t = (np.arange(200) + 0.5) * window / 200
    frames = []
    for arm, rs in runs.items():
        held = sum(r.mean_allocated(0.0, window, grid=200) for r in rs)
        frames.append(pd.DataFrame({"time_h": t, "allocated_pct": 100 * held / sum(r.capacity_gpu for r in rs),
                                    "arm": arm}))
    return pd.concat(frames, ignore_index=True)


def _demand_series(regular: Jobs, window: float, p, sizes, shared) -> pd.DataFrame:
    t = (np.arange(400) + 0.5) * window / 400
    d = unqueued_demand(regular, t, "gpu")
    rows = [pd.DataFrame({"time_h": t, "gpus": d, "what": "regular demand (all tenants)"}),
            pd.DataFrame({"time_h": t, "gpus": shared[0] * p.node_gpus, "what": "shared cluster GPUs"}),
            pd.DataFrame({"time_h": t, "gpus": sum(s[0] for s in sizes) * p.node_gpus,
                          "what": "dedicated clusters' GPUs (sum)"})]
    return pd.concat(rows, ignore_index=True)


LAB = MultiTenantLab()
