"""Q3: a modular monolith or separate services: hop cost, blast radius, cores, and when splitting pays.

Hops (SimPy, ``sim.connections``): one request walks a path of ``components`` components. In the
monolith (baseline) each step is an in-process call; in services (pattern) each step after the
first is a network call whose costs are measured on loopback (``sim.rpc``: HTTP/1.1 JSON on
uvicorn or gRPC, the committed profile ``data/profiles/rpc_loopback.json``), on a link of
``rtt_ms``, with TLS and connection reuse as parameters. Both arms draw the same per-component
work (common random numbers); one component does ``scaling_ratio`` times the others' work.
Blast radius (``sim.decompose``): random endpoint x component graphs, one component failing by
crash, defect or exhaustion. Cores: each component sized for a P95 wait target (Erlang C),
uniformly inside monolith replicas or one service at a time with hop CPU and an assumed sidecar
cost. Team size, release frequency and load thresholds come from an assumed weekly cost model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import simpy

from sim.connections import CallCost, Link, Service, call
from sim.decompose import FAILING, FAILURE_KINDS, blast_radius, core_plan, first_where, random_system, weekly_cost_h
from sim.rng import Streams
from sim.rpc import load_profile

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .kit import arrival_rate, request_budget
from .measure import Measurements

TRANSPORT = {("http1_json", "keep_alive"): "http1_keepalive", ("http1_json", "per_request"): "http1_new_connection",
             ("grpc", "keep_alive"): "grpc", ("grpc", "per_request"): "grpc"}
RATIOS = np.round(np.geomspace(1, 100, 41), 3)
ENGINEERS = np.arange(2, 201)
DEPLOYS = np.round(np.geomspace(0.1, 40, 53), 3)  # releases per team per week
PER_DAY = np.round(np.geomspace(1e3, 1e9, 61))


def _graph_fits(p) -> str | None:
    if p.shared_dependencies < p.graph_components:
        return None
    return f"an integer in [0, {p.graph_components - 1}] (fewer than graph_components = {p.graph_components})"


class MonolithVsMicroservicesLab(Lab):
    id = "q03"
    headline = ("comparison", "hop_latency_ms")
    refine_param = "requests"
    arms = (Arm("baseline", "Modular monolith", "one deployable: in-process calls, one process's fate, replicas "
                "scaled as a whole"),
            Arm("pattern", "Services", "one service per component: network calls, own processes, each scaled alone "
                "with a sidecar"),
            Arm("comparison", "Services vs monolith", "extra latency per hop, cores and cost ratios"))
    assumptions = (
        "Hop costs are the loopback measurements of sim.rpc (the probe's record payload): per call the caller's "
        "time and the callee's CPU; a new connection adds 1 RTT, TLS 1 RTT more and the measured handshake CPU.",
        "The entry component is reached the same way in both arms; a service calls the next one in turn "
        "(an orchestrated path), so per-hop costs add up.",
        "Component work is exponential with mean work_ms; the first component's mean is scaling_ratio x work_ms.",
        "Blast radius: shared dependencies sit on every endpoint's path, each endpoint then calls fanout random "
        "domain components; one component fails at a time, and a failure is total for the endpoints it reaches.",
        "A monolith replica keeps one worker share per component (monolith_pooling = partitioned) or one pool for "
        "all its code (shared); services pay hop CPU at both ends of every call.",
        "Sidecar cost per 1,000 rps through one proxy: Istio 1.24's published 0.20 vCPU (assumed); one traversal "
        "at the entry (both arms) and two per internal hop.",
        "Weekly cost (engineer-hours): coordination between every pair of engineers sharing a deployable, waiting "
        "for the release pipeline (M/D/1, 40-hour week), ops_h_per_service per service, cores at core_week_h.",
        "One team per service when split (engineers / components each).",
    )
    rules = (Rule("shared_dependencies", ("shared_dependencies", "graph_components"), _graph_fits),)
    params = (
        Param("components", 4, 1, 8, unit="components", key=True, help="components on one request's path"),
        Param("rtt_ms", 0.5, 0.0, 200.0, unit="ms", key=True, help="network round trip between two services"),
        Param("reuse", "keep_alive", choices=("keep_alive", "per_request"), key=True,
              help="services keep connections open (keep-alive, HTTP/2) or open one per call"),
        Param("tls", True, help="TLS 1.3 between services (mesh mTLS); handshakes only on new connections"),
        Param("transport", "http1_json", choices=("http1_json", "grpc"), help="how services call each other"),
        Param("work_ms", 2.0, 0.05, 100.0, unit="ms", help="mean CPU work of a light component per request"),
        Param("scaling_ratio", 10.0, 1.0, 100.0, unit="x", key=True,
              help="how many times a light component's work the heavy (model) component does"),
        arrival_rate(100.0, 1.0, 2000.0, key=False),
        request_budget(800, 400, 50000),
        Param("wait_target_ms", 5.0, 0.1, 1000.0, unit="ms", help="P95 queueing wait each component is sized for"),
        Param("sidecar_vcpu_per_krps", 0.20, 0.0, 2.0, unit="vCPU",
              help="sidecar CPU per 1,000 rps through one proxy (Istio 1.24: 0.20; assumed)"),
        Param("monolith_pooling", "partitioned", choices=("partitioned", "shared"),
              help="monolith replicas keep a worker share per component (uniform scaling) or one shared pool"),
        Param("failure_kind", "crash", choices=FAILURE_KINDS, key=True,
              help="crash: the process dies; defect: one code path fails; exhaustion: a pool runs out"),
        Param("failing_component", "average", choices=FAILING,
              help="which component fails: each in turn (average), a shared dependency, or a leaf"),
        Param("caller_timeouts", False, help="callers time out and isolate a stuck dependency (bulkheads)"),
        Param("endpoints", 10, 1, 100, unit="endpoints", help="endpoints of the system"),
        Param("graph_components", 20, 2, 60, unit="components", help="components of the whole system"),
        Param("fanout", 2, 1, 10, unit="components", help="domain components each endpoint calls"),
        Param("shared_dependencies", 1, 0, 5, unit="components",
              help="components on every endpoint's path (gateway, auth, a shared store)"),
        Param("graphs", 150, 20, 5000, unit="graphs", help="random systems drawn for the blast radius"),
        Param("engineers", 8, 1, 500, unit="people", help="engineers working on the system"),
        Param("deploys_per_week", 2.0, 0.1, 40.0, unit="1/week", help="releases per team per week"),
        Param("deploy_h", 1.0, 0.05, 20.0, unit="h", help="pipeline hours one release occupies (assumed)"),
        Param("coordination_h", 0.1, 0.0, 2.0, unit="h/week",
              help="weekly hours per pair of engineers sharing a deployable (assumed)"),
        Param("ops_h_per_service", 4.0, 0.0, 40.0, unit="h/week", help="weekly operations hours per service (assumed)"),
        Param("core_week_h", 0.06, 0.0, 5.0, unit="h", help="engineer-hours one core costs per week (assumed)"),
        Param("profile", "reference", choices=("reference", "live"),
              help="hop costs: the committed loopback profile, or measured now on this machine (cached)"),
    )
    exercises = (
        Exercise("Put the services 20 ms apart. How much does each hop add now?", {"rtt_ms": 20.0},
                 ("comparison", "hop_latency_ms"),
                 why="With a reused connection a hop costs one round trip plus the two stacks; 20 ms apart, the round "
                 "trip dominates and each hop adds a little over 20 ms."),
        Exercise("Open a new TLS connection per call, 10 ms apart. Per hop?",
                 {"reuse": "per_request", "rtt_ms": 10.0}, ("comparison", "hop_latency_ms"),
                 why="A new TLS connection per call waits for TCP and the TLS 1.3 handshake before its own request: "
                 "about three round trips plus the handshake CPU, roughly 3 × 10 ms + 2 ms per hop."),
        Exercise("A defect instead of a crash: what share of endpoints does the monolith lose?",
                 {"failure_kind": "defect"}, ("baseline", "blast_radius_pct"),
                 why="A defect gives wrong answers only on the endpoints that run the faulty module, in a monolith as "
                 "in services; only a crash or an exhausted pool takes down every endpoint of the process."),
        Exercise("Let monolith replicas share one pool for all code. When does splitting save cores now?",
                 {"monolith_pooling": "shared"}, ("comparison", "core_saving_pct"),
                 why="With one pool for all its code the monolith sizes for the total load rather than for each "
                 "component's share, so it needs fewer cores than services, which also pay hop CPU and sidecars."),
    )

    # ------------------------------------------------------------------ hops
    def _hop_cost(self, p, prof, u, work) -> CallCost:
        t, hs = prof["transports"][TRANSPORT[(p.transport, p.reuse)]], prof["handshakes"]
        srv = t["server_cpu_us"]
        client = np.maximum(np.quantile(np.asarray(t["latency_us"]), u) - srv, 0.0) * 1e-6
        tls_srv = hs["tls13_server_cpu_us"]
        tls_cli = max(hs["tls13_handshake_p50_us"] - tls_srv - hs["tcp_connect_p50_us"], 0.0)
        return CallCost(client, srv * 1e-6, 0.0, tls_srv * 1e-6, tls_cli * 1e-6, 0, work)

    def _paths(self, seed, p, prof, work_s, plan):
        s = Streams(seed)
        n, k = p.requests, p.components
        arrivals = np.cumsum(s["arrivals"].exponential(1.0 / p.rate_rps, n))
        work = np.stack([s[f"work{j}"].exponential(work_s[j], n) for j in range(k)])
        u = s["hop_caller"].random((k, n))
        inproc = prof["transports"]["inprocess"]["p50_us"] * 1e-6
        link = Link(p.rtt_ms * 1e-3)
        policy = "per_request" if p.reuse == "per_request" else ("multiplexed" if p.transport == "grpc" else "keep_alive")
        out = {}
        for arm in ("baseline", "pattern"):
            env = simpy.Environment()
            if arm == "baseline":  # the same cores per component as the services get: the difference is the hops
                pools = [Service(env, c, "keep_alive") for c in plan.per_service]
            else:
                pools = [Service(env, c, policy, 100, p.tls) for c in plan.per_service]
                costs = [None] + [self._hop_cost(p, prof, u[j], work[j]) for j in range(1, k)]
            done = np.full(n, np.nan)

            def one(i, arm=arm, pools=pools, env=env, done=done):
                yield from pools[0].work(work[0, i])
                for j in range(1, k):
                    if arm == "baseline":
                        yield env.timeout(inproc)
                        yield from pools[j].work(work[j, i])
                    else:
                        yield from call(env, pools[j], link, costs[j], i)
                done[i] = env.now

            def source(env=env, one=one):
                for i in range(n):
                    d = arrivals[i] - env.now
                    if d > 0:
                        yield env.timeout(d)
                    env.process(one(i))

            env.process(source())
            env.run()
            out[arm] = done - arrivals
        return out

    # ------------------------------------------------------------------ simulation
    def simulate(self, seed: int, p) -> Outcome:
        prof = load_profile(p.profile)
        k, hops = p.components, p.components - 1
        work_s = [p.work_ms * 1e-3 * (p.scaling_ratio if j == 0 else 1.0) for j in range(k)]
        t = prof["transports"][TRANSPORT[(p.transport, p.reuse)]]
        hop_cpu = t["server_cpu_us"] * 1e-6
        memo: dict = {}

        def plan_at(r, rate=p.rate_rps):
            if (r, rate) not in memo:
                memo[(r, rate)] = _plan(p, rate, r, hop_cpu)
            return memo[(r, rate)]

        plan = plan_at(p.scaling_ratio)
        lat = self._paths(seed, p, prof, work_s, plan)
        m = Measurements(("baseline", "pattern", "comparison"))
        for arm in ("baseline", "pattern"):
            m.percentiles(arm, lat[arm], (50, 99))
        c = "comparison"
        if hops:  # per request (same work in both arms), the median of the extra time per hop
            m.percentiles(c, (lat["pattern"] - lat["baseline"]) / hops, (50,), key="hop_latency_ms")
        else:
            m.value(c, "hop_latency_ms", 0.0)  # one component: no internal hop, both arms walk the same path
        m.value(c, "hop_cpu_us", 1e6 * hop_cpu)
        m.value(c, "loopback_hop_ms", t["p50_us"] / 1e3)
        # blast radius over random graphs (common random numbers: the same graphs for both arms)
        g = Streams(seed)["graphs"]
        systems = [random_system(g, p.graph_components, p.endpoints, p.fanout, p.shared_dependencies)
                   for _ in range(p.graphs)]
        kinds = []
        for arm, dep in (("baseline", "monolith"), ("pattern", "services")):
            for kind in FAILURE_KINDS:
                x = 100 * np.array([blast_radius(sy, kind, dep, p.failing_component, p.caller_timeouts)
                                    for sy in systems])
                kinds.append({"arm": arm, "failure_kind": kind, "blast_pct": float(np.mean(x))})
                if kind == p.failure_kind:
                    m.mean(arm, "blast_radius_pct", x, missing=f"no {p.failing_component} component in these graphs")
        # cores and the decision view
        m.value("baseline", "cores", plan.monolith_cores)
        m.value("pattern", "cores", plan.services_cores)
        m.value("pattern", "sidecar_vcpu", plan.sidecar_vcpu)
        m.saving_pct(c, "core_saving_pct", ("pattern", "cores"), ("baseline", "cores"))
        cost = lambda split, **kw: _weekly(p, plan_at, split, **kw)  # noqa: E731
        m.value("baseline", "weekly_cost_h", cost(False))
        m.value("pattern", "weekly_cost_h", cost(True))
        never = "services never cost less within the values tried ({})"
        xr = first_where(RATIOS, lambda r: plan_at(r).services_cores < plan_at(r).monolith_cores)
        m.value("pattern", "scaling_ratio_x", xr, missing=never.format("ratios 1-100x: the monolith needs fewer "
                                                                       "cores however uneven the work"))
        xe = first_where(ENGINEERS, lambda e: cost(True, engineers=e) < cost(False, engineers=e))
        m.value("pattern", "team_size", xe, missing=never.format("2-200 engineers"))
        deploys = DEPLOYS[DEPLOYS * p.deploy_h < 38.0]  # a team's own pipeline stays below saturation
        xd = first_where(deploys, lambda d: cost(True, deploys=d) < cost(False, deploys=d)) if deploys.size else np.nan
        m.value("pattern", "deploys_per_week", xd, missing=never.format("releases a week per team, up to what one "
                                                                        "team's pipeline can take"))
        xl = first_where(PER_DAY, lambda r: cost(True, rate=r / 86400) < cost(False, rate=r / 86400))
        m.value("pattern", "requests_per_day", xl, missing=never.format("1e3-1e9 requests a day"))
        m.value("pattern", "services", float(k))
        curve = pd.DataFrame([{"scaling_ratio": r, "arm": arm, "cores": getattr(plan_at(r), f)}
                              for r in RATIOS[::4] for arm, f in (("baseline", "monolith_cores"),
                                                                  ("pattern", "services_cores"))])
        notes = [f"{p.requests} Poisson requests at {p.rate_rps:g} req/s through {k} component(s); hop costs from "
                 f"{'the committed loopback profile' if p.profile == 'reference' else 'this machine'} "
                 f"({prof['provenance']['cpu']}): {TRANSPORT[(p.transport, p.reuse)]} P50 {t['p50_us'] / 1e3:.2f} ms.",
                 f"Blast radius: mean over {p.graphs} random graphs of {p.endpoints} endpoints x "
                 f"{p.graph_components} components; cores sized for a P95 wait of {p.wait_target_ms:g} ms.",
                 "Team, release and load thresholds come from an assumed weekly cost model (see assumptions)."]
        return Outcome(m, {"blast": pd.DataFrame(kinds), "cores": curve}, notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        lat = pd.DataFrame([{"arm": a, "p50_ms": result.metrics[a]["p50_ms"]} for a in ("baseline", "pattern")])
        r = result.params["scaling_ratio"]
        return [bar_chart(lat, "arm", "p50_ms", "Median path latency", "P50 (ms)", color="arm"),
                bar_chart(result.series["blast"], "failure_kind", "blast_pct", "Endpoints one failure takes down",
                          "% of endpoints", color="arm", rules=[(20, "seed: under 20%")]),
                line_chart(result.series["cores"], "scaling_ratio", "cores", "Cores for the wait target",
                           "heavy / light work (x, log)", "cores", log_x=True, points=True,
                           rules=[("x", r, f"this run ({r:g}x)")])]


def _plan(p, rate, ratio, hop_cpu):
    work = [p.work_ms * 1e-3 * (ratio if j == 0 else 1.0) for j in range(p.components)]
    return core_plan(rate, work, hop_cpu, p.wait_target_ms * 1e-3, p.sidecar_vcpu_per_krps, p.monolith_pooling)


def _weekly(p, plan_at, split, engineers=None, deploys=None, rate=None):
    pl = plan_at(p.scaling_ratio, rate if rate is not None else p.rate_rps)
    cores = pl.services_cores if split else pl.monolith_cores
    return weekly_cost_h(p.engineers if engineers is None else engineers, p.components,
                         p.deploys_per_week if deploys is None else deploys, p.deploy_h, p.coordination_h,
                         p.ops_h_per_service, cores, p.core_week_h, split)


LAB = MonolithVsMicroservicesLab()
