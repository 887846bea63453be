"""Q14 lab: finding the faulty service from sampled traces vs from logs alone.

System. Requests fan out across eleven services (``sim.calltree``):
gateway -> auth, then features (-> feature store, embeddings -> vector DB) in
parallel with candidates (-> cache, then the DB on a 30% cache miss), then the
model, then the ranker. Each call's own work is a lognormal draw (the means
below are illustrative, about 50 ms end to end; the lab is about the diagnosis
process, not these figures). Services are infinite-server stations, so each
request's call tree is independent and the run is vectorised. At time t (the
middle of the simulated traffic window) one service goes bad: every affected
call to it takes ``fault_delay_ms`` longer (``latency``) or fails
(``error``; errors propagate to every caller up to the gateway).

Both arms have the same detection and the same fix (constants: an alert fires
``detect_min`` after the fault, the fix takes ``fix_min`` once the culprit is
known) and see the same requests (common random numbers). They differ in how
the culprit is found, which is the MTTR proxy's middle term:

* baseline, logs only: an on-call engineer examines services one after
  another, ``examine_min`` each (pull the service's logs for the incident
  window, correlate by timestamps since there is no shared trace id, rule it
  in or out; the examiner is assumed perfect: the culprit is recognised when
  examined, the others are cleared). The order (``log_search``) is
  ``topology``: breadth-first from the gateway, where the user-facing alert
  points (the seed's "log archaeology"); ``alerts_top_down`` /
  ``alerts_bottom_up``: first the services whose own log-derived signals
  alert (p99 of logged call durations up 1.5x, or error rate >= 1% and
  doubled), from the gateway down or deepest first (an engineer who knows
  that symptoms propagate upwards), then the rest breadth-first; this
  presumes per-call durations and status in every service's logs; or
  ``random``.
* pattern, tracing: requests are head-sampled with OpenTelemetry's
  ``ParentBased(TraceIdRatioBased(sampling_rate_pct / 100))`` (``sim.tracing``);
  a sampled request records every span of its tree. The culprit is named from
  the sampled traces' critical paths (Jaeger UI's algorithm): for each service
  its exclusive time on the critical path (latency faults) or its count of
  error origins (error faults) after the fault is compared with the sampled
  traces of a baseline window (``baseline_window_min`` before the fault); the
  service with the largest z-score is named once at least ``min_traces``
  post-fault traces are in and the z-score reaches ``z_threshold``. The
  engineer opens the analysis when the alert fires, waits for more traces if
  the evidence is not there yet (up to ``diagnosis_window_min`` after the
  fault), then spends ``trace_review_min`` reading the critical path and
  confirming. If the traces name the wrong service (an uninstrumented culprit
  shows up as its caller's own time), the engineer examines the named service
  and then its subtree, then falls back to the log order; if nothing is named
  within the window, the whole log search follows.

Two time scales. Latency, overhead and the logs' signals come from
``requests`` simulated requests (a window of ``requests / rate_rps``
seconds). The sampled traces that drive the diagnosis come from a longer
stream: the baseline window before the fault and up to the diagnosis window
after it. Head sampling thins the Poisson arrivals, so the sampled traces
arrive as a Poisson stream at ``rate_rps * sampling_rate`` per second; the
k-th sampled trace after the fault is the same simulated request at every
sampling rate (common random numbers) and only its arrival time scales as
1/rate. At most 2000 traces on each side are simulated (beyond that the
estimates no longer change).

Overhead: each instrumented call records a server span and, in its caller, a
client span, so a traced request pays ``span_cost_us`` per span on its path
(start/end, attributes, enqueue in the BatchSpanProcessor; the export itself
runs in the background). An untraced request still creates non-recording spans
and propagates context, ``unsampled_span_cost_us`` per span. The default of
25 us per recorded span is a figure for Python services: published
measurements give a few us per span for the OpenTelemetry Go and Java SDKs
and about 12 us just to create a span in a Python tracer (dd-trace-py), before
attributes and propagation; one Python setup has been reported at 1-2 ms per
span (opentelemetry-python issue 3452), which is the range where the seed's
5-15 ms would appear. CPU contention from tracing is not modelled (no
queues), so the overhead adds to latency but never queues.

Metrics. ``mttr_min`` = detection + diagnosis + fix; ``diagnosis_min`` the
middle term; ``time_to_name_min`` / ``traces_to_name``: when and after how
many post-fault sampled traces the traces first name a service at the
configured rate; ``sampling_needed_pct``: the lowest rate of the grid
0.01-100% from which every higher rate names the right service within the
diagnosis window; ``rps_needed_at_1pct``: traffic at which 1% sampling gets
the traces needed within the window with 95% probability;
``trace_coverage_pct``: services that emit spans / all services;
``tracing_overhead_ms``: added latency of a traced request (healthy half,
same draws with and without spans); ``mean_overhead_ms``: the same averaged
over all requests at the configured sampling rate; ``p99_overhead_ms``: the
shift of the P99 at that rate (``p99_overhead_all_traced_ms`` at 100%).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import gamma

from sim.calltree import Call, CallTree, Service
from sim.components import poisson_arrivals
from sim.dist import Lognormal
from sim.metrics import batch_means, percentile_ci
from sim.rng import Streams
from sim.tracing import TraceIdRatioBased, random_trace_ids

from .contract import Exercise, Lab, Outcome, Param

SERVICES = (
    Service("gateway", 2.0, 0.5, ((Call("auth"),), (Call("features"), Call("candidates")), (Call("model"),),
                                  (Call("ranker"),))),
    Service("auth", 3.0, 0.5),
    Service("features", 2.0, 0.5, ((Call("feature_store"), Call("embeddings")),)),
    Service("feature_store", 4.0, 0.5),
    Service("embeddings", 3.0, 0.5, ((Call("vector_db"),),)),
    Service("vector_db", 8.0, 0.5),
    Service("candidates", 2.0, 0.5, ((Call("cache"),), (Call("db", 0.3),))),
    Service("cache", 1.0, 0.5),
    Service("db", 12.0, 0.8),
    Service("model", 25.0, 0.3),
    Service("ranker", 5.0, 0.5),
)
TREE = CallTree(SERVICES, "gateway")
NAMES = TREE.names
#: Services left without instrumentation, in this order, by ``uninstrumented_services``: data stores
#: first (often run as managed services with neither server spans nor instrumented clients), then leaves.
UNINSTRUMENTED_ORDER = ("cache", "db", "vector_db", "feature_store", "auth", "ranker", "model")
#: Sampling rates (%) at which the time to name the culprit is measured.
GRID_PCT = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
K_POST = 2000  # sampled traces simulated after the fault
K_BASE = 2000  # sampled traces simulated in the baseline window
#: Per-service alert rules on log-derived signals: p99 of logged call durations after the fault at least
#: 1.5x the p99 before it, or an error rate of at least 1% (the seed's error-rate alert) and at least double.
ALERT_P99_RATIO = 1.5
ALERT_ERROR_PCT = 1.0


class ObservabilityLab(Lab):
    id = "q14"
    headline = ("pattern", "mttr_min")
    refine_param = "requests"
    budget_s = 0.5
    params = (
        Param("rate_rps", 50.0, 0.01, 5000.0, unit="req/s", help="Poisson request rate at the gateway"),
        Param("requests", 10000, 1000, 200000, unit="requests",
              help="simulated requests for latency and overhead; window = requests / rate_rps, fault in the middle"),
        Param("faulty_service", "feature_store", choices=NAMES, help="the service that goes bad"),
        Param("fault_mode", "latency", choices=("latency", "error"),
              help="latency: affected calls take fault_delay_ms longer; error: they fail (errors propagate up)"),
        Param("fault_delay_ms", 50.0, 1.0, 10000.0, unit="ms", help="extra time per affected call (latency mode)"),
        Param("fault_fraction", 1.0, 0.001, 1.0, unit="fraction",
              help="share of calls to the faulty service that are affected (0.25 = one bad replica of four)"),
        Param("background_error_pct", 0.1, 0.0, 10.0, unit="%", help="chance that any call fails on its own (noise)"),
        Param("sampling_rate_pct", 1.0, 0.01, 100.0, unit="%",
              help="head sampling: TraceIdRatioBased ratio x 100 (seed range 1-10%)"),
        Param("uninstrumented_services", 0, 0, len(UNINSTRUMENTED_ORDER), unit="services",
              help="services without spans, taken in order " + ", ".join(UNINSTRUMENTED_ORDER)),
        Param("span_cost_us", 25.0, 0.0, 20000.0, unit="us",
              help="in-request cost of one recorded span (OTel Go/Java: a few us; Python tracers: ~10-50 us)"),
        Param("unsampled_span_cost_us", 1.0, 0.0, 1000.0, unit="us",
              help="cost of a non-recording span plus context propagation on an untraced request"),
        Param("baseline_window_min", 60.0, 1.0, 1440.0, unit="min",
              help="sampled traces before the fault that serve as the baseline"),
        Param("diagnosis_window_min", 10.0, 1.0, 240.0, unit="min",
              help="traces must name the culprit within this time after the fault (else: fall back to logs)"),
        Param("min_traces", 5, 1, 100, unit="traces", help="post-fault sampled traces needed before naming anyone"),
        Param("z_threshold", 4.0, 1.0, 20.0, unit="sigma", help="z-score vs baseline needed to name a service"),
        Param("log_search", "topology", choices=("topology", "alerts_top_down", "alerts_bottom_up", "random"),
              help="logs-only search order: breadth-first from the gateway; alerting services first (from the "
                   "top, or deepest first); or random"),
        Param("examine_min", 20.0, 1.0, 240.0, unit="min",
              help="engineer time to examine one service's logs (no trace id to join on)"),
        Param("trace_review_min", 5.0, 0.5, 120.0, unit="min",
              help="engineer time to read the traces' critical path and confirm the named service"),
        Param("detect_min", 5.0, 0.0, 120.0, unit="min",
              help="fault to alert (same for both arms; e.g. an alert rule with for: 5m)"),
        Param("fix_min", 10.0, 0.0, 480.0, unit="min",
              help="culprit known to service restored (roll back / restart / fail over; same for both arms)"),
    )
    exercises = (
        Exercise("Drop traffic to 1 req/s and sampling to 0.1%. How long after the fault do the traces name "
                 "the culprit, and what happens to the tracing arm's MTTR?",
                 {"rate_rps": 1.0, "sampling_rate_pct": 0.1}, ("pattern", "mttr_min")),
        Exercise("Leave four services uninstrumented (cache, db, vector_db, feature_store): coverage falls to 64% "
                 "and the faulty feature store emits no spans. Which service do the traces blame, and what does "
                 "the detour cost?",
                 {"uninstrumented_services": 4}, ("pattern", "mttr_min")),
        Exercise("Give the logs-only engineer per-service alerts computed from the logs, and let them start with "
                 "the deepest alerting service (symptoms propagate upwards). How much of tracing's advantage is left?",
                 {"log_search": "alerts_bottom_up"}, ("comparison", "mttr_reduction_x")),
    )

    # ------------------------------------------------------------------ model
    def simulate(self, seed: int, p) -> Outcome:
        streams = Streams(seed)
        S = len(NAMES)
        culprit = TREE.index[p["faulty_service"]]
        off = set(UNINSTRUMENTED_ORDER[: p["uninstrumented_services"]])
        visible = np.array([n not in off for n in NAMES])
        lam, n = p["rate_rps"], p["requests"]
        rate = p["sampling_rate_pct"] / 100.0
        rec_s, unrec_s = p["span_cost_us"] * 1e-6, p["unsampled_span_cost_us"] * 1e-6

        # ---------------- traffic window: latency, overhead, and what the logs show
        arrivals = poisson_arrivals(streams["arrivals"], lam, n)
        t_fault = 0.5 * n / lam
        after = arrivals >= t_fault
        own, called, origin = _draw_calls(streams, "traffic", n, p, culprit, after)
        sampled = TraceIdRatioBased(rate).sample(random_trace_ids(streams["trace_ids"], n))
        spans = _spans_per_call(called, visible)
        base = TREE.run(own, called, origin, visible)
        pat = TREE.run(own + np.where(sampled[:, None], rec_s, unrec_s) * spans, called, origin, visible)
        traced = TREE.run(own + rec_s * spans, called, origin, visible)  # as if every request were sampled

        # ---------------- sampled-trace streams for the diagnosis
        post = _trace_stream(streams, "post", K_POST, p, culprit, visible, rec_s, faulty=True)
        prior = _trace_stream(streams, "base", K_BASE, p, culprit, visible, rec_s, faulty=False)
        det = _Detector(post, prior, p)

        # ---------------- logs-only search order (baseline)
        order, alerts = _log_order(p["log_search"], base, after, streams)
        exams_logs = order.index(p["faulty_service"]) + 1
        detect, fix, exam = p["detect_min"], p["fix_min"], p["examine_min"]
        diag_logs = exams_logs * exam
        mttr_logs = detect + diag_logs + fix

        # ---------------- tracing: the engineer at the configured sampling rate
        window_s = p["diagnosis_window_min"] * 60.0
        look_s = detect * 60.0
        eng = det.engineer(lam * rate, look_s, max(window_s, look_s))
        if eng["declared"]:
            wait_min = eng["wait_s"] / 60.0
            named = NAMES[eng["named"]]
            if eng["named"] == culprit:
                exams_tr, extra = 1, 0
            else:
                extra = _detour(named, p["faulty_service"], order)
                exams_tr = extra
            review = p["trace_review_min"]
        else:
            named = None
            wait_min = max(window_s - look_s, 0.0) / 60.0
            review, extra = 0.0, exams_logs
            exams_tr = exams_logs
        diag_tr = wait_min + review + extra * exam
        mttr_tr = detect + diag_tr + fix

        # ---------------- samples / time to name the culprit vs sampling rate
        grid = sorted(set(GRID_PCT) | {p["sampling_rate_pct"]})
        rows = []
        for pct in grid:
            r = det.first_naming(lam * pct / 100.0, window_s)
            rows.append({"sampling_pct": pct, **r})
        sampling = pd.DataFrame(rows)
        sampling["correct"] = sampling["named"] == p["faulty_service"]
        sampling["sufficient"] = sampling["correct"] & sampling["within_window"]
        needed = _needed_rate(sampling, GRID_PCT)
        at1 = sampling[sampling.sampling_pct == 1.0].iloc[0]
        # traffic at which 1% sampling delivers the traces needed within the window with 95% probability
        # (the k-th sampled trace arrives after a Gamma(k) number of mean gaps)
        rps_needed_1pct = (gamma.ppf(0.95, at1.traces_needed_any) / (0.01 * window_s)
                           if at1.named_any == p["faulty_service"] else np.nan)
        here = sampling[sampling.sampling_pct == p["sampling_rate_pct"]].iloc[0]

        # ---------------- latency and overhead (healthy half of the traffic window)
        healthy = ~after
        runs = {"baseline": base, "pattern": pat}
        metrics = {"baseline": {}, "pattern": {}}
        intervals = {"baseline": {}, "pattern": {}, "comparison": {}}
        for arm, run in runs.items():
            ms_h, ms_f = run.latency[healthy] * 1e3, run.latency[after] * 1e3
            for q in (50, 99):
                iv = percentile_ci(ms_h, q)
                metrics[arm][f"p{q}_ms"] = iv.estimate
                intervals[arm][f"p{q}_ms"] = (iv.low, iv.high)
            metrics[arm]["p99_fault_ms"] = float(np.percentile(ms_f, 99))
            metrics[arm]["error_rate_pct"] = float(100.0 * run.request_failed[after].mean())
        d_traced = (traced.latency - base.latency)[healthy] * 1e3
        d_mixed = (pat.latency - base.latency)[healthy] * 1e3
        iv_over = batch_means(d_traced)
        intervals["comparison"]["tracing_overhead_ms"] = (iv_over.low, iv_over.high)

        coverage = 100.0 * np.mean(visible & post.called.any(axis=0))
        metrics["baseline"].update({
            "mttr_min": mttr_logs,
            "diagnosis_min": diag_logs,
            "services_examined": float(exams_logs),
            "trace_coverage_pct": 0.0,
        })
        metrics["pattern"].update({
            "mttr_min": mttr_tr,
            "diagnosis_min": diag_tr,
            "services_examined": float(exams_tr),
            "trace_wait_min": wait_min,
            "culprit_named": float(named == p["faulty_service"]),
            "time_to_name_min": float(here.time_to_name_min),
            "traces_to_name": float(here.traces_needed),
            "sampling_needed_pct": needed,
            "rps_needed_at_1pct": float(rps_needed_1pct),
            "sampled_traces_per_min": lam * rate * 60.0,
            "trace_coverage_pct": float(coverage),
        })
        metrics["comparison"] = {
            "tracing_overhead_ms": float(d_traced.mean()),
            "mean_overhead_ms": float(d_mixed.mean()),
            "p99_overhead_ms": metrics["pattern"]["p99_ms"] - metrics["baseline"]["p99_ms"],
            "p99_overhead_pct": 100.0 * (metrics["pattern"]["p99_ms"] / metrics["baseline"]["p99_ms"] - 1.0),
            "p99_overhead_all_traced_ms": float(np.percentile(traced.latency[healthy], 99) * 1e3
                                                - metrics["baseline"]["p99_ms"]),
            "mttr_reduction_x": mttr_logs / mttr_tr,
            "diagnosis_saved_min": diag_logs - diag_tr,
        }

        mttr_rows = [("baseline", "detection", detect), ("baseline", "log search", diag_logs),
                     ("baseline", "fix", fix),
                     ("pattern", "detection", detect), ("pattern", "waiting for traces", wait_min),
                     ("pattern", "trace review", review), ("pattern", "log search", extra * exam),
                     ("pattern", "fix", fix)]
        series = {
            "sampling": sampling,
            "mttr": pd.DataFrame(mttr_rows, columns=["arm", "phase", "minutes"]),
            "services": det.service_table(eng),
        }
        horizon = n / lam
        notes = [
            f"Traffic window: {n} requests at {lam:g} req/s = {horizon:g} s, fault at {t_fault:g} s "
            f"({p['fault_mode']} in {p['faulty_service']}); p50/p99 cover the healthy half, p99_fault_ms the rest.",
            f"Diagnosis stream: sampled traces from {p['baseline_window_min']:g} min before the fault to "
            f"{max(window_s, look_s) / 60:g} min after it, {lam * rate * 60:.3g} sampled traces/min at "
            f"{p['sampling_rate_pct']:g}% (at most {K_BASE} before and {K_POST} after are simulated).",
            f"Logs only ({p['log_search']}): order {' > '.join(order)}; {exams_logs} services examined x "
            f"{exam:g} min. Alerting on their own logs: {', '.join(s for s in order if alerts[s]) or 'none'}.",
            ("Tracing named " + (f"{named} from {eng['k']} post-fault sampled traces" if named
                                 else "no service within the diagnosis window")
             + f" (true culprit {p['faulty_service']}); trace coverage {coverage:.0f}% of {S} services."),
            "MTTR = detection + diagnosis + fix; detection and fix are the same constants in both arms.",
            f"Overhead: a traced request pays {metrics['comparison']['tracing_overhead_ms']:.3g} ms "
            f"({p['span_cost_us']:g} us per recorded span on its critical path); averaged over all requests "
            f"at {p['sampling_rate_pct']:g}% sampling it is {metrics['comparison']['mean_overhead_ms']:.3g} ms.",
        ]
        notes.append(
            f"Post-fault sampled traces needed to name a service: {here.traces_needed:g} at "
            f"{p['sampling_rate_pct']:g}%, {at1.traces_needed_any:g} at 1%; rps_needed_at_1pct is the traffic at "
            f"which 1% sampling delivers that many within the {p['diagnosis_window_min']:g}-min window with 95% "
            f"probability (undefined when 1% sampling names the wrong service).")
        notes.append("The logs examiner is assumed perfect (the culprit is recognised whatever the fault size), "
                     "while traces must show a statistically clear change: for faults too small to stand out, "
                     "the comparison favours logs.")
        if np.isnan(needed):
            notes.append("sampling_needed_pct is undefined: even 100% sampling does not name the right service "
                         "within the diagnosis window.")
        extras = {"log_order": order, "alerting": [s for s in order if alerts[s]], "named": named,
                  "culprit": p["faulty_service"], "visible": visible.tolist()}
        return Outcome(metrics, series, intervals, notes, extras)

    # ------------------------------------------------------------------ plots
    def plots(self, result):
        return [_plot_mttr(result), _plot_sampling(result), _plot_services(result)]


# ---------------------------------------------------------------------- model helpers
def _draw_calls(streams: Streams, prefix: str, n: int, p: dict, culprit: int, affected_time: np.ndarray):
    """Own work (s), calls made and failing calls for ``n`` requests, with the fault applied where due."""
    S = len(NAMES)
    own = np.empty((n, S))
    for k, name in enumerate(NAMES):
        own[:, k] = Lognormal(TREE.mean_s[k], TREE.cv[k]).sample(streams[f"{prefix}.own.{name}"], n)
    called = TREE.calls(streams[f"{prefix}.calls"].random((n, S)))
    origin = streams[f"{prefix}.errors"].random((n, S)) < p["background_error_pct"] / 100.0
    hit = (streams[f"{prefix}.fault"].random(n) < p["fault_fraction"]) & affected_time
    if p["fault_mode"] == "latency":
        own[:, culprit] += np.where(hit, p["fault_delay_ms"] / 1e3, 0.0)
    else:
        origin[:, culprit] |= hit
    return own, called, origin


def _spans_per_call(called: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Recorded spans per call: its server span plus one client span per instrumented callee."""
    return np.where(visible[None, :] & called, 1 + TREE.client_calls(called, visible), 0)


