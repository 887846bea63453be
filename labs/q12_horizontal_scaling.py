"""Q12: scaling model serving out across replicas, and autoscaling it after a load step.

Scaling (three arms): N single-worker replicas behind Envoy's balancer policies
(``sim.balancer``): sticky RING_HASH on Zipf-skewed users, LEAST_REQUEST (P2C) and
ROUND_ROBIN. Each arm's sustainable throughput is the largest Poisson rate with P99
within ``slo_p99_ms`` and every queue stable (``sim.capacity``); speedup is
sustainable(N) / sustainable(1), efficiency speedup / N (the seed's formula).
Scale-out (pattern arm): the Kubernetes HPA (``sim.autoscaler``) grows a P2C farm after
a load step; a new replica serves after ``cold_start_s`` and the next readiness probe.
Parts: ``one_replica``, ``stateless``, ``sticky`` and ``scale_out``, each cached on the
parameters it reads, so moving a knob reruns only the experiments that read it.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import simpy

from sim.autoscaler import Deployment, HPAConfig, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler
from sim.balancer import FifoFarm, LeastRequest, RingHash, RoundRobin, keys_moved_fraction, simulate_farm, xxhash64
from sim.capacity import max_load_within_slo
from sim.components import step_arrivals
from sim.dist import Empirical, Lognormal, Zipf
from sim.metrics import grouped_percentile
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .params import fmt_value
from .measure import Measurements

WARMUP_FRACTION = 0.1  # share of each evaluation's requests dropped before measuring P99
RHO_TOLERANCE = 0.005  # the search stops when the load bracket is narrower than this
RHO_MAX = 0.999  # highest offered load (fraction of N x service rate) the search tries
WINDOW_S = 10.0  # width of the autoscaling experiment's latency windows
ONE_REPLICA_FACTOR = 10  # the one-replica baseline simulates this many times the requests
RECOVERY_WINDOWS = 3  # consecutive windows within the SLO that count as "met again"
AUTOSCALE_CAP = 400_000  # most requests the autoscaling run may simulate
ARMS = ("baseline", "pattern", "round_robin")

SERVICE = ("service_dist", "service_ms", "service_cv")
SCALING = ("requests", *SERVICE, "slo_p99_ms")


# ---------------------------------------------------------------------- inputs
@functools.lru_cache(maxsize=1)
def _mlp_shape() -> Empirical:
    """The mlp's measured per-request times (batch 1) at unit mean: the measured shape only."""
    from sim.profiles import load_reference_profile

    return load_reference_profile("mlp").service_time(1).rescaled(1.0)


def _service(p) -> Empirical | Lognormal:
    """The inference-time distribution the settings describe (seconds)."""
    mean = p.service_ms / 1e3
    if p.service_dist == "mlp_profile":
        return _mlp_shape().rescaled(mean)
    return Lognormal(mean, p.service_cv)


def _service_sample(p, rng: np.random.Generator, n: int) -> np.ndarray:
    return _service(p).sample(rng, n)


def _service_label(p) -> str:
    if p.service_dist == "mlp_profile":
        return f"the mlp's measured times (cv {math.sqrt(_mlp_shape().scv):.2f}) rescaled to {p.service_ms:g} ms"
    return f"lognormal inference times, mean {p.service_ms:g} ms, cv {p.service_cv:g}"


_HASHES: dict[str, np.ndarray] = {"h": np.empty(0, dtype=np.uint64)}


def _user_hashes(users: int) -> np.ndarray:
    """xxHash64 of each user's session key ``user-<k>`` (what Envoy hashes from a header)."""
    have = _HASHES["h"]
    if have.size < users:
        extra = np.array([xxhash64(f"user-{k}") for k in range(have.size, users)], dtype=np.uint64)
        _HASHES["h"] = have = np.concatenate([have, extra])
    return have[:users]


@functools.lru_cache(maxsize=64)
def _ring(n: int, minimum_ring_size: int, hash_balance_factor: int = 0) -> RingHash:
    return RingHash(range(n), minimum_ring_size=minimum_ring_size, hash_balance_factor=hash_balance_factor)


@functools.lru_cache(maxsize=16)
def _zipf(users: int, s: float) -> Zipf:
    return Zipf(users, s)


# ---------------------------------------------------------------------- rules
def _balance_factor(p) -> str | None:
    if p.hash_balance_factor == 0 or p.hash_balance_factor >= 100:
        return None
    return "0 (off) or an integer in [100, 1000] %"


