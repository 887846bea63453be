"""Q14: finding the faulty service from sampled traces vs from logs alone, and what tracing costs.

Requests fan out across eleven services (``sim.calltree``); mid-window one service goes bad
(slower, or failing, on a share of its calls). Both arms see the same requests, the same alert
and the same fix; they differ in how the culprit is found. Logs only: an engineer examines
services one after another in a search order. Tracing: head-sampled traces
(``ParentBased(TraceIdRatioBased)``) are compared with a baseline window by running z-scores
(``sim.tracing.ShiftDetector``) on critical-path self time or error origins. The sampled traces
arrive as a thinned Poisson stream, so the k-th one is the same request at every rate. The
per-span cost is measured with the OpenTelemetry Python SDK (``sim.otel``): a committed reference
measurement by default, or timed on this machine.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.calltree import Call, CallTree, Service, log_alerts
from sim.components import poisson_arrivals
from sim.dist import Lognormal
from sim.otel import measure_span_costs, reference_span_costs
from sim.rng import Streams
from sim.tracing import ShiftDetector, TraceIdRatioBased, lowest_sufficient, random_trace_ids, rate_for_events

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .kit import arrival_rate, request_budget
from .measure import Measurements

TREE = CallTree((
    Service("gateway", 2.0, 0.5, ((Call("auth"),), (Call("features"), Call("candidates")), (Call("model"),),
                                  (Call("ranker"),))),
    Service("auth", 3.0), Service("features", 2.0, 0.5, ((Call("feature_store"), Call("embeddings")),)),
    Service("feature_store", 4.0), Service("embeddings", 3.0, 0.5, ((Call("vector_db"),),)),
    Service("vector_db", 8.0), Service("candidates", 2.0, 0.5, ((Call("cache"),), (Call("db", 0.3),))),
    Service("cache", 1.0), Service("db", 12.0, 0.8), Service("model", 25.0, 0.3), Service("ranker", 5.0),
), "gateway")
NAMES = TREE.names
#: left without spans, in this order: managed data stores first, then leaves
UNINSTRUMENTED_ORDER = ("cache", "db", "vector_db", "feature_store", "auth", "ranker", "model")
GRID_PCT = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
K_TRACES = 2000  # sampled traces simulated on each side of the fault
ARMS = ("baseline", "pattern", "comparison")
# what the traffic window and the sampled-trace streams read (the engineer's minutes, the search order
# and the diagnosis window are left to ``simulate``)
TRAFFIC = ("requests", "rate_rps", "faulty_service", "fault_mode", "fault_delay_ms", "fault_fraction",
           "background_error_pct", "uninstrumented_services", "sampling_rate_pct", "export_mode", "export_rtt_ms",
           "span_costs", "span_cost_us", "unsampled_span_cost_us")
TRACES = ("rate_rps", "faulty_service", "fault_mode", "fault_delay_ms", "fault_fraction", "background_error_pct",
          "uninstrumented_services", "sampling_rate_pct", "export_mode", "export_rtt_ms", "span_costs",
          "span_cost_us", "baseline_window_min", "z_threshold", "min_traces")


class ObservabilityLab(Lab):
    id = "q14"
    headline = ("pattern", "mttr_min")
    refine_param = "requests"
    arms = (Arm("baseline", "Logs only", "an engineer examines services' logs one by one in the search order"),
            Arm("pattern", "Sampled traces", "head-sampled traces name the service whose critical-path time or "
                "error origins moved; the engineer confirms it"))
    assumptions = (
        "Services are infinite-server stations (sim.calltree): no queues, so span costs add latency but never "
        "queue; own work per call is lognormal with illustrative means (about 50 ms end to end).",
        "Detection and the fix (detect_min, fix_min) are the same assumed constants in both arms; MTTR = "
        "detection + diagnosis + fix. The logs-only engineer is perfect: examine_min per service, culprit seen.",
        "A sampled request records every span (ParentBased); a traced call records its server span and one "
        "client span per instrumented callee; an uninstrumented leaf's time and errors show in its caller.",
        "Per-span costs are measured with the OpenTelemetry Python SDK (sim.otel: medians over interleaved rounds, "
        "discarding exporter): the committed reference or this machine (span_costs), unless span_cost_us / "
        "unsampled_span_cost_us override them.",
        "Synchronous export (SimpleSpanProcessor) blocks every span end for export_rtt_ms, an assumed round "
        "trip to a collector; batch export runs off the request path.",
        f"At most {K_TRACES} sampled traces are simulated on each side of the fault; the k-th post-fault one is "
        "the same request at every sampling rate (common random numbers).",
    )
    rules = (Rule("diagnosis_window_min", ("diagnosis_window_min", "detect_min"), lambda p: None
                  if p.diagnosis_window_min >= p.detect_min else
                  f">= detect_min ({p.detect_min:g} min): the traces are opened when the alert fires"),)
    params = (
        request_budget(10000, 1000, 200000),
        arrival_rate(50.0, 0.01, 5000.0),
        Param("faulty_service", "feature_store", choices=NAMES, key=True, help="the service that goes bad"),
        Param("fault_mode", "latency", choices=("latency", "error"), help="hit calls slow by fault_delay_ms, or fail"),
        Param("fault_delay_ms", 50.0, 1.0, 10000.0, unit="ms", help="extra time per affected call (latency mode)"),
        Param("fault_fraction", 0.05, 0.001, 1.0, unit="fraction", key=True,
              help="share of calls to the faulty service hit (0.05 intermittent, 0.25 one bad replica of 4)"),
        Param("background_error_pct", 0.1, 0.0, 10.0, unit="%", help="chance that any call fails on its own"),
        Param("sampling_rate_pct", 1.0, 0.01, 100.0, unit="%", key=True, help="TraceIdRatioBased ratio x 100"),
        Param("uninstrumented_services", 0, 0, len(UNINSTRUMENTED_ORDER), unit="services", key=True,
              help="services without spans, taken in order " + ", ".join(UNINSTRUMENTED_ORDER)),
        Param("export_mode", "batch", choices=("batch", "simple"), key=True,
              help="span processor: batch (queued, exported in the background) or simple (exported on span end)"),
        Param("export_rtt_ms", 0.5, 0.0, 1000.0, unit="ms", help="assumed collector round trip per synchronous export"),
        Param("span_costs", "reference", choices=("reference", "this_machine"),
              help="OpenTelemetry SDK span costs: the committed measurement (data/profiles/otel_spans.json) or timed now"),
        Param("span_cost_us", 0.0, 0.0, 20000.0, unit="us",
              help="in-request cost of one recorded span; 0 = the measured SDK cost for export_mode"),
        Param("unsampled_span_cost_us", 0.0, 0.0, 1000.0, unit="us", help="per non-recording span; 0 = measured"),
        Param("baseline_window_min", 60.0, 1.0, 1440.0, unit="min", help="sampled traces before the fault: baseline"),
        Param("diagnosis_window_min", 10.0, 1.0, 240.0, unit="min", help="traces must name one by then, else logs"),
        Param("min_traces", 5, 1, 100, unit="traces", help="post-fault sampled traces needed before naming anyone"),
        Param("z_threshold", 4.0, 1.0, 20.0, unit="sigma", help="z-score vs the baseline needed to name a service"),
        Param("log_search", "topology", choices=("topology", "alerts_top_down", "alerts_bottom_up", "random"),
              help="logs-only order: breadth-first; services alerting on their own logs first (top or deepest "
                   "first); or random"),
        Param("examine_min", 20.0, 1.0, 240.0, unit="min", help="engineer time to examine one service's logs"),
        Param("trace_review_min", 5.0, 0.5, 120.0, unit="min", help="engineer time to read and confirm the traces"),
        Param("detect_min", 5.0, 0.0, 120.0, unit="min", help="fault to alert, the same in both arms"),
        Param("fix_min", 10.0, 0.0, 480.0, unit="min", help="culprit known to service restored, the same in both arms"),
    )
    exercises = (
        Exercise("Drop traffic to 1 req/s and sampling to 0.1%. What happens to the tracing arm's MTTR?",
                 {"rate_rps": 1.0, "sampling_rate_pct": 0.1}, ("pattern", "mttr_min"),
                 why="Tracing finds the fault only after enough sampled traces have gone through the faulty service: "
                 "at 1 req/s and 0.1% sampling that takes far longer than the alerting delay."),
        Exercise("Leave four services uninstrumented (the faulty feature store among them). Which service do the "
                 "traces blame, and what does the detour cost?", {"uninstrumented_services": 4},
                 ("pattern", "mttr_min"),
                 why="An uninstrumented service leaves a gap in every trace; the traces blame the nearest "
                 "instrumented neighbour, and the team first checks the wrong service before finding the real "
                 "one."),
        Exercise("Export spans synchronously to a collector 1 ms away. What does a traced request pay now?",
                 {"export_mode": "simple", "export_rtt_ms": 1.0}, ("comparison", "tracing_overhead_ms"),
                 why="The simple span processor exports each span on the request's own thread, so every span adds a "
                 "collector round trip to the request; the batch processor exports off the request path."),
    )

    # the heavy, engineer-free pieces, cached on what they read: sweeps over the engineer's minutes, the
    # log search order or the detection and fix times reuse them
    parts = {"traffic": TRAFFIC, "traces": TRACES}
    part_cache_size = 16  # a traffic part keeps 2 x requests latencies, a traces part its detector (~3 MB)

    def part_traffic(self, seed: int, p) -> dict:
        """The traffic window: both arms' latencies and errors, the logs' alerts, the span costs' overheads."""
        streams, culprit = Streams(seed), TREE.index[p.faulty_service]
        visible = _visible(p)
        n, lam = p.requests, p.rate_rps
        us = {k: _span_us(p, k) for k in ("batch", "simple", "unsampled")}
        arrivals = poisson_arrivals(streams["arrivals"], lam, n)
        after = arrivals >= 0.5 * n / lam
        own, called, origin = _draw_calls(streams, "traffic", n, p, culprit, after)
        spans = TREE.spans_per_call(called, visible)
        sampled = TraceIdRatioBased(p.sampling_rate_pct / 100).sample(random_trace_ids(streams["trace_ids"], n))
        base = TREE.run(own, called, origin, visible)

        # mean latency a span cost adds (healthy half, same draws); every cost in one pass over the tree
        healthy = ~after
        costs = [us[mode][b] for mode in (p.export_mode, "simple") for b in ("median", "low", "high")]
        own_h, spans_h, called_h = own[healthy], spans[healthy], called[healthy]
        lat = TREE.latency(np.concatenate([own_h + c * 1e-6 * spans_h for c in costs]),
                           np.tile(called_h, (len(costs), 1)))
        base_h = base.latency[healthy]
        extra = [float(np.mean(block - base_h) * 1e3) for block in np.split(lat, len(costs))]

        mixed = np.where(sampled[:, None], us[p.export_mode]["median"], us["unsampled"]["median"])
        pat = TREE.run(own + mixed * 1e-6 * spans, called, origin, visible)
        return {"base": _Latencies(base), "pat": _Latencies(pat), "after": after, "alerts": log_alerts(TREE, base, after),
                "extra_ms": {"tracing_overhead_ms": extra[:3], "sync_export_overhead_ms": extra[3:]},
                "complete": int((~(called & ~visible[None, :]).any(axis=1)).sum()), "us": us}

    def part_traces(self, seed: int, p) -> dict:
        """The sampled traces on both sides of the fault, the detector and when it names whom per sampling rate."""
        streams, culprit, visible = Streams(seed), TREE.index[p.faulty_service], _visible(p)
        rec_us = _span_us(p, p.export_mode)["median"]
        post = _trace_stream(streams, "post", p, culprit, visible, rec_us, True)
        prior = _trace_stream(streams, "base", p, culprit, visible, rec_us, False)
        det = ShiftDetector(*(s["run"].cp_self_seen if p.fault_mode == "latency" else s["run"].origin_seen
                              for s in (post, prior)), "mean" if p.fault_mode == "latency" else "count")
        grid = pd.DataFrame([{"sampling_pct": pct, **_naming(det, post, prior, p.rate_rps * pct / 100, p)}
                             for pct in sorted(set(GRID_PCT) | {p.sampling_rate_pct})])
        return {"post": {"arrival": post["arrival"]}, "det": det, "grid": grid}

    def simulate(self, seed: int, p) -> Outcome:
        streams, m = Streams(seed), Measurements(ARMS)
        n, lam = p.requests, p.rate_rps
        costs = reference_span_costs() if p.span_costs == "reference" else measure_span_costs()
        traffic, traces = self.part("traffic", seed, p), self.part("traces", seed, p)
        base, pat, after, us = traffic["base"], traffic["pat"], traffic["after"], traffic["us"]
        rec_us = us[p.export_mode]
        post, det = traces["post"], traces["det"]

        order = TREE.search_order(p.log_search, traffic["alerts"], streams["search_order"])
        exams_logs = order.index(p.faulty_service) + 1
        window_s, look_s = p.diagnosis_window_min * 60.0, p.detect_min * 60.0
        grid = traces["grid"].copy()
        grid["sufficient"] = (grid.named == p.faulty_service) & (grid.minutes <= p.diagnosis_window_min)

        # the engineer at the configured rate: open the traces at the alert, wait until the window closes
        here = grid[grid.sampling_pct == p.sampling_rate_pct].iloc[0]
        trace_rate = lam * p.sampling_rate_pct / 100
        seen = det.first_alarm(int(here.baseline_traces), p.z_threshold, p.min_traces, post["arrival"] / trace_rate,
                               look_s, window_s) if here.baseline_traces >= 2 else None
        named, wait_min, review, exams_tr = None, (window_s - look_s) / 60, 0.0, exams_logs
        if seen:
            named, review = NAMES[seen[1]], p.trace_review_min
            wait_min = max(post["arrival"][seen[0] - 1] / trace_rate - look_s, 0.0) / 60
            exams_tr = 1 if named == p.faulty_service else TREE.detour(named, p.faulty_service, order)
        log_min_tr = (exams_tr - (named == p.faulty_service)) * p.examine_min
        mttr = {"baseline": p.detect_min + exams_logs * p.examine_min + p.fix_min,
                "pattern": p.detect_min + wait_min + review + log_min_tr + p.fix_min}

        for arm, run in (("baseline", base), ("pattern", pat)):
            m.percentiles(arm, run.latency[~after])
            m.percentiles(arm, run.latency[after], (99,), key="p99_fault_ms")
            m.share(arm, "error_rate_pct", run.request_failed[after].sum(), after.sum())
            m.value(arm, "mttr_min", mttr[arm])
            m.value(arm, "diagnosis_min", mttr[arm] - p.detect_min - p.fix_min)
            m.value(arm, "services_examined", exams_logs if arm == "baseline" else exams_tr)
        # requests whose every service emitted spans
        m.share("pattern", "trace_coverage_pct", traffic["complete"], n)
        m.missing("baseline", "trace_coverage_pct", "the logs-only arm records no traces")
        for key, v in (("trace_wait_min", wait_min), ("culprit_named", float(named == p.faulty_service)),
                       ("sampled_traces_per_min", trace_rate * 60), ("recorded_span_us", rec_us["median"]),
                       ("unsampled_span_us", us["unsampled"]["median"])):
            m.value("pattern", key, v)
        why_here = _why(here, p)
        m.value("pattern", "time_to_name_min", here.minutes, missing=why_here)
        m.value("pattern", "traces_to_name", here.traces, missing=why_here)
        top = grid[grid.sampling_pct == 100.0].iloc[0]
        m.value("pattern", "sampling_needed_pct", lowest_sufficient(grid.sampling_pct, grid.sufficient),
                missing="even 100% sampling does not do it: " + _why(top, p))
        at1 = grid[grid.sampling_pct == 1.0].iloc[0]
        m.value("pattern", "rps_needed_at_1pct", rate_for_events(at1.traces, window_s, 0.01)
                if at1.named == p.faulty_service else np.nan, missing="at 1% sampling " + _why(at1, p))
        for key, (mid, low, high) in traffic["extra_ms"].items():
            m.value("comparison", key, mid, (low, high))
        m.value("comparison", "mean_overhead_ms", float(np.mean((pat.latency - base.latency)[~after]) * 1e3))
        m.value("comparison", "p99_overhead_ms", m.metrics["pattern"]["p99_ms"] - m.metrics["baseline"]["p99_ms"])
        m.ratio("comparison", "mttr_reduction_x", ("baseline", "mttr_min"), ("pattern", "mttr_min"))
        m.value("comparison", "diagnosis_saved_min", mttr["baseline"] - mttr["pattern"])

        phases = {"detection": (p.detect_min,) * 2, "awaiting traces": (0.0, wait_min), "trace review": (0.0, review),
                  "log search": (exams_logs * p.examine_min, log_min_tr), "fix": (p.fix_min,) * 2}
        series = {"sampling": grid, "mttr": pd.DataFrame(phases, index=ARMS[:2]),
                  "services": _service_table(det, int(here.baseline_traces), seen[0] if seen else p.min_traces)}
        notes = [f"{n} requests at {lam:g} req/s ({n / lam:g} s), fault in {p.faulty_service} at mid-window. Logs "
                 f"({p.log_search}): {' > '.join(order[:exams_logs])}. Traces named "
                 + (f"{named}." if named else "nothing within the diagnosis window, so the log search followed."),
                 f"Measured per span (OpenTelemetry SDK {costs['sdk_version']}, "
                 f"{'reference: ' + costs['provenance']['cpu'] if p.span_costs == 'reference' else 'this machine'}"
                 f"): batch "
                 f"{costs['batch']['median_us']:.3g} us, simple {costs['simple']['median_us']:.3g} us, unsampled "
                 f"{costs['unsampled']['median_us']:.3g} us; `python -m sim.otel` measures again."]
        return Outcome(m, series, notes=notes, extras={"log_order": order, "named": named, "culprit": p.faulty_service})

    def plots(self, result):
        return [_plot_mttr(result), _plot_sampling(result), _plot_services(result)]


