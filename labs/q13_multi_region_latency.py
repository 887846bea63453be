"""Q13 lab: serving users on several continents from one region or from several, and losing a region.

Users in nine areas (US East, US West, Europe, India, Southeast Asia, Japan,
Australia, Brazil, South Africa) send requests. A request costs its network
round trips plus the server's time:

    latency = connection_rtts * (access_rtt_ms + backbone RTT(area, region)) + jitter + server time

The backbone RTTs come from ``data/rtt_matrix.json`` (``sim.geo``): Azure's
measured inter-region P50s (July 2026) where the pair was measured, a distance
line fitted to those measurements otherwise; every entry says which.

Three routing arms see the same users, arrivals, server times and jitter
(common random numbers):

* ``baseline``: one region (East US, the analogue of us-east-1) serves everyone;
* ``geodns``: the first ``regions`` candidate regions, each user sent to the
  geographically nearest one (geoproximity routing without health checks);
* ``pattern``: the same regions with Route 53 latency-based routing and
  health checks (``sim.failover``: RequestInterval, FailureThreshold, the
  more-than-18%-of-checkers rule) behind resolvers that cache answers for the
  record's TTL.

Mid-run ``failed_region`` goes down. A request that reaches it fails. Only the
pattern arm can move traffic away: once Route 53's checkers mark the region
unhealthy, each resolver picks up the new answer at its next refresh, so the
failover time of a resolver's clients is detection time + its wait for the
cache to expire. No queueing is modelled: every region is assumed to have
headroom for the traffic a failover brings it, so a request is a pure delay.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binom

from sim.components import FaultSchedule, Outage, poisson_arrivals
from sim.dist import Lognormal
from sim.failover import (ROUTE53_REQUEST_INTERVALS, HealthCheckConfig, ResolverCaches, answer_schedule,
                          latency_routing, simulate_health_checks, weighted_quantile)
from sim.geo import RttMatrix, load_rtt_matrix, nearest_by_distance
from sim.metrics import ERROR, OK, RequestLog, t_interval, windowed
from sim.rng import Streams

from .contract import Exercise, Lab, Outcome, Param, ParamError


GEO: RttMatrix = load_rtt_matrix()  # validated against its inputs on load
AREAS = GEO.areas
REGIONS = GEO.regions
AREA_KEYS = tuple(a.lower().replace(" ", "_") for a in AREAS)
ASIA = ("India", "Southeast Asia", "Japan")
BASELINE_REGION = REGIONS[0]  # East US

#: Share of users per area (percent, in the order of AREAS). Assumptions, not measurements:
#: "global" loosely follows where a worldwide consumer service's users are; the others isolate cases.
USER_MIXES = {
    "global": (18, 12, 25, 10, 10, 8, 5, 8, 4),
    "seed_three": (35, 0, 35, 0, 30, 0, 0, 0, 0),  # users only next to the seed's three regions
    "north_atlantic": (40, 20, 40, 0, 0, 0, 0, 0, 0),
    "asia_pacific": (0, 0, 0, 25, 25, 25, 25, 0, 0),
    "uniform": (1, 1, 1, 1, 1, 1, 1, 1, 1),
}
SERVER_CV = 0.5  # server time: lognormal with this coefficient of variation
JITTER_CV = 1.0  # extra delay per round trip: lognormal with mean jitter_ms and this cv
MAX_RTTS = 4
FAILOVER_REPS = 20  # replayed outages (fresh checker and resolver phases) for the failover interval
GRID_TTLS = (0.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
R53 = HealthCheckConfig()


class MultiRegionLab(Lab):
    id = "q13"
    arms = ("baseline", "geodns", "pattern", "comparison")
    headline = ("pattern", "global_p95_ms")
    refine_param = "requests"
    budget_s = 0.5
    params = (
        Param("requests", 12000, 2000, 200000, unit="requests",
              help="request budget per arm; the simulated window is requests / rate_rps"),
        Param("rate_rps", 20.0, 1.0, 1000.0, unit="req/s", help="Poisson arrival rate of all users together"),
        Param("user_mix", "global", choices=tuple(USER_MIXES),
              help="where the users are (shares per area, an assumption; see the notes)"),
        Param("regions", 3, 2, len(REGIONS), unit="regions",
              help="regions deployed in the multi-region arms: the first k of " + ", ".join(REGIONS)),
        Param("access_rtt_ms", 20.0, 0.0, 100.0, unit="ms",
              help="user to the nearby cloud region (last mile + metro), added to every backbone RTT"),
        Param("jitter_ms", 5.0, 0.0, 200.0, unit="ms",
              help=f"mean extra delay per round trip (lognormal, cv {JITTER_CV:g})"),
        Param("connection_rtts", 1, 1, MAX_RTTS, unit="round trips",
              help="round trips per request: 1 warm keep-alive, 2 new TCP, 3 new TCP + TLS 1.3, 4 TLS 1.2"),
        Param("server_ms", 25.0, 1.0, 5000.0, unit="ms", help=f"mean server time (lognormal, cv {SERVER_CV:g})"),
        Param("failed_region", BASELINE_REGION, choices=REGIONS,
              help="the region that goes down (must be among the deployed regions)"),
        Param("outage_start_s", 300.0, 0.0, 1e6, unit="s", help="when the region goes down"),
        Param("outage_duration_s", 180.0, 1.0, 1e6, unit="s", help="how long it stays down"),
        # Route 53 health-check settings (HealthCheckConfig names, snake_case; defaults are Route 53's)
        Param("request_interval", int(R53.request_interval), choices=ROUTE53_REQUEST_INTERVALS, unit="s",
              help=f"seconds between one checker's probes (Route 53: 10 or 30, default {R53.request_interval:g})"),
        Param("failure_threshold", R53.failure_threshold, 1, 10, unit="probes",
              help=f"consecutive failed probes before a checker calls the region down (Route 53 default {R53.failure_threshold})"),
        Param("health_checkers", R53.checkers, 3, 64, unit="checkers",
              help="uncoordinated checkers; down when at most 18% still report healthy (8 default checker regions)"),
        Param("dns_ttl_s", 60.0, 0.0, 3600.0, unit="s", help="TTL of the DNS answer; resolvers keep it this long"),
        Param("resolvers_per_area", 25, 1, 1000, unit="resolvers", help="recursive resolvers per user area, each with its own cache phase"),
    )
    exercises = (
        Exercise("Deploy a region next to every user area (9 regions). Does the global P95 drop below 100 ms, "
                 "and what is left of it?", {"regions": 9}, ("pattern", "global_p95_ms")),
        Exercise("Use Route 53's fast health checks (10 s interval) and a 5 s TTL. How long does failover take now, "
                 "and how much of it is detection?", {"request_interval": 10, "dns_ttl_s": 5.0},
                 ("pattern", "failover_time_s")),
        Exercise("Clients open a new TLS 1.3 connection per request (3 round trips). Where does the one-region "
                 "P95 land?", {"connection_rtts": 3}, ("baseline", "global_p95_ms")),
    )

    # ------------------------------------------------------------------ model
    def simulate(self, seed: int, p) -> Outcome:
        n = p["requests"]
        horizon = n / p["rate_rps"]
        start, end = p["outage_start_s"], p["outage_start_s"] + p["outage_duration_s"]
        if start >= horizon:
            raise ParamError(f"parameter outage_start_s: {start:g} is not allowed; expected a number in "
                             f"[0, {horizon:g}) s (the window is requests / rate_rps = {horizon:g} s)")
        deployed = np.arange(p["regions"])
        failed = REGIONS.index(p["failed_region"])
        if failed not in deployed:
            raise ParamError(f"parameter failed_region: {p['failed_region']!r} is not allowed with regions="
                             f"{p['regions']}; expected one of " + ", ".join(REGIONS[: p["regions"]]))
        mix = np.asarray(USER_MIXES[p["user_mix"]], dtype=float)
        mix /= mix.sum()
        n_areas, per_area = len(AREAS), p["resolvers_per_area"]

        streams = Streams(seed)
        arrival = poisson_arrivals(streams["arrivals"], p["rate_rps"], n)
        area = streams["area"].choice(n_areas, n, p=mix)
        resolver = area * per_area + streams["resolver"].integers(0, per_area, n)
        server = Lognormal(p["server_ms"] / 1e3, SERVER_CV).sample(streams["server"], n)
        unit_jitter = Lognormal(1.0, JITTER_CV).sample(streams["jitter"], n * MAX_RTTS).reshape(n, MAX_RTTS)
        u_checkers = streams["checker_phase"].random((FAILOVER_REPS, p["health_checkers"]))
        u_resolvers = streams["resolver_phase"].random((FAILOVER_REPS, n_areas * per_area))

        rtt_ms = GEO.user_rtt_ms(p["access_rtt_ms"])
        jitter_ms = p["jitter_ms"] * unit_jitter
        faults = FaultSchedule([Outage(start, end, "error")])
        hc = HealthCheckConfig(request_interval=float(p["request_interval"]),
                               failure_threshold=p["failure_threshold"], checkers=p["health_checkers"])
        health = simulate_health_checks(hc, faults, horizon, u_checkers[0] * hc.request_interval)
        caches = ResolverCaches.from_uniforms(u_resolvers[0], p["dns_ttl_s"])

        # Each arm's region per request: the answer its resolver holds at the request's arrival.
        single = np.full(n_areas, deployed[0])
        nearest = nearest_by_distance(GEO, deployed)
        latency_answers = answer_schedule({failed: health}, len(REGIONS),
                                          lambda healthy: latency_routing(rtt_ms, deployed, healthy))
        routed = {
            "baseline": single[area],
            "geodns": nearest[area],
            "pattern": latency_answers.at(caches.last_refresh(resolver, arrival), area),
        }
        down = (arrival >= start) & (arrival < end)
        k_rtts = p["connection_rtts"]
        arms = {arm: _serve(arm, arrival, area, region, failed, down, rtt_ms, jitter_ms, server, k_rtts)
                for arm, region in routed.items()}

        metrics, intervals = {}, {}
        steady = arrival < start
        for arm, res in arms.items():
            metrics[arm], intervals[arm] = _arm_metrics(res, area, steady, down)
        metrics["baseline"]["us_east_asia_rtt_ms"] = _asia_rtt(arms["baseline"], area)

        # Failover of the pattern arm, read off the health checks and the resolvers' refreshes.
        steady_answer = latency_answers.answers[0]
        resolver_area = np.arange(n_areas * per_area) // per_area
        affected = np.flatnonzero((steady_answer[resolver_area] == failed) & (mix[resolver_area] > 0))
        weights = mix[affected // per_area]
        fo = _failover(health, caches, affected, weights, start, end)
        rep_p95 = [fo["failover_time_s"]] + [
            _failover(simulate_health_checks(hc, faults, min(horizon, end + hc.request_interval),
                                             u_checkers[r] * hc.request_interval),
                      ResolverCaches.from_uniforms(u_resolvers[r], p["dns_ttl_s"]), affected, weights,
                      start, end)["failover_time_s"]
            for r in range(1, FAILOVER_REPS)]
        metrics["pattern"].update({k: v for k, v in fo.items() if k != "per_resolver_s"})
        iv = t_interval(rep_p95)
        if np.isfinite(iv.low):
            intervals["pattern"]["failover_time_s"] = (iv.low, iv.high)
        for arm in ("baseline", "geodns"):  # static DNS: traffic stays on the dead region until it returns
            metrics[arm]["failover_time_s"] = float("nan")

        grid = _failover_grid(hc, faults, horizon, u_checkers[0], u_resolvers[0], affected, weights, start, end)
        b, g, pt = metrics["baseline"], metrics["geodns"], metrics["pattern"]
        metrics["comparison"] = {
            "p95_reduction_x": b["global_p95_ms"] / pt["global_p95_ms"],
            "p95_saved_ms": b["global_p95_ms"] - pt["global_p95_ms"],
            "errors_avoided_vs_geodns_pct": (100.0 * (1 - pt["failover_errors"] / g["failover_errors"])
                                             if g["failover_errors"] else float("nan")),
        }

        width = max(1.0, round(horizon / 120))
        series = {
            "timeline": pd.concat([windowed(res["log"], width, horizon) for res in arms.values()], ignore_index=True),
            "per_area": _per_area_frame(metrics, mix),
            "failover_per_resolver": pd.DataFrame({
                "area": np.asarray(AREAS)[affected // per_area], "weight": weights,
                "failover_s": fo["per_resolver_s"]}),
            "failover_grid": grid,
            "events": pd.DataFrame({"event": ["outage", "detected", "recovered", "marked healthy"],
                                    "time_s": [start, start + pt["detection_time_s"], end,
                                               health.first_change_after(end, True)]}),
        }
        notes = _notes(p, horizon, n, steady, down, deployed, mix, metrics, grid, affected.size,
                       bool(np.array_equal(nearest, latency_answers.answers[0])))
        return Outcome(metrics, series, intervals, notes)

    def plots(self, result):
        return [_plot_per_area(result), _plot_timeline(result), _plot_failover(result)]


# ---------------------------------------------------------------------- helpers
def _serve(arm, arrival, area, region, failed, down, rtt_ms, jitter_ms, server, k_rtts) -> dict:
    """Per-request outcome and latency for one arm's routing (pure delays, no queueing)."""
    base_rtt = rtt_ms[area, region] / 1e3
    jit = jitter_ms / 1e3
    dead = down & (region == failed)
    network = k_rtts * base_rtt + jit[:, :k_rtts].sum(axis=1)
    first_rtt = base_rtt + jit[:, 0]  # a refused connection fails after one round trip
    log = RequestLog(arrival.size, arm)
    log.arrival[:] = arrival
    log.start[:] = arrival + network / 2
    log.end[:] = np.where(dead, arrival + first_rtt, arrival + network + server)
    log.outcome[:] = np.where(dead, ERROR, OK)
    log.tag[:] = area
    return {"log": log, "region": region, "first_rtt_s": first_rtt}


