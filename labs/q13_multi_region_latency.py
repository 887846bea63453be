"""Q13: users on several continents served from one region or several, through edge PoPs, while a region fails.

A request costs connection_rtts round trips (access + backbone RTT of ``data/rtt_matrix.json``, ``sim.geo``),
jitter per round trip and lognormal server time. Four arms route the same requests (common random numbers): one
region, GeoDNS, Route 53 latency routing with health checks behind TTL-caching resolvers (``sim.failover``), and
that routing behind an edge PoP per user area answering ``edge_hit_pct`` from cache. ``failed_region`` goes down
mid-run; the outage is replayed on fresh checker and resolver phases (``sim.failover.OutageReplay``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.components import poisson_arrivals
from sim.dist import Lognormal
from sim.failover import ROUTE53_REQUEST_INTERVALS, OutageReplay, ResolverCaches
from sim.geo import RttMatrix, load_rtt_matrix, nearest_by_distance
from sim.metrics import ERROR, OK, RequestLog, windowed
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .kit import OUTAGE_RULES, arrival_rate, request_budget, window_s
from .measure import Measurements

GEO: RttMatrix = load_rtt_matrix()  # validated against its inputs on load
AREAS, REGIONS = GEO.areas, GEO.regions
AREA_KEYS = tuple(a.lower().replace(" ", "_") for a in AREAS)
ASIA = ("India", "Southeast Asia", "Japan")
USER_MIXES = {  # share of users per area (%, in the order of AREAS): assumptions, not measurements
    "global": (18, 12, 25, 10, 10, 8, 5, 8, 4),
    "seed_three": (35, 0, 35, 0, 30, 0, 0, 0, 0),  # users only next to the seed's three regions
    "north_atlantic": (40, 20, 40, 0, 0, 0, 0, 0, 0),
    "asia_pacific": (0, 0, 0, 25, 25, 25, 25, 0, 0),
    "uniform": (1, 1, 1, 1, 1, 1, 1, 1, 1),
}
MIX = {name: np.asarray(shares, dtype=float) / sum(shares) for name, shares in USER_MIXES.items()}
SERVER_CV, JITTER_CV, MAX_RTTS, EDGE_LOOKUP_MS, FAILOVER_REPS = 0.5, 1.0, 4, 1.0, 20  # replays per failover metric
GRID_TTLS = (0.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
FAILOVER_KEYS = ("detection_time_s", "failover_time_s", "failover_p50_s", "failover_max_s", "reroute_after_detect_s",
                 "failback_time_s")
ARMS = ("baseline", "geodns", "pattern", "edge")


class MultiRegionLab(Lab):
    id = "q13"
    headline = ("pattern", "global_p95_ms")
    refine_param = "requests"
    budget_s = 0.5
    arms = (Arm("baseline", "One region", "East US (the us-east-1 analogue) serves every user"),
            Arm("geodns", "GeoDNS", "each area sent to its nearest deployed region by distance; no health checks"),
            Arm("pattern", "Latency routing + health checks",
                "Route 53 latency records with health checks; resolvers cache each answer for the TTL"),
            Arm("edge", "Edge PoPs + latency routing", "a CDN PoP in every user area answers cacheable requests; "
                "the rest go on to the region latency routing picks"))
    assumptions = (
        "No queueing: every region has headroom for the traffic a failover brings it, so a request is a pure delay.",
        f"Server time is lognormal (cv {SERVER_CV:g}); jitter per round trip is lognormal (cv {JITTER_CV:g}).",
        "A request reaching the failed region fails after one round trip; static DNS never moves it.",
        "Busy resolvers refresh the moment their entry expires, each at its own phase; no client caches past the TTL.",
        "Backbone RTTs (rtt_matrix, data/rtt_matrix.json): Azure's measured P50s (July 2026) where measured, "
        "a distance line fitted to them otherwise; the US East-Asia RTT reads them alone (no access leg, no jitter).",
        "User mixes are assumptions; steady-state latency reads every request as routed with all regions up.",
        f"Edge: a hit costs connection_rtts x (edge_rtt_ms + jitter) + {EDGE_LOOKUP_MS:g} ms; a miss costs the direct "
        f"path to the routed region plus the {EDGE_LOOKUP_MS:g} ms lookup (the PoP is on the way). Hits survive an outage.",
        f"Failover metrics are means over {FAILOVER_REPS} replayed outages (fresh checker and resolver phases).",
        "Not modelled: client retries to another region, connections kept open to the dead region, cache fill.",
    )
    rules = (OUTAGE_RULES[0], Rule("failed_region", ("failed_region", "regions"), lambda p: None if REGIONS.index(
        p.failed_region) < p.regions else "one of the deployed regions " + ", ".join(REGIONS[: p.regions])))
    _outage_reads = ("user_mix", "regions", "failed_region", "outage_start_s", "outage_duration_s",
                     "failure_threshold", "health_checkers", "resolvers_per_area")
    parts = {"failover": _outage_reads + ("request_interval", "dns_ttl_s"), "grid": _outage_reads}
    params = (
        request_budget(12000, 2000, 200000),
        arrival_rate(20.0, 1.0, 1000.0, key=False),
        Param("user_mix", "global", choices=tuple(USER_MIXES), key=True, help="where the users are (an assumption)"),
        Param("regions", 3, 2, len(REGIONS), unit="regions", key=True, help="deploy the first k of " + ", ".join(REGIONS)),
        Param("access_rtt_ms", 20.0, 0.0, 100.0, unit="ms", help="user to the nearby cloud region, added to every RTT"),
        Param("jitter_ms", 5.0, 0.0, 200.0, unit="ms", help=f"mean extra delay per round trip (cv {JITTER_CV:g})"),
        Param("connection_rtts", 1, 1, MAX_RTTS, unit="round trips", key=True, help="1 keep-alive, 2 TCP, 3 TLS 1.3, 4 TLS 1.2"),
        Param("server_ms", 25.0, 1.0, 5000.0, unit="ms", help=f"mean server time (lognormal, cv {SERVER_CV:g})"),
        Param("edge_hit_pct", 50.0, 0.0, 100.0, unit="%", key=True, help="share of requests an edge PoP answers from cache"),
        Param("edge_rtt_ms", 10.0, 0.0, 100.0, unit="ms", help="user to the edge PoP in its area"),
        Param("failed_region", REGIONS[0], choices=REGIONS, help="the region that goes down (a deployed one)"),
        Param("outage_start_s", 300.0, 0.0, 1e6, unit="s", help="when the region goes down (inside the window)"),
        Param("outage_duration_s", 180.0, 1.0, 1e6, unit="s", help="how long it stays down (may outlast the window)"),
        Param("request_interval", 30, choices=ROUTE53_REQUEST_INTERVALS, unit="s", key=True, help="between probes"),
        Param("failure_threshold", 3, 1, 10, unit="probes", help="failed probes before a checker calls it down"),
        Param("health_checkers", 8, 3, 64, unit="checkers", help="down when at most 18% still report healthy"),
        Param("dns_ttl_s", 60.0, 0.0, 3600.0, unit="s", key=True, help="TTL of the DNS answer"),
        Param("resolvers_per_area", 25, 1, 1000, unit="resolvers", help="recursive resolvers per area, own phase each"),
    )
    exercises = (
        Exercise("Deploy a region next to every user area (9 regions). Does the global P95 drop below 100 ms?",
                 {"regions": 9}, ("pattern", "global_p95_ms"),
                 why="The global P95 is set by the users farthest from any region; with a region beside every user "
                 "area, the worst round trip shrinks to a short regional hop."),
        Exercise("Use 10 s health checks and a 5 s TTL. How long does failover take, and how much is detection?",
                 {"request_interval": 10, "dns_ttl_s": 5.0}, ("pattern", "failover_time_s"),
                 why="Failover time is detection (health-check interval × failures to mark down) plus the DNS TTL "
                 "that clients cache; shorter checks and TTL cut both terms."),
        Exercise("Let the edge answer 98% of requests from cache. Does the global P95 fall below 50 ms?",
                 {"edge_hit_pct": 98.0}, ("edge", "global_p95_ms"),
                 why="An edge hit never crosses the wide-area network; at 98% hits the 95th percentile falls inside "
                 "the edge's own latency."),
    )

    def part_failover(self, seed: int, p) -> dict:
        """The outage replayed FAILOVER_REPS times at the configured interval, threshold and TTL."""
        health = (rep := _replay(seed, p)).health(p.request_interval, p.failure_threshold)
        return {"rep": rep, "answers": rep.answers(health[0]), "runs": rep.runs(health, p.dns_ttl_s),
                "caches": ResolverCaches.from_uniforms(rep.u_resolvers[0], p.dns_ttl_s)}

    def part_grid(self, seed: int, p) -> pd.DataFrame:
        """Mean failover over the replays for both Route 53 intervals x GRID_TTLS (at the configured threshold)."""
        rep = _replay(seed, p)
        rows = [(iv, ttl, f) for iv in ROUTE53_REQUEST_INTERVALS
                for ttl, f in zip(GRID_TTLS, rep.mean_failover(iv, p.failure_threshold, GRID_TTLS))]
        return pd.DataFrame(rows, columns=["request_interval", "dns_ttl_s", "failover_time_s"])

    def simulate(self, seed: int, p) -> Outcome:
        n, horizon, per_area = p.requests, window_s(p), p.resolvers_per_area
        start, end = p.outage_start_s, p.outage_start_s + p.outage_duration_s
        fo = self.part("failover", seed, p)
        mix, deployed, failed = MIX[p.user_mix], np.arange(p.regions), REGIONS.index(p.failed_region)
        arrival = poisson_arrivals((streams := Streams(seed))["arrivals"], p.rate_rps, n)
        area = streams["area"].choice(len(AREAS), n, p=mix)
        resolver = area * per_area + streams["resolver"].integers(0, per_area, n)
        server = Lognormal(p.server_ms / 1e3, SERVER_CV).sample(streams["server"], n)
        jitter = p.jitter_ms / 1e3 * Lognormal(1.0, JITTER_CV).sample(streams["jitter"], n * MAX_RTTS).reshape(n, -1)
        hit = streams["edge_hit"].random(n) < p.edge_hit_pct / 100
        rtt_s, k = GEO.user_rtt_ms(p.access_rtt_ms)[area] / 1e3, p.connection_rtts  # (n, regions)
        first_rtt = rtt_s + jitter[:, :1]
        direct = k * rtt_s + jitter[:, :k].sum(axis=1)[:, None] + server[:, None]
        edge_leg = k * p.edge_rtt_ms / 1e3 + jitter[:, :k].sum(axis=1) + EDGE_LOOKUP_MS / 1e3
        via_edge = np.where(hit[:, None], edge_leg[:, None], direct + EDGE_LOOKUP_MS / 1e3)
        latency = {"baseline": direct, "geodns": direct, "pattern": direct, "edge": via_edge}
        nearest, steady = nearest_by_distance(GEO, deployed), fo["rep"].steady
        healthy = {"baseline": np.zeros(len(AREAS), int), "geodns": nearest, "pattern": steady, "edge": steady}
        routed = fo["answers"].at(fo["caches"].last_refresh(resolver, arrival), area)
        live = {"baseline": np.zeros(n, int), "geodns": nearest[area], "pattern": routed, "edge": routed}
        down = (arrival >= start) & (arrival < end)
        m, logs, rows, none_in = Measurements((*ARMS, "comparison")), [], np.arange(n), "no request arrived during " \
            "the outage (it starts too close to the window's end)"
        for arm, region in live.items():
            dead = down & (region == failed) & (~hit if arm == "edge" else True)
            log = RequestLog(n, arm)
            log.arrival[:], log.tag[:], log.outcome[:] = arrival, area, np.where(dead, ERROR, OK)
            log.end[:] = arrival + np.where(dead, first_rtt[rows, region], latency[arm][rows, region])
            logs.append(log)
            steady_ms = latency[arm][rows, healthy[arm][area]] * 1e3
            m.independent_percentiles(arm, steady_ms, (50, 95, 99), "global_p{q}_ms")
            m.mean(arm, "mean_ms", steady_ms)
            for a, key in enumerate(AREA_KEYS):
                m.independent_percentiles(arm, steady_ms[area == a], (95,), f"p95_{key}_ms", 1.0, f"no request from "
                                          f"{AREAS[a]} " + ("(not in this user_mix)" if mix[a] == 0 else "in this window"))
            m.independent_percentiles(arm, log.latency[down & ~dead], (95,), "outage_p95_ms", 1e3,
                                      none_in if not down.any() else "every request arriving during the outage failed")
            m.value(arm, "failover_errors", float(np.sum(dead)))
            m.share(arm, "outage_error_pct", np.sum(dead), np.sum(down), missing=none_in)
            m.share(arm, "availability_pct", n - np.sum(dead), n)
        m.share("edge", "edge_hit_share_pct", np.sum(hit), n)
        m.value("pattern", "edge_global_p95_ms", m.metrics["edge"]["global_p95_ms"], m.intervals["edge"]["global_p95_ms"])
        asia = np.isin(area, [AREAS.index(a) for a in ASIA])
        m.independent_percentiles("baseline", GEO.backbone_ms[area[asia], 0], (50,), "us_east_asia_rtt_ms", 1.0,
                                  f"user_mix={p.user_mix} has no users in India, Southeast Asia or Japan")
        for a in ASIA:  # the pairs behind that median, with their provenance in the notes
            m.value("baseline", f"us_east_{AREA_KEYS[AREAS.index(a)]}_rtt_ms", GEO.backbone_ms[AREAS.index(a), 0])
        _failover_metrics(m, p, fo)
        m.ratio("comparison", "p95_reduction_x", ("baseline", "global_p95_ms"), ("pattern", "global_p95_ms"))
        m.value("comparison", "p95_saved_ms", m.metrics["baseline"]["global_p95_ms"] - m.metrics["pattern"]["global_p95_ms"])
        m.value("comparison", "edge_p95_saved_ms", m.metrics["pattern"]["global_p95_ms"] - m.metrics["edge"]["global_p95_ms"])
        m.saving_pct("comparison", "errors_avoided_vs_geodns_pct", ("pattern", "failover_errors"),
                     ("geodns", "failover_errors"), missing="GeoDNS lost no request during the outage: nothing to avoid")
        # the time line and the TTL grid are for plots only: built when first read (never by sweeps or checks)
        series = {"timeline": lambda: pd.concat([windowed(log, max(1.0, round(horizon / 120)), horizon)
                                                 for log in logs]),
                  "per_area": pd.DataFrame([(arm, a, mix[i], m.metrics[arm][f"p95_{key}_ms"]) for arm in live
                                            for i, (a, key) in enumerate(zip(AREAS, AREA_KEYS))],
                                           columns=["arm", "area", "share", "p95_ms"]),
                  "failover_grid": lambda: self.part("grid", seed, p)}
        src, pt = GEO.source[:, deployed][mix > 0], m.metrics["pattern"]
        notes = [f"Window {horizon:g} s ({n} requests per arm at {p.rate_rps:g} req/s); {p.failed_region} down "
                 f"{start:g}-{end:g} s; outage_* and failover_errors cover the {int(down.sum())} requests arriving then.",
                 "RTT entries used: " + ", ".join(f"{np.sum(src == s)} {s}" for s in ("table", "same_region", "derived"))
                 + "; East US to " + ", ".join(f"{a} {GEO.source[AREAS.index(a), 0]}" for a in ASIA) + ".",
                 "No failover: " + m.reasons["pattern"]["failover_time_s"] if "failover_time_s" in m.reasons["pattern"]
                 else f"Failover = detection {pt['detection_time_s']:.1f} s + resolver cache wait (P95 "
                      f"{pt['reroute_after_detect_s']:.1f} s) at request_interval {p.request_interval} s, "
                      f"failure_threshold {p.failure_threshold}, TTL {p.dns_ttl_s:g} s."]
        return Outcome(m, series, notes=notes)

    def plots(self, result):
        return [_plot_per_area(result), _plot_timeline(result), _plot_failover(result)]


def _replay(seed: int, p) -> OutageReplay:
    """What both failover parts share: the outage and the replays' checker and resolver phases."""
    streams = Streams(seed)
    return OutageReplay(GEO.backbone_ms, tuple(range(p.regions)), REGIONS.index(p.failed_region), MIX[p.user_mix],
                        p.resolvers_per_area, streams["checker_phase"].random((FAILOVER_REPS, p.health_checkers)),
                        streams["resolver_phase"].random((FAILOVER_REPS, len(AREAS) * p.resolvers_per_area)),
                        p.outage_start_s, p.outage_start_s + p.outage_duration_s)