class _Stream:
    def __init__(self, run, called, gaps):
        self.cp = run.cp_self_seen
        self.origin = run.origin_seen
        self.called = called  # calls that emitted a span (instrumented services only)
        self.arrival = np.cumsum(gaps)  # in units of 1 / (sampled traces per second)


def _trace_stream(streams, prefix, k, p, culprit, visible, rec_s, faulty):
    own, called, origin = _draw_calls(streams, prefix, k, p, culprit, np.full(k, faulty))
    run = TREE.run(own + rec_s * _spans_per_call(called, visible), called, origin, visible)
    return _Stream(run, called & visible[None, :], streams[f"{prefix}.gaps"].exponential(1.0, k))


class _Detector:
    """Names the service whose critical-path self time (or error-origin count) moved most vs the baseline.

    Latency faults: per service, x = exclusive time on the critical path of a sampled trace (0 when off
    the path); with baseline mean m and variance v (floored at (0.05 m)^2) from n_b baseline traces and
    the mean of the first k post-fault traces, z = (mean_k - m) / sqrt(v (1/k + 1/n_b)).
    Error faults: per service, O_k = post-fault traces whose error originates there (as the spans show
    it); with the baseline rate q = (count + 1) / (n_b + 2), z = (O_k - k q) / sqrt(k q (1 - q) + 1),
    the +1 keeping one stray error from naming anyone. A service is named at the first k >= min_traces
    whose largest z reaches z_threshold; fewer than 2 baseline traces means nothing to compare with.
    """

    def __init__(self, post: _Stream, prior: _Stream, p: dict):
        self.post, self.prior, self.p = post, prior, p
        self.latency = p["fault_mode"] == "latency"
        x = post.cp if self.latency else post.origin.astype(float)
        b = prior.cp if self.latency else prior.origin.astype(float)
        self.k = np.arange(1, x.shape[0] + 1)[:, None]
        self.post_cum = np.cumsum(x, axis=0)
        self.base_cum = np.cumsum(b, axis=0)
        self.base_cum2 = np.cumsum(b * b, axis=0)
        self.baseline_s = p["baseline_window_min"] * 60.0
        self._z: dict[int, np.ndarray] = {}

    def n_baseline(self, trace_rate: float) -> int:
        return int(min(np.searchsorted(self.prior.arrival, trace_rate * self.baseline_s, side="right"), K_BASE))

    def z(self, nb: int) -> np.ndarray:
        """z-scores (k, S) of the first k post-fault traces against ``nb`` baseline traces."""
        if nb not in self._z:
            k = self.k
            if self.latency:
                mean = self.base_cum[nb - 1] / nb
                var = (self.base_cum2[nb - 1] - nb * mean**2) / (nb - 1)
                var = np.maximum(var, np.maximum((0.05 * mean) ** 2, 1e-10))
                z = (self.post_cum / k - mean) / np.sqrt(var * (1.0 / k + 1.0 / nb))
            else:
                rate = (self.base_cum[nb - 1] + 1.0) / (nb + 2.0)  # Laplace: no zero rates
                z = (self.post_cum - k * rate) / np.sqrt(k * rate * (1 - rate) + 1.0)
            self._z[nb] = z
        return self._z[nb]

    def _declared(self, nb: int) -> tuple[np.ndarray, np.ndarray]:
        z = self.z(nb)
        top = z.max(axis=1)
        ok = (top >= self.p["z_threshold"]) & (self.k[:, 0] >= self.p["min_traces"])
        return ok, z.argmax(axis=1)

    def first_naming(self, trace_rate: float, window_s: float) -> dict:
        """When sampled traces first name a service at this trace rate, and which one."""
        nb = self.n_baseline(trace_rate)
        empty = {"baseline_traces": nb, "traces_needed": np.nan, "time_to_name_min": np.nan, "named": None,
                 "within_window": False, "traces_needed_any": np.nan, "named_any": None}
        if nb < 2:
            return empty
        ok, arg = self._declared(nb)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return empty
        i = int(idx[0])
        t = self.post.arrival[i] / trace_rate
        named = NAMES[arg[i]]
        return {"baseline_traces": nb, "traces_needed": float(i + 1), "time_to_name_min": t / 60.0,
                "named": named if t <= window_s else None, "within_window": bool(t <= window_s),
                "traces_needed_any": float(i + 1), "named_any": named}

    def engineer(self, trace_rate: float, look_s: float, give_up_s: float) -> dict:
        """The analysis as the engineer sees it: opened at ``look_s``, refreshed until ``give_up_s``."""
        nb = self.n_baseline(trace_rate)
        out = {"declared": False, "nb": nb, "k": 0, "named": None, "wait_s": 0.0}
        if nb < 2:
            return out
        arr = self.post.arrival / trace_rate
        k_look = int(np.searchsorted(arr, look_s, side="right"))
        k_end = int(np.searchsorted(arr, give_up_s, side="right"))
        ok, arg = self._declared(nb)
        lo = min(max(k_look, 1), K_POST) - 1
        hi = min(k_end, K_POST)
        idx = np.flatnonzero(ok[lo:hi])
        if idx.size == 0:
            return out
        i = lo + int(idx[0])
        out.update(declared=True, k=i + 1, named=int(arg[i]), wait_s=max(arr[i] - look_s, 0.0))
        return out

    def service_table(self, eng: dict) -> pd.DataFrame:
        """Per service: baseline vs post-fault mean of the detector's signal, and its z-score when named."""
        nb = max(eng["nb"], 2)
        k = max(eng["k"], self.p["min_traces"], 1)
        scale = 1e3 if self.latency else 100.0
        base = self.base_cum[nb - 1] / nb * scale
        post = self.post_cum[k - 1] / k * scale
        z = self.z(nb)[k - 1] if eng["nb"] >= 2 else np.full(len(NAMES), np.nan)
        unit = "cp_self_ms" if self.latency else "error_origin_pct"
        return pd.DataFrame({"service": NAMES, f"baseline_{unit}": base, f"after_{unit}": post, "z": z})


