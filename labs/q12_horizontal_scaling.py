"""Q12: scaling model serving out across replicas, and autoscaling it after a load step.

Scaling (three arms): N single-worker replicas behind Envoy's balancer policies (``sim.balancer``):
sticky RING_HASH on Zipf-skewed users, LEAST_REQUEST (P2C) and ROUND_ROBIN. Two throughputs:
* scaling speedup: the rate at which the busiest replica is busy ``utilisation_pct`` of the time,
  N replicas over one (at most N); every request first calls a shared back end of
  ``backend_capacity_rps`` (``sim.balancer.simulate_farm_backend``), which makes it sublinear;
* pooling gain: the rate with P99 within ``slo_p99_ms`` (``sim.capacity``), N over one, divided by
  the scaling speedup: what pooling N queues behind one balancer adds under a tail objective.
Scale-out (pattern arm): the Kubernetes HPA grows a P2C farm after a load step
(``sim.autoscaler.run_load_step``); a new replica serves after ``cold_start_s`` and the next probe.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from sim.autoscaler import hpa_config, run_load_step
from sim.balancer import LeastRequest, RingHash, RoundRobin, hottest_share, keys_moved_fraction
from sim.balancer import session_key_hashes as _user_hashes
from sim.capacity import FarmSearch
from sim.components import step_arrivals
from sim.dist import Empirical, Lognormal, Zipf
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .params import fmt_value
from .measure import Measurements

WARMUP_FRACTION = 0.1  # share of each evaluation's requests dropped before measuring
RHO_MAX = 0.999  # highest offered load (fraction of N x service rate) the SLO search tries
ONE_REPLICA_FACTOR = 10  # the one-replica SLO baseline simulates this many times the requests
AUTOSCALE_CAP = 400_000  # most requests the autoscaling run may simulate
ARMS = ("baseline", "pattern", "round_robin")
SERVICE = ("service_dist", "service_ms", "service_cv")
SCALING = ("requests", *SERVICE, "slo_p99_ms")
UTIL = ("requests", *SERVICE, "utilisation_pct", "backend_capacity_rps")
STICKY = ("users", "zipf_s", "minimum_ring_size", "hash_balance_factor")


@functools.lru_cache(maxsize=1)
def _mlp_shape() -> Empirical:
    """The mlp's measured per-request times (batch 1) at unit mean: the measured shape only."""
    from sim.profiles import load_reference_profile

    return load_reference_profile("mlp").service_time(1).rescaled(1.0)


def _service(p) -> Empirical | Lognormal:
    mean = p.service_ms / 1e3
    return _mlp_shape().rescaled(mean) if p.service_dist == "mlp_profile" else Lognormal(mean, p.service_cv)


@functools.lru_cache(maxsize=64)
def _ring(n: int, minimum_ring_size: int, hash_balance_factor: int = 0) -> RingHash:
    return RingHash(range(n), minimum_ring_size=minimum_ring_size, hash_balance_factor=hash_balance_factor)


@functools.lru_cache(maxsize=16)
def _zipf(users: int, s: float) -> Zipf:
    return Zipf(users, s)


def _hot_share(p, n: int, arm: str = "baseline") -> float:
    """Long-run share of all requests on the busiest replica: 1/n for stateless policies (and bounded
    load, which sends work away from a backed-up replica), the hottest ring segment's Zipf weight for ring hash."""
    if arm != "baseline" or n == 1 or p.hash_balance_factor:
        return 1.0 / n
    return hottest_share(_ring(n, p.minimum_ring_size).route(_user_hashes(p.users)), _zipf(p.users, p.zipf_s).weights, n)