def _failover_metrics(m: Measurements, p, fo: dict) -> None:
    for arm in ("baseline", "geodns"):
        m.missing(arm, "failover_time_s", "static DNS never moves traffic: it returns only when the region does")
    early = (f"the {p.outage_duration_s:g} s outage ended before Route 53 marked the region down (it takes "
             f"about failure_threshold x request_interval = {p.failure_threshold * p.request_interval} s)")
    nobody = f"no users are routed to {p.failed_region} under user_mix={p.user_mix}: nothing to fail over"
    for key in FAILOVER_KEYS:
        why = nobody if fo["rep"].affected.size == 0 and key != "detection_time_s" else early
        m.mean("pattern", key, [r[key] for r in fo["runs"]], missing=why)


# ---------------------------------------------------------------------- plots
def _plot_per_area(result):
    from .plotting import bar_chart
    df = result.series["per_area"]
    df = df[df["share"] > 0].assign(order=lambda d: d["area"].map(AREAS.index)).sort_values(["order"])
    return bar_chart(df, "area", "p95_ms", "Steady-state P95 per user area vs the 100 ms target", "P95 (ms)",
                     color="arm", rules=[(100, "100 ms")])


def _plot_timeline(result):
    from .plotting import line_chart
    p, detected = result.params, result.metrics["pattern"]["detection_time_s"]
    marks = [("x", p["outage_start_s"] + detected, "Route 53 marks it down")] if np.isfinite(detected) else []
    return line_chart(result.series["timeline"], "time_s", "error_pct", f"Failed requests per window, "
                      f"{p['failed_region']} down", "time (s)", "failed requests (%)",
                      spans=[(p["outage_start_s"], p["outage_start_s"] + p["outage_duration_s"])], rules=marks)


def _plot_failover(result):
    from .plotting import line_chart
    grid, p = result.series["failover_grid"], result.params
    grid = grid.assign(interval=grid["request_interval"].map(lambda v: f"request_interval {v:g} s"),
                       ttl=grid["dns_ttl_s"].clip(lower=1))
    return line_chart(grid, "ttl", "failover_time_s", f"Failover (P95 of traffic, mean of replays) vs DNS TTL, "
                      f"failure_threshold {p['failure_threshold']}", "dns_ttl_s (s, log; 0 drawn at 1)",
                      "outage start -> 95% moved (s)", color="interval", log_x=True, points=True,
                      rules=[("y", 30, "30 s claim")])


LAB = MultiRegionLab()