def _needed_rate(sampling: pd.DataFrame, grid) -> float:
    """Smallest grid rate from which every higher grid rate names the culprit within the window."""
    ok = sampling[sampling.sampling_pct.isin(grid)].sort_values("sampling_pct")
    needed = np.nan
    for pct, good in zip(ok.sampling_pct[::-1], ok.sufficient[::-1]):
        if not good:
            break
        needed = float(pct)
    return needed


def _alerting(run, after: np.ndarray) -> dict[str, bool]:
    """Which services alert on their own logged signals after the fault (the same rules for every service)."""
    out = {}
    for name in NAMES:
        k = TREE.index[name]
        pre, post = run.called[~after, k], run.called[after, k]
        if not pre.any() or not post.any():
            out[name] = False
            continue
        d = run.duration[:, k]
        slow = np.percentile(d[after][post], 99) >= ALERT_P99_RATIO * np.percentile(d[~after][pre], 99)
        f = run.failed[:, k]
        e_pre, e_post = f[~after][pre].mean(), f[after][post].mean()
        failing = 100.0 * e_post >= ALERT_ERROR_PCT and e_post >= 2.0 * e_pre
        out[name] = bool(slow or failing)
    return out


def _log_order(mode: str, run, after: np.ndarray, streams: Streams) -> tuple[list[str], dict[str, bool]]:
    """The order in which the logs-only engineer examines services, and which services alert."""
    bfs = TREE.breadth_first()
    alerts = _alerting(run, after)
    if mode == "topology":
        return bfs, alerts
    if mode == "random":
        perm = streams["search_order"].permutation(len(bfs))
        return [bfs[i] for i in perm], alerts
    firing = [s for s in bfs if alerts[s]]
    if mode == "alerts_bottom_up":  # symptoms propagate upwards: the deepest alerting service first
        firing = sorted(firing, key=lambda s: -TREE.depth(s))  # stable: ties keep breadth-first order
    return firing + [s for s in bfs if not alerts[s]], alerts


