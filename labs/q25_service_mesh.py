"""Q25: a sidecar mesh on a chain of ML services: what the proxies cost, what mTLS covers, how retries behave.

Three experiments share one seed. Latency: ``requests`` calls at ``rate_rps`` cross ``hops`` hops,
once direct and once through a client and a server sidecar per hop (``sim.mesh``: Istio's
published cost, assumed, with each proxy's worker threads queued); a call on a new connection pays
a TCP connect or a real mutual-TLS 1.3 handshake timed on loopback (``sim.mtls``, the committed
profile or this machine's). Coverage: generated callers (with a sidecar, plaintext, TLS without a
certificate) call a real loopback server that stands for PERMISSIVE or STRICT. Retries: the same
chain with a backend losing ``outage_down_pct`` of its replicas; every layer retries at once
(baseline), with Envoy's jittered back-off (pattern) or back-off plus a 20% retry budget (budget).
``outage_mode = none`` is the retries' control; zero sidecar cost is the latency's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim import mesh, mtls
from sim.components import poisson_arrivals
from sim.metrics import t_interval
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .kit import arrival_rate, request_budget
from .measure import Measurements

ARMS = ("baseline", "pattern", "budget", "comparison")
BINS = 20


MAX_CHAIN_REQUESTS = 40_000


def _chain_window(p) -> float:
    """The retry experiment runs from 0 to the outage's end plus ``after_outage_s``."""
    return p.outage_start_s + p.outage_duration_s + p.after_outage_s


def _chain_size(p) -> str | None:
    n = _chain_window(p) * p.chain_rate_rps
    if n <= MAX_CHAIN_REQUESTS:
        return None
    most = MAX_CHAIN_REQUESTS / p.chain_rate_rps - p.outage_start_s - p.after_outage_s
    return (f"at most {max(most, 0):g} s at chain_rate_rps = {p.chain_rate_rps:g} (the retry window "
            f"outage_start_s + outage_duration_s + after_outage_s holds at most {MAX_CHAIN_REQUESTS:,} requests)")