def _step_inside(p) -> str | None:
    if p.step_at_s < p.horizon_s:
        return None
    return f"a number in [0, {fmt_value(p.horizon_s)}) s (before horizon_s)"


def _max_over_min(p) -> str | None:
    if p.max_replicas >= p.min_replicas:
        return None
    return f"an integer in [{p.min_replicas}, 200] (at least min_replicas)"


def _slo_above_service(p) -> str | None:
    own = _service(p).quantile(0.99) * 1e3
    if p.slo_p99_ms > own * 1.05:
        return None
    return (f"a number in ({own * 1.05:.4g}, 1e+06] ms (above 1.05 x the inference time's own P99, "
            f"{own:.4g} ms, or no load at all meets it)")


def _autoscale_requests(p) -> str | None:
    expected = p.step_at_s * p.base_rps + (p.horizon_s - p.step_at_s) * p.step_rps
    if expected <= AUTOSCALE_CAP:
        return None
    room = (AUTOSCALE_CAP - p.step_at_s * p.base_rps) / (p.horizon_s - p.step_at_s)
    if room < 0.1:
        return "a lower rate: base_rps x step_at_s alone exceeds the autoscaling run's 400k requests"
    return f"a number in [0.1, {room:.4g}] req/s (the autoscaling run is capped at 400k requests)"


AUTOSCALE = ("base_rps", "step_rps", "step_at_s", "horizon_s", "min_replicas", "max_replicas", "hpa_metric",
             "target_cpu_pct", "target_in_flight", "tolerance", "sync_period_s",
             "scale_down_stabilization_window_s", "scale_up_percent", "scale_up_pods", "scale_up_period_s",
             "cold_start_s", "readiness_period_s", "client_timeout_s")