def _p(values_s: np.ndarray, q: float) -> float:
    return float(np.percentile(values_s, q) * 1e3) if values_s.size else float("nan")


def _quantile_ci(values_s: np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free interval for a percentile of independent draws: order statistics at binomial ranks.

    Requests here are independent (no queue couples them), so the exact order-statistic interval
    applies; it needs one sort where batch means needs a percentile per batch.
    """
    n = values_s.size
    if n < 20:
        return None
    alpha = (1 - confidence) / 2
    lo = int(binom.ppf(alpha, n, q / 100))  # 1-based rank of the lower bound
    hi = int(binom.ppf(1 - alpha, n, q / 100)) + 1
    xs = np.sort(values_s) * 1e3
    return float(xs[max(lo, 1) - 1]), float(xs[min(hi, n) - 1])


def _arm_metrics(res: dict, area: np.ndarray, steady: np.ndarray, down: np.ndarray) -> tuple[dict, dict]:
    log = res["log"]
    lat = log.latency
    ok = log.outcome == OK
    st = steady & ok  # arrival order is time order, so batch means see consecutive requests
    m = {
        "global_p50_ms": _p(lat[st], 50),
        "global_p95_ms": _p(lat[st], 95),
        "global_p99_ms": _p(lat[st], 99),
        "mean_ms": float(lat[st].mean() * 1e3) if st.any() else float("nan"),
    }
    iv = {}
    for q in (50, 95, 99):
        iv[f"global_p{q}_ms"] = _quantile_ci(lat[st], q)
    for a, key in enumerate(AREA_KEYS):
        sel = st & (area == a)
        m[f"p95_{key}_ms"] = _p(lat[sel], 95)
        iv[f"p95_{key}_ms"] = _quantile_ci(lat[sel], 95)
    iv = {k: v for k, v in iv.items() if v is not None}
    in_outage = down.sum()
    errors = int(np.sum(down & ~ok))
    m.update({
        "outage_p95_ms": _p(lat[down & ok], 95),
        "failover_errors": float(errors),
        "outage_error_pct": 100.0 * errors / float(in_outage) if in_outage else float("nan"),
        "availability_pct": 100.0 * float(ok.mean()),
    })
    return m, iv


def _asia_rtt(res: dict, area: np.ndarray) -> float:
    """Median one-round-trip time of the baseline's Asian users to East US (access + backbone + jitter)."""
    asia = np.isin(area, [AREAS.index(a) for a in ASIA])
    return _p(res["first_rtt_s"][asia], 50)


def _failover(health, caches: ResolverCaches, affected, weights, start: float, end: float) -> dict:
    """Per-resolver failover (outage start -> the resolver's first answer without the failed region)."""
    detected = health.first_change_after(start, False)
    if not np.isfinite(detected) or detected >= end:  # outage over before Route 53 noticed it
        nan = float("nan")
        return {"detection_time_s": nan, "failover_time_s": nan, "failover_p50_s": nan, "failover_max_s": nan,
                "reroute_after_detect_s": nan, "failback_time_s": nan,
                "per_resolver_s": np.full(affected.size, np.nan)}
    switch = caches.next_refresh(affected, detected)
    per_resolver = switch - start
    healthy_again = health.first_change_after(end, True)
    back = caches.next_refresh(affected, healthy_again) - end if np.isfinite(healthy_again) else np.nan
    return {
        "detection_time_s": detected - start,
        "failover_time_s": weighted_quantile(per_resolver, weights, 0.95),
        "failover_p50_s": weighted_quantile(per_resolver, weights, 0.5),
        "failover_max_s": float(per_resolver.max()) if per_resolver.size else float("nan"),
        "reroute_after_detect_s": weighted_quantile(switch - detected, weights, 0.95),
        "failback_time_s": weighted_quantile(back, weights, 0.95) if np.ndim(back) else float("nan"),
        "per_resolver_s": per_resolver,
    }


def _failover_grid(hc, faults, horizon, u_checkers, u_resolvers, affected, weights, start, end) -> pd.DataFrame:
    """Failover P95 over TTLs for both Route 53 intervals, on the run's own checker and resolver phases."""
    rows = []
    for interval in (10.0, 30.0):
        cfg = HealthCheckConfig(request_interval=interval, failure_threshold=hc.failure_threshold,
                                checkers=hc.checkers)
        health = simulate_health_checks(cfg, faults, min(horizon, end + interval), u_checkers * interval)
        for ttl in GRID_TTLS:
            fo = _failover(health, ResolverCaches.from_uniforms(u_resolvers, ttl), affected, weights, start, end)
            rows.append((interval, ttl, fo["detection_time_s"], fo["failover_time_s"]))
    return pd.DataFrame(rows, columns=["request_interval", "dns_ttl_s", "detection_time_s", "failover_time_s"])


def _per_area_frame(metrics: dict, mix: np.ndarray) -> pd.DataFrame:
    rows = [(arm, a, float(mix[i]), metrics[arm][f"p95_{k}_ms"])
            for arm in ("baseline", "geodns", "pattern") for i, (a, k) in enumerate(zip(AREAS, AREA_KEYS))]
    return pd.DataFrame(rows, columns=["arm", "area", "share", "p95_ms"])


def _notes(p, horizon, n, steady, down, deployed, mix, metrics, grid, n_affected, same_pick) -> list[str]:
    src = GEO.source[:, deployed][mix > 0]
    counts = {s: int(np.sum(src == s)) for s in ("table", "same_region", "derived")}
    fit = GEO.raw["derivation"]
    eus = REGIONS.index(BASELINE_REGION)
    asia_table = "; ".join(
        f"{a} {GEO.backbone_ms[GEO.area_index(a), eus]:g} ms ({GEO.source[GEO.area_index(a), eus]})" for a in ASIA)
    holds = grid[grid["failover_time_s"] < 30]
    where = ("; ".join(f"request_interval {iv:g} s with dns_ttl_s in {{{', '.join(f'{t:g}' for t in g['dns_ttl_s'])}}}"
                       for iv, g in holds.groupby("request_interval"))
             or "no (interval, TTL) pair in the grid")
    pt = metrics["pattern"]
    if n_affected:
        failover = (f"Failover (pattern): detection {pt['detection_time_s']:.1f} s + wait for resolver caches (P95 "
                    f"{pt['reroute_after_detect_s']:.1f} s after detection; that part alone is the literal 'detect -> "
                    "rerouted'). Route 53 detection takes about failure_threshold x request_interval, so failover < 30 s "
                    f"in the run's grid of settings holds only for: {where}.")
    else:
        failover = (f"No users are routed to {p['failed_region']} under this mix, so the pattern arm has nothing to "
                    "fail over (failover metrics are n/a).")
    pick = ("GeoDNS (nearest by distance) and latency routing pick the same region for every area here: most "
            "off-table entries come from the distance line, so distance and RTT rank regions alike; the two arms "
            "differ only in the health checks." if same_pick else
            "GeoDNS (nearest by distance) and latency routing pick different regions for some areas.")
    return [
        f"Simulated window: {horizon:g} s ({n} requests per arm at {p['rate_rps']:g} req/s); {p['failed_region']} "
        f"down {p['outage_start_s']:g}-{p['outage_start_s'] + p['outage_duration_s']:g} s.",
        f"Steady-state metrics (global_p*, p95_<area>_ms) cover the {int(steady.sum())} requests before the outage; "
        f"outage_* and failover_errors cover the {int(down.sum())} arriving during it.",
        "Regions deployed in geodns/pattern: " + ", ".join(REGIONS[i] for i in deployed) + f"; baseline: {BASELINE_REGION}.",
        f"RTT entries used (areas with users x deployed regions): {counts['table']} measured (Azure P50, July 2026), "
        f"{counts['same_region']} same-region (access RTT only, {p['access_rtt_ms']:g} ms assumed), "
        f"{counts['derived']} derived from the distance fit ({fit['intercept_ms']:g} ms + "
        f"{fit['ms_per_1000_km']:g} ms per 1000 km; RMSE {fit['rmse_ms']:g} ms, worst {fit['max_abs_residual_ms']:g} ms "
        "on the measured pairs). Provenance per entry: data/rtt_matrix.json.",
        "User mix (an assumption): " + ", ".join(f"{a} {100 * w:.0f}%" for a, w in zip(AREAS, mix) if w > 0) + ".",
        f"East US to Asia in the matrix (backbone, before access): {asia_table}. us_east_asia_rtt_ms is the median "
        "measured round trip (access + backbone + jitter) of the baseline's users in India, Southeast Asia and Japan.",
        pick,
        failover,
        "Not modelled: queueing in the region that takes over the traffic, client retries to another region, "
        "clients or resolvers that keep answers longer than the TTL, connections kept open to the dead region, "
        "edge caching of predictions.",
    ]


# ---------------------------------------------------------------------- plots
def _colours() -> dict:
    from .plotting import ARM_COLOURS

    return {**ARM_COLOURS, "geodns": "#16a085"}

def _plot_per_area(result):
    from .plotting import figure

    df = result.series["per_area"]
    areas = [a for a in AREAS if df.loc[df["area"] == a, "share"].iloc[0] > 0]
    fig, ax = figure("Steady-state P95 per user area (bars) vs the 100 ms target", size=(8, 3.6))
    arms = ["baseline", "geodns", "pattern"]
    colours = _colours()
    x = np.arange(len(areas))
    w = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        vals = [df[(df["arm"] == arm) & (df["area"] == a)]["p95_ms"].iloc[0] for a in areas]
        ax.bar(x + (k - 1) * w, vals, w, label=arm, color=colours[arm])
    ax.axhline(100, color="k", ls="--", lw=1, label="100 ms")
    ax.set_xticks(x, areas, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("P95 (ms)")
    ax.legend(fontsize=8)
    return fig


def _plot_timeline(result):
    from .plotting import lines_by_arm

    ev = result.series["events"].set_index("event")["time_s"]
    fig = lines_by_arm(result.series["timeline"], "time_s", "error_pct",
                       f"Failed requests per window, {result.params['failed_region']} down (shaded)",
                       "failed requests (%)", [(ev["outage"], ev["recovered"])])
    ax = fig.axes[0]
    colours = _colours()
    for line in ax.lines:  # lines_by_arm knows no colour for the geodns arm
        if line.get_label() in colours:
            line.set_color(colours[line.get_label()])
    if np.isfinite(ev["detected"]):
        ax.axvline(ev["detected"], color="k", ls=":", lw=1, label="Route 53 marks it down")
        ax.legend(fontsize=8)
    return fig


def _plot_failover(result):
    from .plotting import figure

    grid = result.series["failover_grid"]
    fig, ax = figure(f"Failover time (P95 of traffic) vs DNS TTL, failure_threshold "
                     f"{result.params['failure_threshold']}")
    for interval, g in grid.groupby("request_interval"):
        ax.plot(g["dns_ttl_s"], g["failover_time_s"], marker="o", lw=1.4, label=f"request_interval {interval:g} s")
    ax.axhline(30, color="k", ls="--", lw=1, label="30 s claim")
    here = result.metrics["pattern"]["failover_time_s"]
    if np.isfinite(here):
        ax.plot([result.params["dns_ttl_s"]], [here], "k*", ms=12, label="this run")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xticks(GRID_TTLS, [f"{t:g}" for t in GRID_TTLS])
    ax.set_xlabel("dns_ttl_s (s)")
    ax.set_ylabel("outage start -> 95% of traffic moved (s)")
    ax.legend(fontsize=8)
    return fig


LAB = MultiRegionLab()
