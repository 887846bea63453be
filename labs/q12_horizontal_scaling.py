"""Q12 lab: scaling model serving out across replicas, and autoscaling it.

Two experiments share one set of parameters and random streams.

Scaling (all three arms). N single-worker model-server replicas sit behind a
load balancer with Envoy's policies (``sim.balancer``): ``round_robin``
(ROUND_ROBIN), ``pattern`` (LEAST_REQUEST with ``choice_count`` random picks,
P2C) and ``baseline`` (RING_HASH on a user key: sticky sessions). Users have
Zipf-skewed activity, so under affinity a busy user's whole load lands on one
replica. For each arm the lab finds the *sustainable throughput*: the largest
Poisson arrival rate at which the P99 latency stays within ``slo_p99_ms`` and
every replica's queue is stable (a root search over the offered load, every
evaluation on the same random numbers). Speedup = sustainable(N) / sustainable(1) and scaling efficiency =
speedup / N x 100% (the seed's formula). One replica is the same server under
every policy, so sustainable(1) is shared.

Autoscaling (pattern arm). A Deployment of replicas behind the P2C balancer
starts at ``min_replicas`` and the offered load steps from ``base_rps`` to
``step_rps``. The Kubernetes HPA (``sim.autoscaler``: tolerance, sync period,
scale-down stabilization, scale-up policies, not-ready pods at 0 on scale-up)
watches CPU utilization or requests in flight; each new replica is Ready only
after ``cold_start_s`` (container start and model load) and the next readiness
probe. Scale-out time is the seed's "trigger -> new replica serving": from the
HPA's first scale-up decision after the step to the first request a new
replica starts serving. The lab also reports how long after the step the
latency objective is met again (99% of requests within ``slo_p99_ms`` in three
10 s windows in a row).

Replicas are single-worker FIFO queues simulated exactly by ``sim.balancer``
(the Lindley recursion per replica, validated against SimPy request by
request); the HPA, the pods' readiness and the control loop run in SimPy.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import simpy

from sim.autoscaler import Deployment, HPAConfig, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler
from sim.balancer import FifoFarm, LeastRequest, RingHash, RoundRobin, keys_moved_fraction, simulate_farm, xxhash64
from sim.components import step_arrivals
from sim.dist import Lognormal
from sim.metrics import percentile_ci
from sim.rng import Streams

from .contract import Exercise, Lab, Outcome, Param, ParamError

WARMUP_FRACTION = 0.1  # share of each evaluation's requests dropped before measuring P99
RHO_TOLERANCE = 0.005  # the search stops when the load bracket is narrower than this
RHO_MAX = 0.999  # highest offered load (fraction of N x service rate) the search tries
WINDOW_S = 10.0  # width of the autoscaling experiment's latency windows
ONE_REPLICA_FACTOR = 10  # the one-replica baseline simulates this many times the requests (see notes)
RECOVERY_WINDOWS = 3  # consecutive windows within the SLO that count as "met again"
ARMS = ("baseline", "pattern", "round_robin")


class HorizontalScalingLab(Lab):
    id = "q12"
    profiles = ("mlp",)
    arms = ("baseline", "pattern", "round_robin", "comparison")
    headline = ("pattern", "speedup_x")
    refine_param = "requests"
    budget_s = 0.5
    params = (
        # ---- the scaling experiment
        Param("replicas", 10, 2, 64, unit="replicas", help="N, the replica count whose throughput is compared with one replica"),
        Param("requests", 6000, 1000, 200000, unit="requests", help="requests per evaluation of the load search (per arm and N)"),
        Param("service_dist", "lognormal", choices=("lognormal", "mlp_profile"),
              help="inference time: lognormal, or the mlp's measured times (data/profiles/mlp.json) rescaled to service_ms"),
        Param("service_ms", 100.0, 1.0, 5000.0, unit="ms", help="mean inference time of one request on one replica"),
        Param("service_cv", 1.0, 0.1, 4.0, unit="", help="coefficient of variation of the lognormal inference time"),
        Param("slo_p99_ms", 1000.0, 1.0, 1e6, unit="ms", help="latency objective: throughput counts only while P99 stays within it"),
        Param("users", 1000, 1, 100000, unit="users", help="distinct users (session keys) sending requests"),
        Param("zipf_s", 1.0, 0.0, 3.0, unit="", help="Zipf exponent of user activity (0: all users equally active)"),
        Param("minimum_ring_size", 1024, 16, 1 << 20, unit="entries", help="ring hash entries (Envoy default 1024)"),
        Param("hash_balance_factor", 0, 0, 1000, unit="%", help="ring hash bounded load: 0 off, else >= 100 (150 = 1.5x average)"),
        Param("choice_count", 2, 1, 16, unit="hosts", help="least request: random hosts compared per pick (Envoy default 2)"),
        Param("probe_load_pct", 70.0, 5.0, 99.0, unit="%", help="offered load (of N replicas' capacity) where P99 per arm is reported"),
        # ---- the autoscaling experiment
        Param("base_rps", 8.0, 0.1, 10000.0, unit="req/s", help="offered load before the step"),
        Param("step_rps", 50.0, 0.1, 10000.0, unit="req/s", help="offered load after the step"),
        Param("step_at_s", 60.0, 0.0, 3600.0, unit="s", help="when the load steps up"),
        Param("horizon_s", 480.0, 60.0, 7200.0, unit="s", help="simulated length of the autoscaling run"),
        Param("min_replicas", 2, 1, 100, unit="replicas", help="HPA minReplicas (and the starting size)"),
        Param("max_replicas", 20, 1, 200, unit="replicas", help="HPA maxReplicas"),
        Param("hpa_metric", "cpu", choices=("cpu", "in_flight"),
              help="cpu: utilization of the replica's request (caps at 100%); in_flight: requests in flight per pod"),
        Param("target_cpu_pct", 70.0, 1.0, 100.0, unit="%", help="HPA target average CPU utilization"),
        Param("target_in_flight", 1.0, 0.1, 1000.0, unit="requests", help="HPA target average requests in flight per pod"),
        Param("tolerance", 0.1, 0.0, 1.0, unit="", help="HPA tolerance: no change while |metric/target - 1| <= this (default 0.1)"),
        Param("sync_period_s", 15.0, 1.0, 300.0, unit="s", help="HPA sync period (default 15 s)"),
        Param("scale_down_stabilization_window_s", 300.0, 0.0, 3600.0, unit="s", help="HPA scale-down stabilization (default 300 s)"),
        Param("scale_up_percent", 100, 1, 1000, unit="%", help="HPA scale-up policy Percent per period (default 100)"),
        Param("scale_up_pods", 4, 1, 100, unit="pods", help="HPA scale-up policy Pods per period (default 4)"),
        Param("scale_up_period_s", 15.0, 1.0, 1800.0, unit="s", help="periodSeconds of both scale-up policies (default 15)"),
        Param("cold_start_s", 45.0, 0.0, 1800.0, unit="s", help="new replica: container start + model load before it can pass readiness"),
        Param("readiness_period_s", 10.0, 0.0, 300.0, unit="s", help="readiness probe periodSeconds (Kubernetes default 10)"),
        Param("client_timeout_s", 30.0, 0.01, 600.0, unit="s", help="a caller gives up when its request has not started within this"),
    )
    exercises = (
        Exercise("Make every user equally active (zipf_s = 0). How close do ten sticky replicas now get to ten times "
                 "one replica's throughput?", {"zipf_s": 0.0}, ("baseline", "speedup_x")),
        Exercise("Keep session affinity but bound each replica's load to 1.5x the average (hash_balance_factor = 150). "
                 "What happens to the sticky speedup?", {"hash_balance_factor": 150}, ("baseline", "speedup_x")),
        Exercise("Scale on requests in flight instead of CPU (which cannot read above 100%). How much sooner is the "
                 "latency objective met again after the step?", {"hpa_metric": "in_flight"}, ("pattern", "latency_recovery_s")),
    )

    # ------------------------------------------------------------------ checks
    def _check(self, p: dict) -> None:
        if p["hash_balance_factor"] and p["hash_balance_factor"] < 100:
            raise ParamError(f"parameter hash_balance_factor: {p['hash_balance_factor']} is not allowed; expected 0 (off) "
                             "or an integer in [100, 1000] %")
        if p["step_at_s"] >= p["horizon_s"]:
            raise ParamError(f"parameter step_at_s: {p['step_at_s']:g} is not allowed; expected a number in "
                             f"[0, {p['horizon_s']:g}) s (before horizon_s)")
        if p["max_replicas"] < p["min_replicas"]:
            raise ParamError(f"parameter max_replicas: {p['max_replicas']} is not allowed; expected an integer in "
                             f"[{p['min_replicas']}, 200] (at least min_replicas)")
        own_p99 = _service_quantile(p, 0.99) * 1e3
        if p["slo_p99_ms"] <= own_p99 * 1.05:
            raise ParamError(f"parameter slo_p99_ms: {p['slo_p99_ms']:g} is not allowed; expected a number in "
                             f"[{own_p99 * 1.05:.4g}, 1e+06] ms (above the inference time's own P99, {own_p99:.4g} ms, "
                             "or no load at all meets it)")
        expected = p["step_at_s"] * p["base_rps"] + (p["horizon_s"] - p["step_at_s"]) * p["step_rps"]
        if expected > 400000:
            raise ParamError(f"parameter step_rps: {p['step_rps']:g} is not allowed; expected a number in [0.1, "
                             f"{max(0.1, (400000 - p['step_at_s'] * p['base_rps']) / (p['horizon_s'] - p['step_at_s'])):.4g}] "
                             "req/s (the autoscaling run is capped at 400k requests)")

    # ------------------------------------------------------------------ model
    def simulate(self, seed: int, p) -> Outcome:
        self._check(p)
        streams = Streams(seed)
        n = p["requests"]
        n1 = n * ONE_REPLICA_FACTOR
        service = _service_sample(p, streams["service"], n1)
        unit_gaps = streams["arrivals"].exponential(1.0, n1)
        unit_arrivals = np.cumsum(unit_gaps)  # a rate-1 Poisson process; rate r uses unit_arrivals / r
        users = _zipf_users(streams["users"], p["users"], p["zipf_s"], n)
        key_hashes = _user_hashes(p["users"])[users]
        mu = 1.0 / _service_mean(p)
        N = p["replicas"]
        ctx = _SearchContext(p, unit_arrivals, service, key_hashes, mu, streams)

        one = ctx.search("round_robin", 1)  # one replica is the same server under every policy
        curve_ns = sorted({1, max(2, N // 2), N})
        curve = {arm: {1: one} for arm in ARMS}
        for arm in ARMS:
            for k in curve_ns[1:]:
                curve[arm][k] = ctx.search(arm, k)
        ten = {arm: curve[arm][10] if 10 in curve[arm] else ctx.search(arm, 10) for arm in ARMS}

        metrics: dict[str, dict[str, float]] = {}
        intervals: dict[str, dict[str, tuple[float, float]]] = {}
        shares = []
        for arm in ARMS:
            top = curve[arm][N]
            probe = ctx.evaluate(arm, N, p["probe_load_pct"] / 100.0, keep=True)
            lat_ms = probe["latency"] * 1e3
            share = np.bincount(probe["host"], minlength=N) / probe["host"].size
            shares.append(pd.DataFrame({"arm": arm, "replica": np.arange(N), "share_pct": 100 * share}))
            speedup = top / one
            metrics[arm] = {
                "sustainable_rps_1": one,
                "sustainable_rps": top,
                "speedup_x": speedup,
                "scaling_efficiency_pct": 100.0 * speedup / N,
                "speedup_10_replicas_x": ten[arm] / one,
                "p50_ms": float(np.percentile(lat_ms, 50)),
                "p99_ms": float(np.percentile(lat_ms, 99)),
                "hot_replica_share_pct": float(100 * share.max()),
                "sustainable_load_pct": 100.0 * top / (N * mu),
            }
            intervals[arm] = {f"p{q}_ms": _as_pair(percentile_ci(lat_ms, q)) for q in (50, 99)}
        metrics["baseline"]["keys_moved_pct"] = 100.0 * _keys_moved(p, N, np.unique(key_hashes))
        metrics["baseline"]["stability_limit_pct"] = 100.0 * ctx.stable_limit("baseline", N)
        sticky_limit = (f"{metrics['baseline']['stability_limit_pct']:.1f}% of capacity at N = {N}"
                        if not p["hash_balance_factor"] else "none with bounded load")
        metrics["baseline"]["top_user_share_pct"] = 100.0 * _zipf_weights(p["users"], p["zipf_s"])[0]

        auto = _autoscale(p, streams)
        metrics["pattern"].update(auto["metrics"])
        intervals["pattern"].update(auto["intervals"])
        metrics["comparison"] = {
            "stateless_over_sticky_x": metrics["pattern"]["sustainable_rps"] / metrics["baseline"]["sustainable_rps"],
            "p2c_over_round_robin_x": metrics["pattern"]["sustainable_rps"] / metrics["round_robin"]["sustainable_rps"],
            "speedup_gap_x": metrics["pattern"]["speedup_x"] - metrics["baseline"]["speedup_x"],
        }

        scaling = pd.DataFrame([{"arm": arm, "replicas": k, "sustainable_rps": v, "linear_rps": k * one}
                                for arm in ARMS for k, v in sorted(curve[arm].items())])
        series = {"scaling": scaling, "share": pd.concat(shares, ignore_index=True),
                  "autoscale": auto["timeline"], "hpa": auto["decisions"], "step": auto["step"]}
        notes = [
            f"Scaling: each load evaluation simulates {n} requests ({int(n * WARMUP_FRACTION)} dropped as warm-up; "
            f"{n * ONE_REPLICA_FACTOR} for the one-replica baseline, the noisiest estimate and the cheapest to simulate) on "
            f"{_service_label(p)}; the sustainable rate is searched to +-{RHO_TOLERANCE * 100:g}% of capacity "
            f"(P99 <= {p['slo_p99_ms']:g} ms). Throughput-vs-N points: N = {', '.join(map(str, curve_ns))}"
            + ("" if 10 in curve_ns else " (and N = 10 for the ten-replica claims)") + ".",
            f"A P99 from {int(n * (1 - WARMUP_FRACTION))} requests is good to roughly +-10-20%, which moves the one-replica "
            "rate by up to ~10% and the ten-replica rates by a few percent; raise 'requests' to refine. Sustainable also "
            "means stable: the search never goes above 99.9% of capacity nor, for sticky sessions, above the load at "
            f"which the replica with the largest long-run share of the users' traffic saturates ({sticky_limit}).",
            "Reading the speedups: against a P99 objective one replica must run well below saturation, while N replicas "
            "behind least request pool their queues and can run hotter, so a speedup can exceed N; as the objective "
            "loosens, stateless speedups fall to exactly N and sticky ones to 1 / (largest replica share).",
            f"Sticky sessions: {p['users']} users, Zipf exponent {p['zipf_s']:g}; the most active user sends "
            f"{metrics['baseline']['top_user_share_pct']:.1f}% of all requests. Ring hash: "
            f"{p['minimum_ring_size']} entries, xxHash64"
            + (f", bounded load {p['hash_balance_factor']}%" if p["hash_balance_factor"] else "") + ".",
            f"Autoscaling: {auto['requests']} requests over {p['horizon_s']:g} s, load {p['base_rps']:g} -> "
            f"{p['step_rps']:g} req/s at {p['step_at_s']:g} s; HPA on {p['hpa_metric']} (target "
            + (f"{p['target_cpu_pct']:g}%" if p["hpa_metric"] == "cpu" else f"{p['target_in_flight']:g} in flight")
            + f", averaged over the last sync period), cold start {p['cold_start_s']:g} s + readiness probe every "
            f"{p['readiness_period_s']:g} s; callers give up after {p['client_timeout_s']:g} s in a queue. "
            "Cold start is a parameter: the lab's own mlp loads in milliseconds and no load time is measured in "
            "data/profiles; 45 s stands for pulling and loading a production-size model.",
            "Not modelled: load-balancer overhead or capacity, shared back ends (feature store, model storage), "
            "session state transfer, per-replica warm-up after Ready, node provisioning (cluster autoscaler).",
        ]
        return Outcome(metrics, series, intervals, notes)

    # ------------------------------------------------------------------ plots
    def plots(self, result):
        from .plotting import ARM_COLOURS, figure, shade

        figs = []
        sc = result.series["scaling"]
        fig, ax = figure("Sustainable throughput (P99 within the SLO) vs replicas")
        for arm, df in sc.groupby("arm", sort=False):
            ax.plot(df["replicas"], df["sustainable_rps"], marker="o", lw=1.4, label=_arm_label(arm),
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
            ax.bar(df["replica"] + (k - (len(arms) - 1) / 2) * width, df["share_pct"], width, label=_arm_label(arm),
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


# ---------------------------------------------------------------------- inputs
def _arm_label(arm: str) -> str:
    return {"baseline": "sticky (ring hash)", "pattern": "least request (P2C)", "round_robin": "round robin"}.get(arm, arm)


def _as_pair(iv) -> tuple[float, float]:
    return (float(iv.low), float(iv.high))


@functools.lru_cache(maxsize=4)
def _mlp_samples() -> np.ndarray:
    from sim.profiles import load_reference_profile

    s = load_reference_profile("mlp").service_time(1).samples
    return s / s.mean()  # unit mean: the measured shape only


def _service_mean(p: dict) -> float:
    return p["service_ms"] / 1e3


def _service_quantile(p: dict, q: float) -> float:
    if p["service_dist"] == "mlp_profile":
        return float(np.quantile(_mlp_samples(), q)) * _service_mean(p)
    d = Lognormal(_service_mean(p), p["service_cv"])
    mu, sigma = d._mu_sigma
    from scipy.stats import norm

    return float(np.exp(mu + sigma * norm.ppf(q)))


def _service_sample(p: dict, rng: np.random.Generator, n: int) -> np.ndarray:
    if p["service_dist"] == "mlp_profile":
        s = _mlp_samples()
        return s[rng.integers(0, s.size, n)] * _service_mean(p)
    return Lognormal(_service_mean(p), p["service_cv"]).sample(rng, n)


def _service_label(p: dict) -> str:
    if p["service_dist"] == "mlp_profile":
        return (f"the mlp's measured per-request times (data/profiles/mlp.json, batch 1, cv "
                f"{_mlp_samples().std() :.2f}) rescaled to a {p['service_ms']:g} ms mean")
    return f"lognormal inference times, mean {p['service_ms']:g} ms, cv {p['service_cv']:g}"


@functools.lru_cache(maxsize=16)
def _zipf_weights(users: int, s: float) -> np.ndarray:
    w = np.arange(1, users + 1, dtype=float) ** (-s)
    return w / w.sum()


def _zipf_users(rng: np.random.Generator, users: int, s: float, n: int) -> np.ndarray:
    """User index per request: user k (0-based) with probability proportional to (k+1)^-s."""
    cdf = np.cumsum(_zipf_weights(users, s))
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), users - 1)


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


def _keys_moved(p: dict, n: int, keys: np.ndarray) -> float:
    return keys_moved_fraction(_ring(n, p["minimum_ring_size"]), _ring(n + 1, p["minimum_ring_size"]), keys)


# ---------------------------------------------------------------------- the scaling experiment
class _SearchContext:
    """Shared random numbers and the load search for the scaling experiment."""

    def __init__(self, p, unit_arrivals, service, key_hashes, mu, streams):
        self.p = p
        self.unit_arrivals = unit_arrivals  # ONE_REPLICA_FACTOR x requests long; N > 1 uses the first `requests`
        self.service = service
        self.keys = key_hashes
        self.mu = mu
        self.streams = streams
        self.slo = p["slo_p99_ms"] / 1e3

    def size(self, n: int) -> tuple[int, int]:
        """(requests simulated, requests dropped as warm-up) for n replicas."""
        m = self.unit_arrivals.size if n == 1 else self.keys.size
        return m, int(m * WARMUP_FRACTION)

    def policy(self, arm: str, n: int):
        p = self.p
        if arm == "round_robin" or n == 1:
            return RoundRobin()
        if arm == "pattern":
            return LeastRequest(self.streams.fresh("lb"), p["choice_count"])
        return _ring(n, p["minimum_ring_size"], p["hash_balance_factor"])  # keeps no per-run state

    def evaluate(self, arm: str, n: int, rho: float, keep: bool = False):
        """P99 (s) of one run at offered load ``rho`` of n replicas' capacity (same draws every time).

        """
        m, skip = self.size(n)
        rate = rho * n * self.mu
        arrivals = self.unit_arrivals[:m] / rate
        service = self.service[:m]
        run = simulate_farm(arrivals, service, self.policy(arm, n), n, self.keys if n > 1 else None)
        lat = (run.end - arrivals)[skip:]
        if keep:
            return {"latency": lat, "host": run.host[skip:]}
        return float(np.percentile(lat, 99))

    def stable_limit(self, arm: str, n: int) -> float:
        """Highest load (fraction of n replicas' capacity) at which every replica's queue is stable.

        Round robin and least request spread work evenly in the long run (and
        least request, like bounded-load hashing, sends work away from a
        backed-up replica), so only the total capacity binds: 1. Plain ring
        hash sends each replica the traffic of its users for ever, so the
        replica with the largest long-run share s saturates at load 1/(n s).
        A finite run cannot see this limit by itself (an overloaded queue
        needs time to grow past the SLO), so the search never goes beyond it.
        """
        if arm != "baseline" or n == 1 or self.p["hash_balance_factor"]:
            return 1.0
        p = self.p
        weights = _zipf_weights(p["users"], p["zipf_s"])
        hosts = _ring(n, p["minimum_ring_size"]).route(_user_hashes(p["users"]))
        share = np.bincount(hosts, weights=weights, minlength=n)
        return float(1.0 / (n * share.max()))

    def search(self, arm: str, n: int) -> float:
        """Largest arrival rate (req/s) whose P99 is within the SLO (and every replica stable).

        Regula falsi (Illinois variant) on log(P99 / SLO) against
        x = -log(1 - rho), in which a queue's tail latency grows roughly
        linearly. The bracket starts at rho = 0 (P99 = the inference time's own
        P99) and the lower of RHO_MAX and the stability limit. Returns the
        feasible end of the final bracket.
        """
        m, skip = self.size(n)
        g = lambda x: math.log(self.evaluate(arm, n, 1 - math.exp(-x)) / self.slo)  # noqa: E731
        lo, glo = 0.0, math.log(float(np.percentile(self.service[skip:m], 99)) / self.slo)
        top = min(RHO_MAX, self.stable_limit(arm, n) * (1 - 1e-9))
        hi = -math.log(1 - top)
        ghi = g(hi)
        if ghi <= 0:
            return top * n * self.mu
        side = 0
        for _ in range(40):
            if (1 - math.exp(-hi)) - (1 - math.exp(-lo)) < RHO_TOLERANCE:
                break
            span = hi - lo
            x = hi - ghi * span / (ghi - glo)
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
            if abs(gx) < 0.002:  # P99 within 0.2% of the SLO: take this load
                lo = x
                break
        return (1 - math.exp(-lo)) * n * self.mu


# ---------------------------------------------------------------------- the autoscaling experiment
def _hpa_config(p: dict) -> HPAConfig:
    up = HPAScalingRules(0.0, (HPAScalingPolicy("Percent", p["scale_up_percent"], p["scale_up_period_s"]),
                               HPAScalingPolicy("Pods", p["scale_up_pods"], p["scale_up_period_s"])), "Max")
    down = HPAScalingRules(p["scale_down_stabilization_window_s"], (HPAScalingPolicy("Percent", 100, 15.0),), "Max")
    cpu = p["hpa_metric"] == "cpu"
    return HPAConfig(target=p["target_cpu_pct"] if cpu else p["target_in_flight"], metric="cpu" if cpu else "pods",
                     min_replicas=p["min_replicas"], max_replicas=p["max_replicas"], tolerance=p["tolerance"],
                     sync_period_s=p["sync_period_s"], scale_up=up, scale_down=down)


def _autoscale(p: dict, streams: Streams) -> dict:
    horizon, step_at = p["horizon_s"], p["step_at_s"]
    arrivals = step_arrivals(streams["autoscale_arrivals"], p["base_rps"], p["step_rps"], step_at, horizon)
    n = arrivals.size
    service = _service_sample(p, streams["autoscale_service"], n)
    env = simpy.Environment()
    farm = FifoFarm(LeastRequest(streams["autoscale_lb"], p["choice_count"]), 0, timeout=p["client_timeout_s"])
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

    deploy = Deployment(env, p["cold_start_s"], p["readiness_period_s"], on_ready, on_removed, on_created)
    hpa = HorizontalPodAutoscaler(_hpa_config(p))
    cpu = p["hpa_metric"] == "cpu"

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

        return deploy.replicas, deploy.samples(now, value, p["sync_period_s"])

    deploy.start(p["min_replicas"], warm=True)

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
    spec_v = np.array([p["min_replicas"]] + [to for _, _, to in deploy.scale_events])
    n_win = edges.size - 1
    p99_w = _grouped_p99(latency, win, n_win) * 1e3
    count_w = np.bincount(win, minlength=n_win)
    timeouts_w = np.bincount(win, weights=~served, minlength=n_win)
    # a window meets the objective when 99% of its requests were answered within it (a caller that gave up never was)
    good_w = np.bincount(win, weights=served & (latency * 1e3 <= p["slo_p99_ms"]), minlength=n_win)
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
    slo = p["slo_p99_ms"]
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
    post = arrivals >= step_at
    pre = (arrivals < step_at) & (arrivals >= min(step_at, 10.0))
    decisions = pd.DataFrame([vars(d) for d in hpa.decisions])
    metrics = {
        "scale_out_time_s": float(scale_out),
        "detection_delay_s": float(detection),
        "latency_recovery_s": float(recovery),
        "scale_up_decisions": float(len(ups)),
        "replicas_final": float(deploy.replicas),
        "replicas_ready_final": float(len(farm.hosts)),
        "p99_before_step_ms": float(np.percentile(latency[pre], 99) * 1e3) if pre.any() else np.nan,
        "p99_after_step_ms": float(np.percentile(latency[post], 99) * 1e3) if post.any() else np.nan,
        "timeout_after_step_pct": float(100 * np.mean(~served[post])) if post.any() else np.nan,
    }
    ivs = {}
    for key, mask in (("p99_before_step_ms", pre), ("p99_after_step_ms", post)):
        if mask.sum() >= 40:
            ivs[key] = _as_pair(percentile_ci(latency[mask] * 1e3, 99))
    return {"metrics": metrics, "intervals": ivs, "timeline": timeline, "decisions": decisions,
            "requests": n, "step": pd.DataFrame({"step_at_s": [step_at], "slo_p99_ms": [slo]})}


def _grouped_p99(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """P99 of ``values`` per group (numpy's default linear interpolation); NaN for an empty group."""
    order = np.lexsort((values, group))
    v = values[order]
    counts = np.bincount(group, minlength=n_groups)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full(n_groups, np.nan)
    has = counts > 0
    pos = 0.99 * (counts[has] - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, counts[has] - 1)
    frac = pos - lo
    out[has] = v[first[has] + lo] * (1 - frac) + v[first[has] + hi] * frac
    return out


LAB = HorizontalScalingLab()