def _detour(named: str, culprit: str, order: list[str]) -> int:
    """Services examined after the traces pointed at the wrong one: it, its subtree, then the log order."""
    path = TREE.breadth_first(named)
    path += [s for s in order if s not in path]
    return path.index(culprit) + 1


# ---------------------------------------------------------------------- plots
def _plot_mttr(result):
    from .plotting import figure

    df = result.series["mttr"]
    fig, ax = figure("Time to restore: detection + diagnosis + fix (minutes)", size=(8, 2.8))
    colours = {"detection": "#95a5a6", "log search": "#c0392b", "waiting for traces": "#85c1e9",
               "trace review": "#2471a3", "fix": "#27ae60"}
    arms = ["baseline", "pattern"]
    labels = {"baseline": "logs only", "pattern": "tracing"}
    seen = set()
    for y, arm in enumerate(arms):
        left = 0.0
        for _, row in df[df.arm == arm].iterrows():
            if row.minutes <= 0:
                continue
            ax.barh(y, row.minutes, left=left, color=colours[row.phase],
                    label=row.phase if row.phase not in seen else None)
            seen.add(row.phase)
            left += row.minutes
        ax.text(left, y, f"  {left:.0f} min", va="center", fontsize=9)
    ax.set_yticks(range(len(arms)), [labels[a] for a in arms])
    ax.axvline(15, color="k", ls=":", lw=1, label="15 min target")
    ax.set_xlabel("minutes after the fault")
    ax.set_ylim(-0.6, len(arms) + 0.4)
    ax.legend(fontsize=7, loc="upper right", ncol=6, frameon=False)
    return fig