class _Latencies:
    """What the measurements read of a ``TreeRun``: each request's latency and whether it failed."""

    def __init__(self, run):
        self.latency, self.request_failed = run.latency.copy(), run.request_failed.copy()


def _visible(p) -> np.ndarray:
    return np.array([s not in UNINSTRUMENTED_ORDER[: p.uninstrumented_services] for s in NAMES])


def _span_us(p, kind: str) -> dict:
    """In-request cost (us) of one span of ``kind`` (batch, simple, unsampled): median, low and high; a
    synchronous (simple) export also waits for the collector at every span end."""
    costs = reference_span_costs() if p.span_costs == "reference" else measure_span_costs()
    given = p.unsampled_span_cost_us if kind == "unsampled" else p.span_cost_us
    rtt = 1e3 * p.export_rtt_ms if kind == "simple" else 0.0
    return {b: (given or costs[kind][f"{b}_us"]) + rtt for b in ("median", "low", "high")}


def _draw_calls(streams: Streams, prefix: str, n: int, p, culprit: int, faulty: np.ndarray):
    """Own work (s), calls made and failing calls of ``n`` requests, the fault applied where due."""
    own = np.column_stack([Lognormal(TREE.mean_s[k], TREE.cv[k]).sample(streams[f"{prefix}.own.{s}"], n)
                           for k, s in enumerate(NAMES)])
    called = TREE.calls(streams[f"{prefix}.calls"].random((n, len(NAMES))))
    origin = streams[f"{prefix}.errors"].random((n, len(NAMES))) < p.background_error_pct / 100.0
    hit = (streams[f"{prefix}.fault"].random(n) < p.fault_fraction) & faulty
    if p.fault_mode == "latency":
        own[:, culprit] += np.where(hit, p.fault_delay_ms / 1e3, 0.0)
    else:
        origin[:, culprit] |= hit
    return own, called, origin