def _search(p, seed: int, n: int, arm: str, keys=None, backend: bool = False) -> FarmSearch:
    """Common random numbers for one part: rate-1 arrivals, inference and back-end times, a policy per arm."""
    streams = Streams(seed)
    unit = np.cumsum(streams["arrivals"].exponential(1.0, n))
    service = _service(p).sample(streams["service"], n)
    cap = p.backend_capacity_rps if backend else 0  # the SLO parts read no back end
    calls = streams["backend"].exponential(1.0 / cap, n) if cap else None

    def policy(k: int):
        if arm == "round_robin" or k == 1:
            return RoundRobin()
        if arm == "pattern":
            return LeastRequest(Streams(seed).fresh("lb"), p.choice_count)
        return _ring(k, p.minimum_ring_size, p.hash_balance_factor)

    return FarmSearch(unit, service, policy, p.service_ms / 1e3, calls, keys, WARMUP_FRACTION)


def _sticky_keys(p, seed: int) -> np.ndarray:
    return _user_hashes(p.users)[_zipf(p.users, p.zipf_s).sample(Streams(seed)["users"], p.requests)]


def _ns(N: int) -> list[int]:
    return sorted({1, max(2, N // 2), N, 10})


def _rule(ok, allowed):
    return lambda p: None if ok(p) else allowed(p)


def _slo_allowed(p):
    own = _service(p).quantile(0.99) * 1e3
    return (f"a number in ({own * 1.05:.4g}, 1e+06] ms (above 1.05 x the inference time's own P99, "
            f"{own:.4g} ms, or no load at all meets it)")


def _autoscale_allowed(p):
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
            Arm("comparison", "Between arms", "ratios of throughput between the policies"))
    assumptions = (
        "Each replica is one worker serving requests first come, first served (sim.balancer's exact farm).",
        "Scaling speedup: throughput with the busiest replica busy utilisation_pct of the time, N replicas over "
        "one; a worker is busy for the inference and while it waits on the shared back end. Stateless policies "
        "spread requests evenly in the long run; ring hash gives each replica its users' Zipf share for ever.",
        "Shared back end (backend_capacity_rps; 0: none): one FIFO server every request calls first, exponential "
        "time per call of mean 1 / capacity; the worker is held until it answers.",
        "Pooling gain: the largest Poisson rate with P99 (after a 10% warm-up) within slo_p99_ms, N replicas over "
        "one, divided by the scaling speedup; searched without the back end, on common random numbers, never "
        "above 99.9% of capacity, and for sticky sessions below the hot replica's saturation.",
        "One replica is the same server under every policy; its SLO search simulates ten times the requests.",
        "Scale-out time is the seed's trigger -> new replica serving: from the HPA's first scale-up after the "
        "step to the first request a replica it added starts serving.",
        "Latency recovery: from the step until 99% of requests are answered within slo_p99_ms in three 10 s "
        "windows in a row; a caller that gave up (client_timeout_s in a queue) never is.",
        "Cold start is an input, not a measurement: the lab's own mlp loads in milliseconds; 45 s stands for "
        "pulling and loading a production-size model.",
        "Not modelled: balancer overhead, session state transfer, warm-up after Ready, node provisioning.",
    )
    rules = (
        Rule("hash_balance_factor", ("hash_balance_factor",), _rule(
            lambda p: p.hash_balance_factor == 0 or p.hash_balance_factor >= 100,
            lambda p: "0 (off) or an integer in [100, 1000] %")),
        Rule("step_at_s", ("step_at_s", "horizon_s"), _rule(
            lambda p: p.step_at_s < p.horizon_s,
            lambda p: f"a number in [0, {fmt_value(p.horizon_s)}) s (before horizon_s)")),
        Rule("max_replicas", ("max_replicas", "min_replicas"), _rule(
            lambda p: p.max_replicas >= p.min_replicas,
            lambda p: f"an integer in [{p.min_replicas}, 200] (at least min_replicas)")),
        Rule("slo_p99_ms", ("slo_p99_ms", *SERVICE), _rule(
            lambda p: p.slo_p99_ms > _service(p).quantile(0.99) * 1e3 * 1.05, _slo_allowed)),
        Rule("step_rps", ("step_rps", "base_rps", "step_at_s", "horizon_s"), _rule(
            lambda p: p.step_at_s * p.base_rps + (p.horizon_s - p.step_at_s) * p.step_rps <= AUTOSCALE_CAP,
            _autoscale_allowed)),
    )
    parts = {
        "one_replica": SCALING,
        "stateless": (*SCALING, "replicas", "choice_count", "utilisation_pct"),
        "sticky": (*SCALING, "replicas", *STICKY, "utilisation_pct"),
        "util_pattern": (*UTIL, "choice_count"),  # each at one replica count k (its argument)
        "util_round_robin": UTIL,
        "util_baseline": (*UTIL, *STICKY),
        "scale_out": (*SERVICE, "slo_p99_ms", "choice_count", *AUTOSCALE),
    }
    headline = ("pattern", "speedup_x")
    refine_param = "requests"
    budget_s = 0.5
    params = (
        # ---- the scaling experiment
        Param("replicas", 10, 2, 64, unit="replicas", key=True, help="N, the replica count compared with one replica"),
        Param("requests", 6000, 1000, 200000, unit="requests", help="requests per evaluation of a load search"),
        Param("service_dist", "lognormal", choices=("lognormal", "mlp_profile"),
              help="inference time: lognormal, or the mlp's measured times rescaled to service_ms"),
        Param("service_ms", 100.0, 1.0, 5000.0, unit="ms", help="mean inference time of one request on one replica"),
        Param("service_cv", 1.0, 0.1, 4.0, unit="", help="coefficient of variation of the lognormal inference time"),
        Param("utilisation_pct", 70.0, 5.0, 99.0, unit="%", key=True,
              help="busy share of the busiest replica at which throughput is compared (and P50/P99 reported)"),
        Param("backend_capacity_rps", 0.0, 0.0, 100000.0, unit="req/s", key=True,
              help="shared back end (feature store, database) every request calls first: capacity, 0 = none"),
        Param("slo_p99_ms", 1000.0, 1.0, 1e6, unit="ms", key=True,
              help="latency objective of the pooling gain: throughput counts only while P99 stays within it"),
        Param("users", 1000, 1, 100000, unit="users", help="distinct users (session keys) sending requests"),
        Param("zipf_s", 1.0, 0.0, 3.0, unit="", key=True, help="Zipf exponent of user activity (0: all equally active)"),
        Param("minimum_ring_size", 1024, 16, 65536, unit="entries", help="ring hash entries (Envoy default 1024)"),
        Param("hash_balance_factor", 0, 0, 1000, unit="%", help="ring hash bounded load: 0 off, else >= 100 (150 = 1.5x)"),
        Param("choice_count", 2, 1, 16, unit="hosts", help="least request: random hosts compared per pick (Envoy 2)"),
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
        Param("readiness_period_s", 10.0, 1.0, 300.0, unit="s", help="readiness probe periodSeconds (default 10, minimum 1)"),
        Param("client_timeout_s", 30.0, 0.01, 600.0, unit="s", help="a caller gives up if not started within this"),
    )
    exercises = (
        Exercise("Make every user equally active (zipf_s = 0). How close do ten sticky replicas now get to ten times "
                 "one replica's throughput?", {"zipf_s": 0.0}, ("baseline", "speedup_x"),
                 why="Sticky routing pins each user to one replica; with Zipf-skewed users, the replica holding the "
                 "heaviest users saturates first. Equal users spread the load evenly, so the sticky arm gets "
                 "close to the stateless one."),
        Exercise("Put a shared feature store of 100 req/s behind the replicas (backend_capacity_rps = 100). What is "
                 "left of the stateless speedup?", {"backend_capacity_rps": 100.0}, ("pattern", "speedup_x"),
                 why="Every request now also waits at one shared store that no replica count can add capacity to: the "
                 "speedup falls short of N by the store's queueing, and stops growing once the replicas could "
                 "offer more than the store serves."),
        Exercise("Scale on requests in flight instead of CPU (which cannot read above 100%). How much sooner is the "
                 "latency objective met again after the step?", {"hpa_metric": "in_flight"}, ("pattern", "latency_recovery_s"),
                 why="CPU utilisation cannot read above 100%, so an overloaded pool looks only a little busy to the "
                 "autoscaler; requests in flight keep growing with the overload and ask for enough replicas in "
                 "one step."),
    )

    def part_one_replica(self, seed: int, p) -> float:
        """SLO-bound sustainable rate (req/s) of one replica: the same server under every policy."""
        return _search(p, seed, p.requests * ONE_REPLICA_FACTOR, "round_robin").sustainable(
            1, p.slo_p99_ms / 1e3, RHO_MAX)

    def _slo_results(self, p, search: FarmSearch, arm: str) -> dict:
        top = lambda k: min(RHO_MAX, (1 - 1e-9) / (k * _hot_share(p, k, arm)))  # noqa: E731
        curve = {k: search.sustainable(k, p.slo_p99_ms / 1e3, top(k)) for k in _ns(p.replicas)[1:]}
        rate = p.utilisation_pct / 100 / _hot_share(p, p.replicas, arm) / search.mean_service
        latency, host = search.latency(p.replicas, rate)
        return {"curve": curve, "probe_latency": latency, "share": np.bincount(host, minlength=p.replicas) / host.size}

    def part_stateless(self, seed: int, p) -> dict:
        """Round robin and least request: SLO-bound rates at 1 < k (N/2, N, 10) and a probe at N."""
        return {arm: self._slo_results(p, _search(p, seed, p.requests, arm), arm)
                for arm in ("pattern", "round_robin")}

    def part_sticky(self, seed: int, p) -> dict:
        """Ring hash on Zipf users: SLO-bound rates, a probe at N, keys moved when a replica is added."""
        keys = _sticky_keys(p, seed)
        out = self._slo_results(p, _search(p, seed, p.requests, "baseline", keys), "baseline")
        ring = p.minimum_ring_size
        out["keys_moved"] = keys_moved_fraction(_ring(p.replicas, ring), _ring(p.replicas + 1, ring), np.unique(keys))
        out["stability_limit"] = min(1.0, 1.0 / (p.replicas * _hot_share(p, p.replicas)))
        out["top_user_share"] = float(_zipf(p.users, p.zipf_s).weights[0])
        return out

    def _util_at(self, seed: int, p, arm: str, k: int) -> float:
        """Rate (req/s) at which the busiest of k replicas is busy ``utilisation_pct`` of the time under ``arm``
        (one part per replica count, so settings that share a count share its search)."""
        keys = _sticky_keys(p, seed) if arm == "baseline" else None
        search = _search(p, seed, p.requests, arm, keys, backend=True)
        return search.rate_at_utilisation(k, p.utilisation_pct / 100, _hot_share(p, k, arm),
                                          p.backend_capacity_rps or math.inf)

    def part_util_pattern(self, seed: int, p, k: int) -> float:
        return self._util_at(seed, p, "pattern", k)

    def part_util_round_robin(self, seed: int, p, k: int) -> float:
        return self._util_at(seed, p, "round_robin", k)

    def part_util_baseline(self, seed: int, p, k: int) -> float:
        return self._util_at(seed, p, "baseline", k)

    def part_scale_out(self, seed: int, p):
        """The autoscaling run after a load step (pattern arm)."""
        streams = Streams(seed)
        arrivals = step_arrivals(streams["autoscale_arrivals"], p.base_rps, p.step_rps, p.step_at_s, p.horizon_s)
        service = _service(p).sample(streams["autoscale_service"], arrivals.size)
        return run_load_step(arrivals, service, LeastRequest(streams["autoscale_lb"], p.choice_count), _hpa_config(p),
                             p.cold_start_s, p.readiness_period_s, p.client_timeout_s, p.step_at_s, p.horizon_s,
                             p.slo_p99_ms / 1e3, in_flight_metric=p.hpa_metric == "in_flight")

    def simulate(self, seed: int, p) -> Outcome:
        N, ns = p.replicas, _ns(p.replicas)
        one_slo = self.part("one_replica", seed, p)
        slo = {"baseline": self.part("sticky", seed, p), **self.part("stateless", seed, p)}
        util = {arm: {k: self.part(f"util_{arm}", seed, p, k) for k in ns[1:]} for arm in ARMS}
        util["one"] = self.part("util_round_robin", seed, p, 1)
        m = Measurements((*ARMS, "comparison"))
        none_1 = ("one replica meets no load within the SLO at this request budget (the sample P99 of the "
                  "inference time alone exceeds it); raise requests or slo_p99_ms")
        shares = []
        for arm in ARMS:
            r, u = slo[arm], util[arm]
            m.value(arm, "throughput_rps_1", util["one"])
            m.value(arm, "throughput_rps", u[N])
            m.value(arm, "speedup_x", u[N] / util["one"])
            m.value(arm, "speedup_10_replicas_x", u[10] / util["one"])
            m.value(arm, "scaling_efficiency_pct", 100.0 * u[N] / util["one"] / N)
            m.value(arm, "sustainable_rps_1", one_slo)
            m.value(arm, "sustainable_rps", r["curve"][N])
            m.ratio(arm, "slo_speedup_x", (arm, "sustainable_rps"), (arm, "sustainable_rps_1"), missing=none_1)
            m.value(arm, "pooling_gain_x", m.metrics[arm]["slo_speedup_x"] / m.metrics[arm]["speedup_x"], missing=none_1)
            m.percentiles(arm, r["probe_latency"], (50, 99))
            m.value(arm, "hot_replica_share_pct", 100.0 * r["share"].max())
            shares.append(pd.DataFrame({"arm": arm, "replica": np.arange(N), "share_pct": 100 * r["share"]}))
        sticky = slo["baseline"]
        m.value("baseline", "keys_moved_pct", 100.0 * sticky["keys_moved"])
        m.value("baseline", "stability_limit_pct", 100.0 * sticky["stability_limit"])
        m.value("baseline", "top_user_share_pct", 100.0 * sticky["top_user_share"])
        auto = self.part("scale_out", seed, p)
        _autoscale_metrics(m, p, auto)
        never = "a policy sustained no load within the SLO at this request budget"
        m.ratio("comparison", "stateless_over_sticky_x", ("pattern", "throughput_rps"), ("baseline", "throughput_rps"))
        m.ratio("comparison", "p2c_over_round_robin_slo_x", ("pattern", "sustainable_rps"),
                ("round_robin", "sustainable_rps"), missing=never)
        m.value("comparison", "speedup_gap_x", m.metrics["pattern"]["speedup_x"] - m.metrics["baseline"]["speedup_x"])
        scaling = pd.DataFrame([{"arm": arm, "replicas": k, "throughput_rps": util["one"] if k == 1 else util[arm][k],
                                 "sustainable_rps": one_slo if k == 1 else slo[arm]["curve"][k],
                                 "linear_rps": k * util["one"]} for arm in ARMS for k in ns])
        series = {"scaling": scaling, "share": pd.concat(shares, ignore_index=True), "autoscale": auto.timeline,
                  "hpa": pd.DataFrame([vars(d) for d in auto.decisions]),
                  "step": pd.DataFrame({"step_at_s": [p.step_at_s], "slo_p99_ms": [p.slo_p99_ms]})}
        backend = (f"a shared back end of {p.backend_capacity_rps:g} req/s behind every request"
                   if p.backend_capacity_rps else "no shared back end")
        notes = [
            f"Scaling speedup at {p.utilisation_pct:g}% utilisation of the busiest replica, {backend}; pooling gain "
            f"from P99 within {p.slo_p99_ms:g} ms. {p.requests} requests per evaluation on {_service_label(p)}; "
            f"N = {', '.join(map(str, ns))}.",
            f"Sticky: {p.users} users, Zipf {p.zipf_s:g}, the most active sends {100 * sticky['top_user_share']:.1f}% "
            f"of requests; the hottest replica takes {100 * _hot_share(p, N):.1f}% of them.",
            f"Autoscaling: {auto.arrivals.size} requests over {p.horizon_s:g} s, {p.base_rps:g} -> {p.step_rps:g} "
            f"req/s at {p.step_at_s:g} s; HPA on {p.hpa_metric}; cold start {p.cold_start_s:g} s + probe every "
            f"{p.readiness_period_s:g} s.",
        ]
        return Outcome(m, series, notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        sc = result.series["scaling"]
        fixed = sc.assign(what=sc["arm"].map(lambda a: f"{a}: fixed utilisation"))
        slo = sc.assign(what=sc["arm"].map(lambda a: f"{a}: within the P99 objective"), throughput_rps=sc["sustainable_rps"])
        lin = sc[sc["arm"] == "pattern"].assign(what="linear (N x one replica)", throughput_rps=lambda d: d["linear_rps"])
        scaling = pd.concat([fixed, slo, lin], ignore_index=True)
        sh = result.series["share"]
        tl, step = result.series["autoscale"], result.series["step"].iloc[0]
        reps = tl.melt("time_s", ["spec_replicas", "ready_replicas"], var_name="replicas", value_name="count")
        return [
            line_chart(scaling, "replicas", "throughput_rps", "Throughput vs replicas", "replicas", "requests/s",
                       color="what", points=True),
            bar_chart(sh, "replica", "share_pct", "Share of requests per replica at the probe load", "% of requests",
                      color="arm", rules=[(100 / sh["replica"].nunique(), "even share")]),
            line_chart(tl.assign(arm="pattern"), "time_s", "p99_ms", "Autoscaling after a load step: P99 per window",
                       "time (s)", "P99 (ms, log)", log_y=True, spans=[(step.step_at_s, tl["time_s"].max())],
                       span_label="after the step", rules=[("y", step.slo_p99_ms, "SLO")]),
            line_chart(reps, "time_s", "count", "Autoscaling after a load step: replicas", "time (s)", "replicas",
                       color="replicas", spans=[(step.step_at_s, tl["time_s"].max())], span_label="after the step"),
        ]


def _service_label(p) -> str:
    if p.service_dist == "mlp_profile":
        return f"the mlp's measured times (cv {math.sqrt(_mlp_shape().scv):.2f}) rescaled to {p.service_ms:g} ms"
    return f"lognormal inference times, mean {p.service_ms:g} ms, cv {p.service_cv:g}"


def _hpa_config(p):
    cpu = p.hpa_metric == "cpu"
    return hpa_config(p.target_cpu_pct if cpu else p.target_in_flight, "cpu" if cpu else "pods", p.min_replicas,
                      p.max_replicas, p.tolerance, p.sync_period_s, p.scale_down_stabilization_window_s,
                      p.scale_up_percent, p.scale_up_pods, p.scale_up_period_s)


def _autoscale_metrics(m: Measurements, p, auto) -> None:
    """The pattern arm's scale-out metrics, read off the autoscaling run."""
    arm, step_at = "pattern", p.step_at_s
    no_up = "the HPA never scaled up after the step (metric within tolerance of its target, or at max_replicas)"
    m.value(arm, "detection_delay_s", auto.detection_s, missing=no_up)
    m.value(arm, "scale_out_time_s", auto.scale_out_s,
            missing=no_up if not auto.ups else "no replica added by the first scale-up served a request "
                                               "before horizon_s (cold start + readiness ran past the run)")
    m.value(arm, "latency_recovery_s", auto.recovery_s,
            missing="the latency objective was not met again (three windows in a row) before horizon_s")
    m.value(arm, "scale_up_decisions", float(auto.ups))
    m.value(arm, "replicas_final", float(auto.replicas_final))
    m.value(arm, "replicas_ready_final", float(auto.ready_final))
    a, lat, served = auto.arrivals, auto.latency, auto.served
    post, pre = a >= step_at, (a < step_at) & (a >= min(step_at, 10.0))
    m.percentiles(arm, lat[pre], (99,), key="p{q}_before_step_ms",
                  missing="no request arrived before the step (after the first 10 s)")
    m.percentiles(arm, lat[post], (99,), key="p{q}_after_step_ms", missing="no request arrived after the step")
    m.share(arm, "timeout_after_step_pct", float(np.sum(~served[post])), float(post.sum()),
            missing="no request arrived after the step")


LAB = HorizontalScalingLab()