def _plot_sampling(result):
    from .plotting import ARM_COLOURS, figure

    df = result.series["sampling"]
    fig, ax = figure("Time after the fault until sampled traces name a service")
    good = df[df.named_any == result.extras["culprit"]]
    bad = df[df.named_any.notna() & (df.named_any != result.extras["culprit"])]
    if len(good):
        ax.plot(good.sampling_pct, good.time_to_name_min, "o-", color=ARM_COLOURS["pattern"], label="right service")
    if len(bad):
        ax.plot(bad.sampling_pct, bad.time_to_name_min, "x", color=ARM_COLOURS["baseline"], ms=8,
                label="wrong service")
    p = result.params
    ax.axhline(p["diagnosis_window_min"], color="k", ls=":", lw=1, label="diagnosis window")
    ax.axhline(p["detect_min"], color="0.5", ls="--", lw=1, label="alert fires")
    ax.axvline(p["sampling_rate_pct"], color=ARM_COLOURS["pattern"], lw=0.8, alpha=0.5)
    ax.axvspan(1, 10, color="0.9", zorder=0, label="seed's 1-10%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sampling rate (%)")
    ax.set_ylabel("minutes after fault")
    ax.legend(fontsize=7, loc="upper right")
    return fig


def _plot_services(result):
    from .plotting import figure

    df = result.series["services"]
    cols = [c for c in df.columns if c.startswith(("baseline_", "after_"))]
    fig, ax = figure("What the traces show per service (sampled traces used for the diagnosis)")
    x = np.arange(len(df))
    ax.bar(x - 0.2, df[cols[0]], 0.4, color="0.6", label="baseline window")
    ax.bar(x + 0.2, df[cols[1]], 0.4, color="#2471a3", label="after the fault")
    ax.set_xticks(x, df.service, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("critical-path self time (ms)" if "cp_self" in cols[0] else "error origins (% of traces)")
    culprit = result.extras["culprit"]
    ax.get_xticklabels()[list(df.service).index(culprit)].set_color("#c0392b")
    ax.legend(fontsize=8)
    return fig


LAB = ObservabilityLab()