def _trace_stream(streams, prefix, p, culprit, visible, rec_us, faulty) -> dict:
    """K_TRACES sampled traces on one side of the fault; arrivals in units of 1 / (traces per second)."""
    own, called, origin = _draw_calls(streams, prefix, K_TRACES, p, culprit, np.full(K_TRACES, faulty))
    run = TREE.run(own + rec_us * 1e-6 * TREE.spans_per_call(called, visible), called, origin, visible)
    return {"run": run, "arrival": np.cumsum(streams[f"{prefix}.gaps"].exponential(1.0, K_TRACES))}


def _naming(det, post, prior, trace_rate, p) -> dict:
    """When and from how many post-fault traces the detector first names a service at this trace rate."""
    nb = int(np.searchsorted(prior["arrival"], trace_rate * p.baseline_window_min * 60, side="right"))
    first = det.first_alarm(nb, p.z_threshold, p.min_traces) if nb >= 2 else None
    if first is None:
        return {"baseline_traces": nb, "traces": np.nan, "minutes": np.nan, "named": None}
    return {"baseline_traces": nb, "traces": float(first[0]), "named": NAMES[first[1]],
            "minutes": post["arrival"][first[0] - 1] / trace_rate / 60}


def _why(row, p) -> str:
    """Why the traces do not name the culprit in time at one sampling rate (a sampling-grid row)."""
    at = f"at {row.sampling_pct:g}% of {p.rate_rps:g} req/s"
    if row.baseline_traces < 2:
        return f"fewer than 2 sampled traces in the {p.baseline_window_min:g}-min baseline window {at}"
    if row.named is None:
        return (f"no service reaches z >= {p.z_threshold:g} within {K_TRACES} post-fault traces {at} (the fault is "
                "too small or too rare against the noise)")
    if row.named != p.faulty_service:
        return f"the traces blame {row.named}" + (f", since {p.faulty_service} emits no spans" if p.faulty_service
                                                  in UNINSTRUMENTED_ORDER[: p.uninstrumented_services] else "")
    return f"the {row.traces:g} traces needed take {row.minutes:.3g} min {at}, beyond the diagnosis window"