class HorizontalScalingLab(Lab):
    id = "q12"
    profiles = ("mlp",)
    arms = (Arm("baseline", "Sticky sessions", "Envoy RING_HASH on a user key: each user always hits one replica"),
            Arm("pattern", "Least request (P2C)", "Envoy LEAST_REQUEST: the less busy of choice_count random replicas"),
            Arm("round_robin", "Round robin", "Envoy ROUND_ROBIN: replicas in turn, blind to their queues"),
            Arm("comparison", "Between arms", "ratios of sustainable throughput between the policies"))
    assumptions = (
        "Each replica is one worker serving requests first come, first served (sim.balancer's exact farm).",
        "Sustainable throughput: the largest Poisson rate whose P99 (after a 10% warm-up) is within slo_p99_ms, "
        "found by a root search on common random numbers, never above 99.9% of capacity.",
        "Sticky sessions are also bounded by stability: the search stops where the replica with the largest "
        "long-run share of the users' traffic saturates (a finite run cannot see that limit by itself).",
        "One replica is the same server under every policy and simulates ten times the requests (it is the "
        "noisiest estimate and the cheapest).",
        "Against a P99 objective one replica must run well below saturation while N pooled replicas run hotter, "
        "so a speedup can exceed N; with no objective stateless speedups are N and sticky ones 1 / (largest share).",
        "Scale-out time is the seed's trigger -> new replica serving: from the HPA's first scale-up after the "
        "step to the first request a replica it added starts serving.",
        "Latency recovery: from the step until 99% of requests are answered within slo_p99_ms in three 10 s "
        "windows in a row; a caller that gave up (client_timeout_s in a queue) never is.",
        "Cold start is an input, not a measurement: the lab's own mlp loads in milliseconds; 45 s stands for "
        "pulling and loading a production-size model.",
        "Not modelled: balancer overhead, shared back ends, session state transfer, warm-up after Ready, "
        "node provisioning (cluster autoscaler).",
    )
    rules = (
        Rule("hash_balance_factor", ("hash_balance_factor",), _balance_factor),
        Rule("step_at_s", ("step_at_s", "horizon_s"), _step_inside),
        Rule("max_replicas", ("max_replicas", "min_replicas"), _max_over_min),
        Rule("slo_p99_ms", ("slo_p99_ms", *SERVICE), _slo_above_service),
        Rule("step_rps", ("step_rps", "base_rps", "step_at_s", "horizon_s"), _autoscale_requests),
    )
    parts = {
        "one_replica": SCALING,
        "stateless": (*SCALING, "replicas", "choice_count", "probe_load_pct"),
        "sticky": (*SCALING, "replicas", "users", "zipf_s", "minimum_ring_size", "hash_balance_factor",
                   "probe_load_pct"),
        "scale_out": (*SERVICE, "slo_p99_ms", "choice_count", *AUTOSCALE),
    }
    headline = ("pattern", "speedup_x")
    refine_param = "requests"
    budget_s = 0.5
    params = (
        # ---- the scaling experiment
        Param("replicas", 10, 2, 64, unit="replicas", key=True, help="N, the replica count compared with one replica"),
        Param("requests", 6000, 1000, 200000, unit="requests", help="requests per evaluation of the load search"),
        Param("service_dist", "lognormal", choices=("lognormal", "mlp_profile"),
              help="inference time: lognormal, or the mlp's measured times rescaled to service_ms"),
        Param("service_ms", 100.0, 1.0, 5000.0, unit="ms", help="mean inference time of one request on one replica"),
        Param("service_cv", 1.0, 0.1, 4.0, unit="", help="coefficient of variation of the lognormal inference time"),
        Param("slo_p99_ms", 1000.0, 1.0, 1e6, unit="ms", key=True,
              help="latency objective: throughput counts only while P99 stays within it"),
        Param("users", 1000, 1, 100000, unit="users", help="distinct users (session keys) sending requests"),
        Param("zipf_s", 1.0, 0.0, 3.0, unit="", key=True, help="Zipf exponent of user activity (0: all equally active)"),
        Param("minimum_ring_size", 1024, 16, 65536, unit="entries", help="ring hash entries (Envoy default 1024)"),
        Param("hash_balance_factor", 0, 0, 1000, unit="%", help="ring hash bounded load: 0 off, else >= 100 (150 = 1.5x)"),
        Param("choice_count", 2, 1, 16, unit="hosts", help="least request: random hosts compared per pick (Envoy 2)"),
        Param("probe_load_pct", 70.0, 5.0, 99.0, unit="%", help="load (of N replicas' capacity) where P50/P99 are reported"),
        # ---- the autoscaling experiment
        Param("base_rps", 8.0, 0.1, 10000.0, unit="req/s", help="offered load before the step"),
        Param("step_rps", 50.0, 0.1, 10000.0, unit="req/s", help="offered load after the step"),
        Param("step_at_s", 60.0, 0.0, 3600.0, unit="s", help="when the load steps up"),
        Param("horizon_s", 480.0, 60.0, 7200.0, unit="s", help="simulated length of the autoscaling run"),
        Param("min_replicas", 2, 1, 100, unit="replicas", help="HPA minReplicas (and the starting size)"),
        Param("max_replicas", 20, 1, 200, unit="replicas", help="HPA maxReplicas"),
        Param("hpa_metric", "cpu", choices=("cpu", "in_flight"), key=True,
              help="cpu: busy share (caps at 100%); in_flight: requests in flight per pod"),
        Param("target_cpu_pct", 70.0, 1.0, 100.0, unit="%", help="HPA target average CPU utilization"),
        Param("target_in_flight", 1.0, 0.1, 1000.0, unit="requests", help="HPA target requests in flight per pod"),
        Param("tolerance", 0.1, 0.0, 1.0, unit="", help="HPA tolerance: no change while |metric/target - 1| <= this"),
        Param("sync_period_s", 15.0, 1.0, 300.0, unit="s", help="HPA sync period (default 15 s)"),
        Param("scale_down_stabilization_window_s", 300.0, 0.0, 3600.0, unit="s",
              help="HPA scale-down stabilization window (default 300 s)"),
        Param("scale_up_percent", 100, 1, 1000, unit="%", help="HPA scale-up policy Percent per period (default 100)"),
        Param("scale_up_pods", 4, 1, 100, unit="pods", help="HPA scale-up policy Pods per period (default 4)"),
        Param("scale_up_period_s", 15.0, 1.0, 1800.0, unit="s", help="periodSeconds of both scale-up policies"),
        Param("cold_start_s", 45.0, 0.0, 1800.0, unit="s", key=True,
              help="new replica: container start + model load before readiness can pass"),
        Param("readiness_period_s", 10.0, 0.0, 300.0, unit="s", help="readiness probe periodSeconds (default 10)"),
        Param("client_timeout_s", 30.0, 0.01, 600.0, unit="s", help="a caller gives up if not started within this"),
    )
    exercises = (
        Exercise("Make every user equally active (zipf_s = 0). How close do ten sticky replicas now get to ten times "
                 "one replica's throughput?", {"zipf_s": 0.0}, ("baseline", "speedup_x")),
        Exercise("Keep session affinity but bound each replica's load to 1.5x the average (hash_balance_factor = 150). "
                 "What happens to the sticky speedup?", {"hash_balance_factor": 150}, ("baseline", "speedup_x")),
        Exercise("Scale on requests in flight instead of CPU (which cannot read above 100%). How much sooner is the "
                 "latency objective met again after the step?", {"hpa_metric": "in_flight"}, ("pattern", "latency_recovery_s")),
    )

    # ------------------------------------------------------------------ parts
    def part_one_replica(self, seed: int, p) -> float:
        """Sustainable rate (req/s) of one replica: the same server under every policy."""
        n1 = p.requests * ONE_REPLICA_FACTOR
        return _Search(p, seed, n1).sustainable("round_robin", 1)

    def part_stateless(self, seed: int, p) -> dict:
        """Round robin and least request: sustainable rates at 1 < k <= N (and 10), and a probe at N."""
        search = _Search(p, seed, p.requests)
        return {arm: search.arm_results(arm, p.replicas, p.probe_load_pct) for arm in ("pattern", "round_robin")}

    def part_sticky(self, seed: int, p) -> dict:
        """Ring hash on Zipf users: sustainable rates, a probe at N, keys moved and the stability limit."""
        zipf = _zipf(p.users, p.zipf_s)
        keys = _user_hashes(p.users)[zipf.sample(Streams(seed)["users"], p.requests)]
        search = _Search(p, seed, p.requests, keys)
        out = search.arm_results("baseline", p.replicas, p.probe_load_pct)
        ring = p.minimum_ring_size
        out["keys_moved"] = keys_moved_fraction(_ring(p.replicas, ring), _ring(p.replicas + 1, ring), np.unique(keys))
        out["stability_limit"] = search.stable_limit("baseline", p.replicas)
        out["top_user_share"] = float(zipf.weights[0])
        return out

    def part_scale_out(self, seed: int, p) -> dict:
        """The autoscaling run after a load step (pattern arm)."""
        return _autoscale(p, Streams(seed))

    # ------------------------------------------------------------------ model
    def simulate(self, seed: int, p) -> Outcome:
        N = p.replicas
        one = self.part("one_replica", seed, p)
        stateless, sticky = self.part("stateless", seed, p), self.part("sticky", seed, p)
        per_arm = {"baseline": sticky, **stateless}
        m = Measurements((*ARMS, "comparison"))
        mu = 1e3 / p.service_ms
        none_1 = ("one replica meets no load within the SLO at this request budget (the sample P99 of the "
                  "inference time alone exceeds it); raise requests or slo_p99_ms")
        shares = []
        for arm in ARMS:
            r = per_arm[arm]
            top = r["curve"][N]
            m.value(arm, "sustainable_rps_1", one)
            m.value(arm, "sustainable_rps", top)
            m.ratio(arm, "speedup_x", (arm, "sustainable_rps"), (arm, "sustainable_rps_1"), missing=none_1)
            eff = m.metrics[arm]["speedup_x"] * 100.0 / N
            m.value(arm, "scaling_efficiency_pct", eff, missing=none_1)
            m.value(arm, "speedup_10_replicas_x", r["curve"][10] / one if one > 0 else np.nan, missing=none_1)
            m.percentiles(arm, r["probe_latency"], (50, 99))
            m.value(arm, "hot_replica_share_pct", 100.0 * r["share"].max())
            m.value(arm, "sustainable_load_pct", 100.0 * top / (N * mu))
            shares.append(pd.DataFrame({"arm": arm, "replica": np.arange(N), "share_pct": 100 * r["share"]}))
        m.value("baseline", "keys_moved_pct", 100.0 * sticky["keys_moved"])
        m.value("baseline", "stability_limit_pct", 100.0 * sticky["stability_limit"])
        m.value("baseline", "top_user_share_pct", 100.0 * sticky["top_user_share"])

        auto = self.part("scale_out", seed, p)
        _autoscale_metrics(m, p, auto)
        never = "a policy sustained no load within the SLO at this request budget"
        m.ratio("comparison", "stateless_over_sticky_x", ("pattern", "sustainable_rps"), ("baseline", "sustainable_rps"),
                missing=never)
        m.ratio("comparison", "p2c_over_round_robin_x", ("pattern", "sustainable_rps"),
                ("round_robin", "sustainable_rps"), missing=never)
        m.value("comparison", "speedup_gap_x", m.metrics["pattern"]["speedup_x"] - m.metrics["baseline"]["speedup_x"],
                missing=none_1)

        scaling = pd.DataFrame([{"arm": arm, "replicas": k, "sustainable_rps": one if k == 1 else per_arm[arm]["curve"][k],
                                 "linear_rps": k * one}
                                for arm in ARMS for k in sorted({1, *per_arm[arm]["curve_ns"]})])
        series = {"scaling": scaling, "share": pd.concat(shares, ignore_index=True),
                  "autoscale": auto["timeline"], "hpa": auto["decisions"], "step": auto["step"]}
        sticky_limit = (f"{100 * sticky['stability_limit']:.1f}% of capacity" if not p.hash_balance_factor
                        else "none (bounded load)")
        notes = [
            f"Scaling: {p.requests} requests per load evaluation ({p.requests * ONE_REPLICA_FACTOR} for one replica) "
            f"on {_service_label(p)}; P99 objective {p.slo_p99_ms:g} ms; throughput-vs-N at N = "
            f"{', '.join(map(str, sorted({1, *per_arm['pattern']['curve_ns']})))}"
            + ("" if 10 in per_arm["pattern"]["curve_ns"] else " (and N = 10 for the ten-replica claims)") + ".",
            f"Sticky: {p.users} users, Zipf {p.zipf_s:g}, the most active sends "
            f"{100 * sticky['top_user_share']:.1f}% of requests; stability limit {sticky_limit}.",
            f"Autoscaling: {auto['requests']} requests over {p.horizon_s:g} s, {p.base_rps:g} -> {p.step_rps:g} req/s "
            f"at {p.step_at_s:g} s; HPA on {p.hpa_metric}; cold start {p.cold_start_s:g} s + probe every "
            f"{p.readiness_period_s:g} s.",
        ]
        return Outcome(m, series, notes=notes)

    # ------------------------------------------------------------------ plots
    def plots(self, result):
        from .plotting import ARM_COLOURS, figure, shade

        figs = []
        sc = result.series["scaling"]
        fig, ax = figure("Sustainable throughput (P99 within the SLO) vs replicas")
        for arm, df in sc.groupby("arm", sort=False):
            ax.plot(df["replicas"], df["sustainable_rps"], marker="o", lw=1.4, label=LAB.arm(arm).label,
                    color=ARM_COLOURS.get(arm, "#148f77"))
        lin = sc[sc["arm"] == "pattern"]
        ax.plot(lin["replicas"], lin["linear_rps"], ls="--", color="0.5", lw=1, label="linear (N x one replica)")
        ax.set_xlabel("replicas")
        ax.set_ylabel("requests/s")
        ax.legend(loc="best", fontsize=8)
        figs.append(fig)

        sh = result.series["share"]
        fig, ax = figure("Share of requests per replica at the probe load")
        arms = [a for a in ("baseline", "pattern", "round_robin") if a in set(sh["arm"])]
        width = 0.8 / len(arms)
        for k, arm in enumerate(arms):
            df = sh[sh["arm"] == arm]
            ax.bar(df["replica"] + (k - (len(arms) - 1) / 2) * width, df["share_pct"], width, label=LAB.arm(arm).label,
                   color=ARM_COLOURS.get(arm, "#148f77"))
        n = sh["replica"].max() + 1
        ax.axhline(100 / n, color="0.4", ls="--", lw=1, label="even share")
        ax.set_xlabel("replica")
        ax.set_ylabel("% of requests")
        ax.legend(loc="best", fontsize=8)
        figs.append(fig)

        tl = result.series["autoscale"]
        step = result.series["step"].iloc[0]
        fig, ax = figure("Autoscaling after a load step (pattern arm): P99 per window and replicas")
        shade(ax, [(step.step_at_s, tl["time_s"].max() + WINDOW_S)], "after the step")
        ax.plot(tl["time_s"], tl["p99_ms"], color=ARM_COLOURS["pattern"], lw=1.4, label="P99 per window")
        ax.axhline(step.slo_p99_ms, color="#c0392b", ls="--", lw=1, label="SLO")
        ax.set_yscale("log")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("P99 (ms, log)")
        ax2 = ax.twinx()
        ax2.step(tl["time_s"], tl["spec_replicas"], where="post", color="0.3", lw=1, ls=":", label="replicas (spec)")
        ax2.step(tl["time_s"], tl["ready_replicas"], where="post", color="#27ae60", lw=1.4, label="replicas ready")
        ax2.set_ylabel("replicas")
        ax2.set_ylim(0, max(tl["spec_replicas"].max(), 1) * 1.15)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="center right", fontsize=8)
        figs.append(fig)
        return figs