class ServiceMeshLab(Lab):
    id = "q25"
    headline = ("comparison", "latency_overhead_p95_ms")
    refine_param = "requests"
    arms = (Arm("baseline", "No mesh, immediate retries", "direct plaintext calls; each service retries in its own code "
                "at once"),
            Arm("pattern", "Sidecars, back-off", "a client and a server proxy per hop, mutual TLS, Envoy's jittered "
                "back-off (25 ms base, 250 ms cap)"),
            Arm("budget", "Sidecars, back-off + budget", "as the pattern, and retries capped at max(3, 20% of active "
                "requests) per layer"))
    assumptions = (
        "Two unloaded sidecars add sidecar_added_ms on average (Istio's published 2.65-2.8 ms at P90, 2.7-2.9 at "
        "P99, 1,000 rps); the part not spent on proxy CPU is a fixed delay per proxy.",
        "Each proxy spends sidecar_cpu_ms of CPU per call (Istio 1.24: 0.20 vCPU per 1,000 rps), gamma with cv 0.5, "
        "on the worker thread its connection is pinned to.",
        "A new connection's mutual-TLS handshake takes the measured loopback time, half of it on each proxy's worker "
        "(both ends' CPU, one machine).",
        "Service time per hop is lognormal (cv 1) with mean app_ms; hops see no queueing of their own.",
        "A retry is sent on every failure; a request stops retrying at its route deadline; no per-try timeout.",
        "Replicas are picked at random per attempt (no outlier ejection); down replicas fail in error_ms.",
        "Code reduction: client_lines, the logical lines of the two shipped clients (sim.mesh_clients: one doing "
        "mTLS, retries and telemetry itself, one behind a sidecar), plus business_lines a mesh does not change.",
    )
    rules = (Rule("outage_duration_s", ("outage_duration_s", "outage_start_s", "after_outage_s", "chain_rate_rps"),
                  _chain_size),)
    parts = {"latency": ("requests", "rate_rps", "hops", "sidecar_added_ms", "sidecar_cpu_ms", "proxy_workers", "app_ms",
                         "network_ms", "new_connection_pct", "profile"),
             "coverage": ("peer_authentication", "unmeshed_pct", "one_way_tls_pct", "coverage_calls"),
             "retries": ("hops", "chain_rate_rps", "num_retries", "backend_replicas", "backend_ms", "outage_mode",
                         "outage_start_s", "outage_duration_s", "after_outage_s", "outage_down_pct", "error_ms",
                         "route_timeout_s", "base_interval_ms", "budget_percent", "min_retry_concurrency")}
    params = (
        request_budget(10000, 1000, 200000),
        arrival_rate(1000.0, 10.0, 9500.0),
        Param("hops", 3, 1, 8, unit="hops", key=True, help="service-to-service calls per request (and retry layers)"),
        Param("sidecar_added_ms", 2.7, 0.0, 50.0, unit="ms",
              help="P90 added by the two proxies of one hop at 1,000 rps (Istio: 2.65-2.8 ms)"),
        Param("sidecar_cpu_ms", 0.2, 0.0, 5.0, unit="ms", help="proxy CPU per call (Istio 1.24: 0.20 vCPU per 1,000 rps)"),
        Param("proxy_workers", 2, 1, 16, unit="threads", help="Envoy worker threads per sidecar (Istio's benchmark: 2)"),
        Param("app_ms", 5.0, 0.1, 500.0, unit="ms", help="mean service time per hop (lognormal, cv 1)"),
        Param("network_ms", 0.2, 0.0, 100.0, unit="ms", help="round trip between two pods"),
        Param("new_connection_pct", 0.0, 0.0, 100.0, unit="%", key=True,
              help="share of calls that open a new connection (0 = pooled and reused, Envoy's way)"),
        Param("profile", "reference", choices=("reference", "live"),
              help="handshake timings: the committed loopback measurement or this machine now"),
        Param("peer_authentication", "PERMISSIVE", choices=mtls.MODES, key=True,
              help="Istio mTLS mode (PERMISSIVE, the default, also accepts plaintext)"),
        Param("unmeshed_pct", 10.0, 0.0, 100.0, unit="%", help="callers without a sidecar (they send plaintext)"),
        Param("one_way_tls_pct", 0.0, 0.0, 100.0, unit="%", help="callers using TLS without a client certificate"),
        Param("coverage_calls", 40, 10, 400, unit="calls", help="generated calls sent to the real loopback server"),
        Param("business_lines", 120, 10, 5000, unit="lines", help="lines of model/business code a mesh leaves as is"),
        Param("chain_rate_rps", 150.0, 10.0, 1000.0, unit="req/s", help="arrival rate in the retry experiment"),
        Param("num_retries", 2, 0, 5, unit="retries", help="retries per layer (Istio's default attempts: 2)"),
        Param("backend_replicas", 8, 1, 64, unit="replicas", help="single-worker replicas of the deepest service"),
        Param("backend_ms", 20.0, 1.0, 1000.0, unit="ms", help="mean work per call at a healthy replica (exponential)"),
        Param("outage_mode", "error", choices=("error", "none"), key=True,
              help="error: down replicas fail calls fast; none: the same window with nothing down (control)"),
        Param("outage_start_s", 3.0, 0.0, 600.0, unit="s", help="when the backend loses replicas"),
        Param("outage_duration_s", 5.0, 0.1, 3600.0, unit="s", key=True, help="how long the replicas stay down"),
        Param("after_outage_s", 6.0, 1.0, 600.0, unit="s", help="retry experiment runs on this long after the outage"),
        Param("outage_down_pct", 75.0, 1.0, 100.0, unit="%", key=True, help="share of backend replicas down"),
        Param("error_ms", 1.0, 0.1, 1000.0, unit="ms", help="time for a call to a down replica to fail"),
        Param("route_timeout_s", 5.0, 0.1, 60.0, unit="s", help="deadline per request, covering all its retries"),
        Param("base_interval_ms", 25.0, 1.0, 1000.0, unit="ms", help="Envoy back-off base (cap = 10 x base)"),
        Param("budget_percent", 20.0, 1.0, 100.0, unit="%", help="Envoy retry budget: share of active requests"),
        Param("min_retry_concurrency", 3, 0, 100, unit="retries", help="Envoy retry budget floor"),
    )
    exercises = (
        Exercise("Open a new connection for every call (no pooling). What does each hop cost now?",
                 {"new_connection_pct": 100.0}, ("comparison", "overhead_per_hop_p95_ms"),
                 why="Every call now pays a mutual-TLS handshake in the proxies; at this rate the handshakes saturate "
                 "the proxy workers and calls queue, so the cost per hop jumps from milliseconds to seconds."),
        Exercise("Push the mesh to 4,500 rps on two proxy workers. Where does the P95 overhead go?",
                 {"rate_rps": 4500.0}, ("comparison", "latency_overhead_p95_ms"),
                 why="More load raises the proxy workers' utilisation and adds queueing on top of the fixed sidecar "
                 "cost; on two workers at 4,500 rps that wait is still small next to it."),
        Exercise("Switch PeerAuthentication to STRICT. What share of calls is encrypted, and what breaks?",
                 {"peer_authentication": "STRICT"}, ("pattern", "mtls_coverage_pct"),
                 why="STRICT refuses plaintext, so every call that still succeeds is encrypted; clients without a "
                 "certificate now fail instead of quietly talking plaintext, as PERMISSIVE lets them."),
        Exercise("Make the outage last 20 s. How much extra load does back-off alone save?",
                 {"outage_duration_s": 20.0}, ("comparison", "load_amplification_reduction_pct"),
                 why="Back-off spaces the retries out, but in a long outage every retry fails anyway, so each layer "
                 "still sends (1 + retries) attempts per call; only a retry budget caps the amplification."),
    )

    # ------------------------------------------------------------------ the three experiments, cached as parts
    def part_latency(self, seed: int, p) -> tuple:
        m = Measurements(ARMS)
        prof = mtls.reference_profile() if p.profile == "reference" else mtls.live_profile()
        frame = _latency(m, Streams(seed), p, prof)
        return m, frame, prof["provenance"]["cpu"]

    def part_coverage(self, seed: int, p) -> dict:
        kinds = _caller_kinds(seed, p)
        answers = mtls.cached_probe(tuple(kinds), p.peer_authentication)
        return {"kinds": kinds, "answers": answers}

    def part_retries(self, seed: int, p) -> tuple:
        m = Measurements(ARMS)
        frame = _retries(m, Streams(seed), p)
        return m, frame

    def simulate(self, seed: int, p) -> Outcome:
        m = Measurements(ARMS)
        lat, frame, cpu = self.part("latency", seed, p)
        ret, load = self.part("retries", seed, p)
        for part in (lat, ret):
            for field in ("metrics", "intervals", "reasons"):
                for arm, values in getattr(part, field).items():
                    getattr(m, field)[arm].update(values)
        _coverage(m, self.part("coverage", seed, p), p)
        _code_reduction(m, p)
        notes = [f"Latency: {p.requests} calls at {p.rate_rps:g} req/s over {p.hops} hops; handshakes from the "
                 f"{p.profile} profile, timed on {cpu}.",
                 f"Retries: {_chain_window(p):g} s at {p.chain_rate_rps:g} req/s, {p.outage_down_pct:g}% of "
                 f"{p.backend_replicas} replicas down {p.outage_start_s:g}-{p.outage_start_s + p.outage_duration_s:g} s "
                 f"({p.outage_mode})."]
        return Outcome(m, {"latency": frame, "load": load}, notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        lat = result.series["latency"]
        load = result.series["load"]
        o0, o1 = result.params["outage_start_s"], result.params["outage_start_s"] + result.params["outage_duration_s"]
        return [bar_chart(lat, "percentile", "latency_ms", "End-to-end latency, without and with sidecars",
                          "latency (ms)", color="arm"),
                line_chart(load, "time_s", "backend_calls_per_s", "Calls reaching the backend (1 s windows)",
                           "time (s)", "calls per second", spans=[(o0, o1)])]


def _caller_kinds(seed: int, p) -> list[str]:
    r = Streams(seed)["callers"].random(p.coverage_calls) * 100
    return ["plaintext" if x < p.unmeshed_pct else "tls_no_cert" if x < p.unmeshed_pct + p.one_way_tls_pct
            else "sidecar" for x in r]


def _empirical(rng, samples_ms, shape) -> np.ndarray:
    return rng.choice(np.asarray(samples_ms, dtype=float) / 1e3, size=shape)


def _latency(m: Measurements, s: Streams, p, prof: dict) -> pd.DataFrame:
    n, h = p.requests, p.hops
    arr = poisson_arrivals(s["arrivals"], p.rate_rps, n)
    sigma = np.sqrt(np.log(2.0))  # lognormal with cv 1
    app = s["app"].lognormal(np.log(p.app_ms / 1e3) - sigma ** 2 / 2, sigma, (n, h))
    net = np.full((n, h), p.network_ms / 1e3)
    new = s["connections"].random((n, h)) < p.new_connection_pct / 100
    samples = prof["samples_ms"]
    connect = np.where(new, _empirical(s["tcp"], samples["tcp_new"], (n, h)), 0.0)
    handshake = np.where(new, _empirical(s["handshake"], samples["mtls_new"], (n, h)), 0.0)
    cpu = mesh.cpu_times(s["proxy_cpu"], p.sidecar_cpu_ms / 1e3, 0.5, (n, h, 2))
    worker = s["workers"].integers(0, p.proxy_workers, (n, h, 2))
    fixed = mesh.calibrate_fixed_s(p.sidecar_added_ms / 1e3, p.sidecar_cpu_ms / 1e3)
    base, with_mesh = mesh.sidecar_latency(arr, app, net, cpu, worker, p.proxy_workers, fixed, connect, handshake)
    rows = []
    for arm, lat in (("baseline", base), ("pattern", with_mesh)):
        m.percentiles(arm, lat, (50, 95, 99))
        rows += [{"arm": arm, "percentile": f"P{q}", "latency_ms": 1e3 * float(np.percentile(lat, q))}
                 for q in (50, 95, 99)]
    for q in (90, 95, 99):
        iv = mesh.paired_percentile_diff(base * 1e3, with_mesh * 1e3, q)
        m.value("comparison", f"latency_overhead_p{q}_ms", iv.estimate, (iv.low, iv.high))
    iv = m.interval("comparison", "latency_overhead_p95_ms")
    m.value("comparison", "overhead_per_hop_p95_ms", iv.estimate / h, (iv.low / h, iv.high / h))
    busy = (cpu.sum(axis=2).sum() + handshake.sum()) / (2 * h * p.proxy_workers * (arr[-1] - arr[0]))
    m.value("pattern", "proxy_utilization_pct", 100 * busy)
    m.value("pattern", "proxy_vcpu_per_1000rps", (cpu.sum() + handshake.sum()) / (2 * h) / n * 1000)
    for arm, key, name in (("pattern", "mtls_handshake_ms", "mtls_new"), ("baseline", "tcp_connect_ms", "tcp_new"),
                           ("pattern", "reused_call_ms", "mtls_reused")):
        x = np.asarray(samples[name])
        m.value(arm, key, float(np.median(x)), mtls.median_interval(x))
    m.ratio("comparison", "handshake_vs_tcp_x", ("pattern", "mtls_handshake_ms"), ("baseline", "tcp_connect_ms"))
    return pd.DataFrame(rows)


def _coverage(m: Measurements, cov: dict, p) -> None:
    answers = np.asarray(cov["answers"])
    accepted = answers != "broken"
    k, n = int(np.sum(answers == "mtls")), int(accepted.sum())
    if p.peer_authentication == "STRICT" or p.unmeshed_pct + p.one_way_tls_pct == 0:
        # the configuration rules out any other kind of accepted call: the calls confirm it, they do not sample it
        m.value("pattern", "mtls_coverage_pct", 100 * k / n if n else np.nan, missing="the server accepted no call")
    else:
        m.share("pattern", "mtls_coverage_pct", k, n, missing="the server accepted no call")
    m.share("pattern", "plaintext_accepted_pct", int(np.sum(answers == "plain")), len(answers))
    m.share("pattern", "broken_calls_pct", int(np.sum(~accepted)), len(answers))


def _retries(m: Measurements, s: Streams, p) -> pd.DataFrame:
    arr = poisson_arrivals(s["chain_arrivals"], p.chain_rate_rps, MAX_CHAIN_REQUESTS + 1)
    arr = arr[arr < _chain_window(p)]
    n = arr.size
    work = s["backend"].exponential(p.backend_ms / 1e3, n)
    o0, o1 = p.outage_start_s, p.outage_start_s + p.outage_duration_s
    outage = (o0, o1) if p.outage_mode == "error" else None
    down = int(round(p.backend_replicas * p.outage_down_pct / 100))
    inside = (arr >= o0) & (arr < o1)
    edges = np.linspace(o0, o1, BINS + 1)
    base_bins = np.histogram(arr, edges)[0]
    rows, per_bin = [], {}
    for arm, policy in (("baseline", "immediate"), ("pattern", "backoff"), ("budget", "budget")):
        r = mesh.retry_chain(arr, work, policy, p.hops, p.num_retries, p.backend_replicas, down, outage,
                             p.route_timeout_s, p.error_ms / 1e3, s.fresh("route"), s.fresh("backoff"),
                             p.base_interval_ms / 1e3, 10 * p.base_interval_ms / 1e3, p.budget_percent,
                             p.min_retry_concurrency)
        sent = np.histogram(r.attempt_t, edges)[0]
        per_bin[arm] = sent
        amp = sent.sum() / max(base_bins.sum(), 1)
        ok_bins = base_bins > 0
        iv = t_interval(sent[ok_bins] / base_bins[ok_bins])
        m.value(arm, "load_amplification_x", amp if base_bins.sum() else np.nan, (iv.low, iv.high),
                missing="no request arrived during the outage window")
        m.share(arm, "goodput_pct", int(r.ok[inside].sum()), int(inside.sum()),
                missing="no request arrived during the outage window")
        m.share(arm, "success_all_pct", int(r.ok.sum()), n)
        clear = mesh.backlog_clear_time(r.wait_start, r.wait_end, o1)
        m.value(arm, "recovery_s", clear - o1)
        m.value(arm, "retry_overflow", float(r.overflow))
        t = np.arange(0, int(np.ceil(_chain_window(p))) + 1)
        rows.append(pd.DataFrame({"time_s": t[:-1], "backend_calls_per_s": np.histogram(r.attempt_t, t)[0],
                                  "arm": arm}))
    _reduction(m, per_bin, base_bins)
    b = m.interval("budget", "load_amplification_x")
    m.value("comparison", "budget_load_amplification_x", b.estimate, (b.low, b.high),
            missing="no request arrived during the outage window")
    return pd.concat(rows, ignore_index=True)


def _reduction(m: Measurements, per_bin: dict, base_bins) -> None:
    """Share of the immediate retries' extra calls (above one per request) that back-off removes."""
    extra_b = per_bin["baseline"] - base_bins
    extra_p = per_bin["pattern"] - base_bins
    if extra_b.sum() <= 0:
        m.missing("comparison", "load_amplification_reduction_pct",
                  "immediate retries sent no extra call in the outage window (no outage, or no retry)")
        return
    iv = mesh.ratio_reduction(extra_p, extra_b)
    m.value("comparison", "load_amplification_reduction_pct", 100 * iv.estimate, (100 * iv.low, 100 * iv.high))


def _code_reduction(m: Measurements, p) -> None:
    from sim.mesh_clients import cross_cutting_lines

    lines = cross_cutting_lines()
    before = lines["in_code"] + p.business_lines
    after = lines["with_mesh"] + p.business_lines
    m.value("comparison", "code_reduction_pct", 100 * (before - after) / before)
    m.value("baseline", "client_lines", float(lines["in_code"]))
    m.value("pattern", "client_lines", float(lines["with_mesh"]))


LAB = ServiceMeshLab()