def _service_table(det, nb: int, k: int) -> pd.DataFrame:
    """Per service: baseline vs post-fault mean of the detector's signal (ms, or % of traces), and z."""
    nb_, k, scale = max(nb, 2), min(k, K_TRACES), 1e3 if det.kind == "mean" else 100.0
    return pd.DataFrame({"service": NAMES, "baseline": det.base_cum[nb_ - 1] / nb_ * scale,
                         "after": det.post_cum[k - 1] / k * scale, "z": det.z(nb_)[k - 1] if nb >= 2 else np.nan})


def _plot_mttr(result):
    from .plotting import bar_chart

    df = result.series["mttr"].rename(index={"baseline": "logs only", "pattern": "tracing"})
    long = df.rename_axis("arm").reset_index().melt("arm", var_name="phase", value_name="minutes")
    colours = dict(zip(df.columns, ["#95a5a6", "#85c1e9", "#2471a3", "#c0392b", "#27ae60"]))
    return bar_chart(long, "arm", "minutes", "Time to restore: detection + diagnosis + fix (minutes)",
                     "minutes after the fault", color="phase", stacked=True, horizontal=True,
                     rules=[(15, "15 min target")], height=120, colours=colours)


def _plot_sampling(result):
    from .plotting import line_chart

    df, p = result.series["sampling"], result.params
    df = df[df.named.notna()].assign(
        outcome=np.where(df.named[df.named.notna()] == result.extras["culprit"], "right service", "wrong service"))
    return line_chart(df, "sampling_pct", "minutes", "Time after the fault until sampled traces name a service",
                      "sampling rate (%, log)", "minutes after fault (log)", color="outcome", log_x=True,
                      log_y=True, points=True, spans=[(1, 10)], span_label="seed's 1-10%",
                      rules=[("y", p["diagnosis_window_min"], "diagnosis window"), ("y", p["detect_min"], "alert")])


def _plot_services(result):
    from .plotting import bar_chart

    df = result.series["services"][["service", "baseline", "after"]]
    long = df.melt("service", var_name="window", value_name="value")
    label = ("critical-path self time (ms)" if result.params["fault_mode"] == "latency"
             else "error origins (% of traces)")
    return bar_chart(long, "service", "value", f"What the sampled traces show per service (culprit: "
                     f"{result.extras['culprit']})", label, color="window",
                     colours={"baseline": "#999999", "after": "#2471a3"})


LAB = ObservabilityLab()