# ---------------------------------------------------------------------- the scaling experiment
class _Search:
    """Common random numbers and the load search of the scaling experiment for one part."""

    def __init__(self, p, seed: int, n: int, keys: np.ndarray | None = None):
        streams = Streams(seed)
        self.p, self.seed = p, seed
        self.unit_arrivals = np.cumsum(streams["arrivals"].exponential(1.0, n))  # rate 1; rate r uses x / r
        self.service = _service_sample(p, streams["service"], n)
        self.keys = keys
        self.mu = 1e3 / p.service_ms
        self.slo = p.slo_p99_ms / 1e3

    def policy(self, arm: str, n: int):
        p = self.p
        if arm == "round_robin" or n == 1:
            return RoundRobin()
        if arm == "pattern":
            return LeastRequest(Streams(self.seed).fresh("lb"), p.choice_count)
        return _ring(n, p.minimum_ring_size, p.hash_balance_factor)  # keeps no per-run state

    def run(self, arm: str, n: int, rho: float):
        """(latency, host) after the warm-up, at offered load ``rho`` of n replicas' capacity."""
        m = self.unit_arrivals.size
        skip = int(m * WARMUP_FRACTION)
        arrivals = self.unit_arrivals / (rho * n * self.mu)
        keys = self.keys if (n > 1 and self.keys is not None) else None
        run = simulate_farm(arrivals, self.service, self.policy(arm, n), n, keys)
        return (run.end - arrivals)[skip:], run.host[skip:]

    def stable_limit(self, arm: str, n: int) -> float:
        """Highest load (fraction of n replicas' capacity) at which every replica's queue is stable.

        Round robin and least request spread work evenly in the long run (and least request,
        like bounded-load hashing, sends work away from a backed-up replica): 1. Plain ring
        hash sends each replica its users' traffic for ever, so the replica with the largest
        long-run share s saturates at load 1 / (n s).
        """
        p = self.p
        if arm != "baseline" or n == 1 or p.hash_balance_factor:
            return 1.0
        hosts = _ring(n, p.minimum_ring_size).route(_user_hashes(p.users))
        share = np.bincount(hosts, weights=_zipf(p.users, p.zipf_s).weights, minlength=n)
        return float(1.0 / (n * share.max()))

    def sustainable(self, arm: str, n: int) -> float:
        """Largest arrival rate (req/s) whose P99 is within the SLO and every replica stable."""
        skip = int(self.service.size * WARMUP_FRACTION)
        top = min(RHO_MAX, self.stable_limit(arm, n) * (1 - 1e-9))
        rho = max_load_within_slo(lambda r: float(np.percentile(self.run(arm, n, r)[0], 99)), self.slo,
                                  float(np.percentile(self.service[skip:], 99)), top, RHO_TOLERANCE)
        return rho * n * self.mu

    def arm_results(self, arm: str, N: int, probe_load_pct: float) -> dict:
        curve_ns = sorted({max(2, N // 2), N})
        curve = {k: self.sustainable(arm, k) for k in curve_ns}
        if 10 not in curve:
            curve[10] = self.sustainable(arm, 10)
        latency, host = self.run(arm, N, probe_load_pct / 100.0)
        return {"curve": curve, "curve_ns": curve_ns, "probe_latency": latency,
                "share": np.bincount(host, minlength=N) / host.size}


# ---------------------------------------------------------------------- the autoscaling experiment
def _hpa_config(p) -> HPAConfig:
    up = HPAScalingRules(0.0, (HPAScalingPolicy("Percent", p.scale_up_percent, p.scale_up_period_s),
                               HPAScalingPolicy("Pods", p.scale_up_pods, p.scale_up_period_s)), "Max")
    down = HPAScalingRules(p.scale_down_stabilization_window_s, (HPAScalingPolicy("Percent", 100, 15.0),), "Max")
    cpu = p.hpa_metric == "cpu"
    return HPAConfig(target=p.target_cpu_pct if cpu else p.target_in_flight, metric="cpu" if cpu else "pods",
                     min_replicas=p.min_replicas, max_replicas=p.max_replicas, tolerance=p.tolerance,
                     sync_period_s=p.sync_period_s, scale_up=up, scale_down=down)


def _autoscale(p, streams: Streams) -> dict:
    horizon, step_at = p.horizon_s, p.step_at_s
    arrivals = step_arrivals(streams["autoscale_arrivals"], p.base_rps, p.step_rps, step_at, horizon)
    n = arrivals.size
    service = _service_sample(p, streams["autoscale_service"], n)
    env = simpy.Environment()
    farm = FifoFarm(LeastRequest(streams["autoscale_lb"], p.choice_count), 0, timeout=p.client_timeout_s)
    ready_log: list[tuple[float, int]] = []

    def on_ready(pod):
        route_until(env.now)  # arrivals before this instant were routed without the new pod
        farm.hosts.append(pod.id)
        ready_log.append((env.now, len(farm.hosts)))

    def on_removed(pod):
        route_until(env.now)
        farm.hosts.remove(pod.id)
        ready_log.append((env.now, len(farm.hosts)))

    a_list, s_list, k_list = arrivals.tolist(), service.tolist(), [0] * n
    host, start, end, served = [0] * n, [0.0] * n, [0.0] * n, [False] * n  # lists: cheaper to fill one by one
    state = {"i": 0}
    snap: dict[int, tuple[float, float, float]] = {}  # pod -> (time, busy s, in-flight area) at the previous sync

    def route_until(t: float) -> None:
        state["i"] = farm.route_batch(a_list, s_list, k_list, state["i"], t, host, start, end, served)

    def on_created(pod):
        route_until(env.now)
        while len(farm.active) <= pod.id:
            farm.add_host()
        snap[pod.id] = (env.now, 0.0, 0.0)

    deploy = Deployment(env, p.cold_start_s, p.readiness_period_s, on_ready, on_removed, on_created)
    hpa = HorizontalPodAutoscaler(_hpa_config(p))
    cpu = p.hpa_metric == "cpu"

    def observe(now: float):
        route_until(now)  # every request that arrived before the sync is on a replica
        farm.advance(now)

        def value(pod):
            # averages over the time since the previous sync (one sync period): CPU busy share, requests in flight
            t0, b0, f0 = snap[pod.id]
            busy, area = farm.busy_until(pod.id, now), farm.in_flight_area(pod.id, now)
            snap[pod.id] = (now, busy, area)
            if not pod.is_ready(now) or now <= t0:
                return 0.0
            return 100.0 * (busy - b0) / (now - t0) if cpu else (area - f0) / (now - t0)

        return deploy.replicas, deploy.samples(now, value, p.sync_period_s)

    deploy.start(p.min_replicas, warm=True)

    def hpa_loop():
        period = hpa.config.sync_period_s
        while True:
            yield env.timeout(period)
            current, pods = observe(env.now)
            desired = hpa.reconcile(env.now, current, pods)
            if desired != current:
                route_until(env.now)
                deploy.scale(desired)

    # Requests are routed lazily: every control event (a sync, a pod turning Ready or leaving) first routes
    # the arrivals before it, so each routing decision sees the replica set of its own instant.
    env.process(hpa_loop())
    env.run(until=horizon)
    route_until(math.inf)
    end, served = np.asarray(end), np.asarray(served, dtype=bool)

    latency = end - arrivals
    # --- the timeline by arrival window
    edges = np.arange(0.0, horizon + WINDOW_S, WINDOW_S)
    win = np.clip((arrivals // WINDOW_S).astype(int), 0, edges.size - 2)
    rows = []
    ready_t = np.array([t for t, _ in ready_log])
    ready_v = np.array([v for _, v in ready_log])
    spec_t = np.array([0.0] + [t for t, _, _ in deploy.scale_events])
    spec_v = np.array([p.min_replicas] + [to for _, _, to in deploy.scale_events])
    n_win = edges.size - 1
    p99_w = grouped_percentile(latency, win, n_win, 99) * 1e3
    count_w = np.bincount(win, minlength=n_win)
    timeouts_w = np.bincount(win, weights=~served, minlength=n_win)
    # a window meets the objective when 99% of its requests were answered within it (a caller that gave up never was)
    good_w = np.bincount(win, weights=served & (latency * 1e3 <= p.slo_p99_ms), minlength=n_win)
    for w in range(n_win):
        t = edges[w]
        rows.append({
            "time_s": t,
            "requests": int(count_w[w]),
            "p99_ms": float(p99_w[w]),
            "timeout_pct": float(100 * timeouts_w[w] / count_w[w]) if count_w[w] else np.nan,
            "within_slo_pct": float(100 * good_w[w] / count_w[w]) if count_w[w] else np.nan,
            "ready_replicas": int(ready_v[np.searchsorted(ready_t, t, side="right") - 1]),
            "spec_replicas": int(spec_v[np.searchsorted(spec_t, t, side="right") - 1]),
        })
    timeline = pd.DataFrame(rows)
    # --- scale-out: the HPA's first scale-up after the step -> first request served by a replica it added
    ups = [d for d in hpa.decisions if d.time_s >= step_at and d.desired > d.current]
    scale_out = detection = np.nan
    if ups:
        trigger = ups[0].time_s
        detection = trigger - step_at
        new_pods = [q for q in deploy.all_pods if q.created == trigger]
        firsts = [farm.first_start[q.id] for q in new_pods if farm.served_by[q.id]]
        if firsts:
            scale_out = min(firsts) - trigger
    # --- latency recovery: from the step to the first of RECOVERY_WINDOWS windows in a row that meet the SLO
    # again, after the first window after the step that missed it (0 if none missed it)
    after = timeline[timeline["time_s"] >= step_at - 1e-9]
    ok = ((after["within_slo_pct"] >= 99.0) | (after["requests"] == 0)).to_numpy()
    times = after["time_s"].to_numpy()
    missed = np.flatnonzero(~ok)
    recovery = 0.0 if missed.size == 0 else np.nan  # NaN: not met again within the horizon
    if missed.size:
        for k in range(missed[0] + 1, len(ok) - RECOVERY_WINDOWS + 1):
            if ok[k:k + RECOVERY_WINDOWS].all():
                recovery = float(times[k] - step_at)
                break
    return {"scale_out": float(scale_out), "detection": float(detection), "recovery": float(recovery),
            "ups": len(ups), "replicas_final": deploy.replicas, "ready_final": len(farm.hosts),
            "latency": latency, "served": served, "arrivals": arrivals, "requests": n,
            "timeline": timeline, "decisions": pd.DataFrame([vars(d) for d in hpa.decisions]),
            "step": pd.DataFrame({"step_at_s": [step_at], "slo_p99_ms": [p.slo_p99_ms]})}


def _autoscale_metrics(m: Measurements, p, auto: dict) -> None:
    """The pattern arm's scale-out metrics, read off the autoscaling run."""
    arm, step_at = "pattern", p.step_at_s
    no_up = "the HPA never scaled up after the step (metric within tolerance of its target, or at max_replicas)"
    m.value(arm, "detection_delay_s", auto["detection"], missing=no_up)
    m.value(arm, "scale_out_time_s", auto["scale_out"],
            missing=no_up if not auto["ups"] else "no replica added by the first scale-up served a request "
                                                  "before horizon_s (cold start + readiness ran past the run)")
    m.value(arm, "latency_recovery_s", auto["recovery"],
            missing="the latency objective was not met again (three windows in a row) before horizon_s")
    m.value(arm, "scale_up_decisions", float(auto["ups"]))
    m.value(arm, "replicas_final", float(auto["replicas_final"]))
    m.value(arm, "replicas_ready_final", float(auto["ready_final"]))
    a, lat, served = auto["arrivals"], auto["latency"], auto["served"]
    post = a >= step_at
    pre = (a < step_at) & (a >= min(step_at, 10.0))
    m.percentiles(arm, lat[pre], (99,), key="p{q}_before_step_ms",
                  missing="no request arrived before the step (after the first 10 s)")
    m.percentiles(arm, lat[post], (99,), key="p{q}_after_step_ms", missing="no request arrived after the step")
    m.share(arm, "timeout_after_step_pct", float(np.sum(~served[post])), float(post.sum()),
            missing="no request arrived after the step")


LAB = HorizontalScalingLab()
