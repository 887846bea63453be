"""The simulator against the real thing: Q11's batcher, simulated and served.

``calibrate("q11", ...)`` starts the real server of :mod:`sim.serving` (the lab's
PyTorch MLP behind Starlette + uvicorn on 127.0.0.1, Triton's batching rule),
drives it with Poisson load from another process, and predicts the same runs
with the lab's simulator (:func:`sim.batcher.simulate_batching`) fed the profile
the server process measured on this machine moments earlier and the very send
times the generator used (common arrivals). Per mode (no batching, dynamic
batching) and load it reports real vs simulated P50/P95/P99 with intervals,
relative errors, the two-sample KS distance and a TOST equivalence verdict.

Loads are fractions of the *unbatched model's* capacity, 1 / mean measured
seconds of one batch-1 call; both modes get the same absolute rates, so the
batching rows show what batching does at the rates no batching can (or cannot)
serve. The batching server's own capacity is larger (``saturated batch / its
mean seconds``) and is reported, not used to set rates.

Two predictions are made for every run:

``model``
    The lab's simulator as it stands: the batcher queue and the measured
    ``predict()`` times, nothing else.
``model+overhead``
    The same, plus what a low-load probe run (before the measured runs, so no
    measured run informs its own prediction) measured around the model call:
    each request's HTTP/Python time outside the batcher (write → enqueued plus
    batcher resumed → response read) is added to its latency, a draw from the
    probe's empirical distribution (a delay, not exclusive work: on a 2-core
    machine the client, the event loop and the worker overlap); and each
    batch's hand-off to and from the worker thread (dispatch → start, end →
    batcher resumed) is added to its service time, since the batcher forms the
    next batch only after it. Raw probe samples are kept in the report. No factor is fitted.

Equivalence (TOST at 5%): a metric is ``equivalent`` when the 90% interval of
log(simulated / real) lies inside the band (±10% P50, ±20% P95 and P99);
``different`` when it lies wholly outside; otherwise ``underpowered``, with the
replications (of ``requests`` each) that would decide it at the current spread.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

REPORT_DIR = Path(__file__).resolve().parent.parent / "data" / "calibration"
LABS = ("q11",)
BANDS = {"p50": 0.10, "p95": 0.20, "p99": 0.20}
QS = {"p50": 50, "p95": 95, "p99": 99}
DEFAULT_LOADS = (0.3, 0.5, 0.7, 0.85)
WIDTH = 2048  # widest measured MLP: its ~1 ms call keeps rates within what a Python HTTP stack can carry
BATCHING = {"max_batch_size": 16, "preferred_batch_size": (), "max_queue_delay_microseconds": 500}
SIM_SEEDS = 10  # service-time draws per real run (same arrivals)
PROBE_LOAD = 0.1


class CalibrationError(Exception):
    """The harness could not run (server failed to start, bad input): one line, exit 2."""


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def this_cpu() -> str:
    from sim.profiles import cpu_model

    return cpu_model()


def last_report(lab_id: str) -> dict | None:
    """The committed calibration report of ``lab_id`` (data/calibration/<id>.json), or None."""
    path = REPORT_DIR / f"{lab_id}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def summary_lines(report: dict) -> list[str]:
    """Committed values only, one line each: when, where, and per row the errors and verdicts."""
    m = report["meta"]
    out = [f"Calibrated {m['date']} on {m['cpu']} (torch {m['versions'].get('torch')}, "
           f"load average {m['loadavg_start'][0] if m.get('loadavg_start') else '?'}): "
           f"real server vs simulator, {m['requests']} requests x {m['reps']} reps per point."]
    for r in report["rows"]:
        e = r["predictions"]["model+overhead"]
        out.append(f"{r['mode']:<11} load {r['load']:.2f}: real P50 {r['real']['p50']['estimate']:.3g} ms, "
                   f"P99 {r['real']['p99']['estimate']:.3g} ms; simulated(+overhead) P50 {e['p50']['estimate']:.3g}, "
                   f"P99 {e['p99']['estimate']:.3g} ms; errors {e['p50']['rel_error']:+.0%} / {e['p99']['rel_error']:+.0%}; "
                   f"{e['p50']['verdict']} / {e['p99']['verdict']}")
    return out


# --------------------------------------------------------------------------- statistics
def _pct(x, q):
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else math.nan


def _interval(per_rep: list[np.ndarray], q: float) -> dict:
    """Estimate (pooled percentile) and 95% interval: t over replications, else batch means."""
    from sim.metrics import percentile_ci, t_interval

    pooled = np.concatenate(per_rep)
    est = _pct(pooled, q)
    if len(per_rep) >= 2:
        iv = t_interval([_pct(x, q) for x in per_rep])
        lo, hi = iv.low, iv.high
    else:
        iv = percentile_ci(per_rep[0], q, n_batches=10)
        lo, hi = iv.low, iv.high
    return {"estimate": est, "low": lo, "high": hi}


def _log_se(per_rep: list[np.ndarray], q: float) -> tuple[float, int]:
    """Standard error of log(percentile) and its degrees of freedom (reps, else 10 batches)."""
    if len(per_rep) >= 2:
        v = np.log([_pct(x, q) for x in per_rep])
        return float(v.std(ddof=1) / math.sqrt(len(v))), len(v) - 1
    x = per_rep[0]
    k = 10
    b = x[: x.size // k * k].reshape(k, -1)
    v = np.log(np.percentile(b, q, axis=1))
    return float(v.std(ddof=1) / math.sqrt(k)), k - 1


def tost(real: list[np.ndarray], sim: list[np.ndarray], q: float, band: float, reps: int) -> dict:
    """TOST on log(sim/real) of the q-th percentile: equivalent / different / underpowered (+ reps to decide)."""
    from scipy.special import stdtrit

    d = math.log(_pct(np.concatenate(sim), q) / _pct(np.concatenate(real), q))
    if len(real) >= 3 and len(real) == len(sim):  # paired by arrivals: the spread of the per-rep log ratios
        v = np.log([_pct(s, q) / _pct(r, q) for s, r in zip(sim, real)])
        se, dof = float(v.std(ddof=1) / math.sqrt(v.size)), v.size - 1
    else:
        (se_r, dof_r), (se_s, dof_s) = _log_se(real, q), _log_se(sim, q)
        se, dof = math.hypot(se_r, se_s), min(dof_r, dof_s)
    t = float(stdtrit(dof, 0.95))
    lo_b, hi_b = math.log(1 - band), math.log(1 + band)
    lo, hi = d - t * se, d + t * se
    if lo_b < lo and hi < hi_b:
        verdict, need = "equivalent", None
    elif hi < lo_b or lo > hi_b:
        verdict, need = "different", None
    else:
        margin = (min(hi_b - d, d - lo_b) if lo_b < d < hi_b else min(abs(d - lo_b), abs(d - hi_b)))
        z = 1.645
        need = int(math.ceil(reps * (se * z / margin) ** 2)) if margin > 0 and se > 0 else None
        verdict = "underpowered"
    return {"log_ratio": d, "ci90": [math.expm1(lo), math.expm1(hi)], "band": band, "verdict": verdict,
            "reps_to_decide": need}


def _quantile_summary(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    qs = (1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9)
    return {"n": int(x.size), "mean_ms": round(float(x.mean()), 4) if x.size else None,
            "max_ms": round(float(x.max()), 4) if x.size else None,
            "quantiles_ms": {str(q): round(float(np.percentile(x, q)), 4) for q in qs} if x.size else {}}


# --------------------------------------------------------------------------- simulation
def _profile_service(profile, uniforms):
    from sim.batcher import QuantileService

    return QuantileService(profile.service_time, uniforms)


def simulate_run(arrivals, config, profile, seed: int, overhead=None) -> np.ndarray:
    """Simulated latencies (s) of one real run's arrivals; ``overhead`` = (per-request s, per-batch s) samples."""
    from sim.analytic import lindley
    from sim.batcher import simulate_batching

    rng = np.random.default_rng(seed)
    a = np.asarray(arrivals, dtype=float)
    svc = _profile_service(profile, rng.random(a.size))
    if overhead is None:
        return simulate_batching(a, config, svc).latency
    per_req, per_batch = overhead
    o = rng.choice(per_req, a.size)
    h = rng.choice(per_batch, a.size)
    # the worker is held for its hand-offs too (the batcher forms the next batch only once it has resumed);
    # the HTTP/event-loop time around each request is a delay of its own, not exclusive work
    run = simulate_batching(a, config, lambda b, k: svc(b, k) + h[k % h.size])
    lat = run.latency + o
    return lat


# --------------------------------------------------------------------------- the harness
def _configs():
    from sim.batcher import DynamicBatchingConfig

    return {"no_batching": DynamicBatchingConfig(1, (), 0),
            "batching": DynamicBatchingConfig(BATCHING["max_batch_size"], BATCHING["preferred_batch_size"],
                                              BATCHING["max_queue_delay_microseconds"])}


def _measure_mode(mode, config, loads, reps, requests, seed, width, port, log):
    from sim.profiles import Profile
    from sim.serving import ServerSpec, ServerStartError, poisson_arrivals, request_bodies, run_load, serve

    out = {"runs": {}, "probe": None}
    try:
        ctx = serve(ServerSpec(width=width, seed=0, config=config, port=port))
        server = ctx.__enter__()
    except ServerStartError as e:
        raise CalibrationError(str(e)) from None
    try:
        profile = Profile.from_dict(server.profile)
        cap = 1.0 / float(profile.samples[1].mean())
        bodies = request_bodies(server.X)
        log(f"{mode}: server up in {server.started_s:.1f} s on 127.0.0.1:{server.port}; "
            f"batch-1 call {1e3 / cap:.3f} ms mean -> capacity {cap:.0f} req/s")
        out.update(profile=profile, capacity_rps=cap, server_start_s=server.started_s)
        if mode == "no_batching":
            n = min(300, max(50, requests // 2))
            la = _loadavg()
            res = run_load(server.port, poisson_arrivals(PROBE_LOAD * cap, n, seed + 99), bodies,
                           wall_s=max(10.0, 3 * n / (PROBE_LOAD * cap) + 5))
            out["probe"] = (res, la, _loadavg())
        for rep in range(reps):
            for i, load in enumerate(loads):
                rate = load * cap
                la = _loadavg()
                res = run_load(server.port, poisson_arrivals(rate, requests, seed + 1000 * rep + i), bodies,
                               wall_s=max(10.0, 3 * requests / rate + 5))
                out["runs"][(load, rep)] = (res, la, _loadavg())
                log(f"{mode} load {load:g} rep {rep}: {res.completed}/{requests} in {res.wall_s:.1f} s, "
                    f"P50 {_pct(res.latency, 50) * 1e3:.2f} ms, load average {la[0] if la else '?'}")
    except BaseException as e:
        ctx.__exit__(type(e), e, e.__traceback__)
        raise
    ctx.__exit__(None, None, None)
    return out


def _overhead_samples(res):
    """Per request: (write -> enqueued) + (batcher resumed -> response read); per batch: the worker hand-offs."""
    ok = res.ok
    t = res.server_t[ok]
    per_req = (t[:, 1] - res.sent[ok]) + (res.done[ok] - t[:, 5])
    first = np.unique(t[:, 2], return_index=True)[1]  # one row per batch (dispatch time)
    per_batch = (t[first, 3] - t[first, 2]) + (t[first, 5] - t[first, 4])
    return per_req, per_batch


def calibrate(lab_id: str = "q11", loads=DEFAULT_LOADS, reps: int = 2, requests: int = 1500, seed: int = 0,
              width: int = WIDTH, port: int = 0, log=lambda s: None,
              modes=("no_batching", "batching")) -> dict:
    """Measure the real server and predict it; the report as a JSON-ready dict."""
    if lab_id not in LABS:
        raise CalibrationError(f"no calibration for {lab_id!r}; calibrated labs: {', '.join(LABS)}")
    loads = tuple(float(x) for x in loads)
    if not loads or any(not 0 < x < 1.5 for x in loads):
        raise CalibrationError("--loads must be fractions of capacity in (0, 1.5), e.g. 0.3,0.5,0.7")
    if not 1 <= reps <= 50 or not 50 <= requests <= 100_000:
        raise CalibrationError("--reps must be in [1, 50] and --requests in [50, 100000]")
    from scipy.stats import ks_2samp

    from sim.profiles import cpu_model

    t_start = time.perf_counter()
    la_start = _loadavg()
    cfgs = {m: c for m, c in _configs().items() if m in modes}
    if "no_batching" not in cfgs:
        raise CalibrationError("modes must include no_batching (its probe and capacity set every load)")
    measured = {m: _measure_mode(m, c, loads, reps, requests, seed, width, port, log) for m, c in cfgs.items()}
    probe, p_la0, p_la1 = measured["no_batching"]["probe"]
    per_req, per_batch = _overhead_samples(probe)
    overhead = (per_req, per_batch)
    rows = []
    for mode, cfg in cfgs.items():
        mm = measured[mode]
        prof = mm["profile"]
        for load in loads:
            real, sims = [], {"model": [], "model+overhead": []}
            diag = {"batch_real": [], "svc_ratio": [], "inbound_ms": [], "outbound_ms": [], "handoff_ms": [],
                    "send_late_ms": [], "completed": 0, "abandoned": 0, "loadavg": []}
            for rep in range(reps):
                res, la0, la1 = mm["runs"][(load, rep)]
                ok = res.ok
                real.append(res.latency[ok] * 1e3)
                diag["completed"] += res.completed
                diag["abandoned"] += int(np.sum(np.isfinite(res.scheduled) & ~ok)) + int(np.sum(~np.isfinite(res.scheduled)))
                diag["loadavg"].append([la0[0] if la0 else None, la1[0] if la1 else None])
                sent = res.sent[np.isfinite(res.sent)]
                a = np.sort(sent) - sent.min()
                for name, ovh in (("model", None), ("model+overhead", overhead)):
                    lat = np.concatenate([simulate_run(a, cfg, prof, seed + 7919 * k + rep, ovh)
                                          for k in range(SIM_SEEDS)])
                    sims[name].append(lat * 1e3)
                t = res.server_t[ok]
                first = np.unique(t[:, 2], return_index=True)[1]
                sizes = res.batch[ok][first]
                svc = t[first, 4] - t[first, 3]
                diag["svc_ratio"].extend((svc / np.array([prof.median(int(b)) for b in sizes])).tolist())
                diag["batch_real"].extend(sizes.tolist())
                diag["inbound_ms"].extend(((t[:, 1] - res.sent[ok]) * 1e3).tolist())
                diag["outbound_ms"].extend(((res.done[ok] - t[:, 5]) * 1e3).tolist())
                diag["handoff_ms"].extend((((t[first, 3] - t[first, 2]) + (t[first, 5] - t[first, 4])) * 1e3).tolist())
                diag["send_late_ms"].extend(((res.sent - res.scheduled)[np.isfinite(res.sent)] * 1e3).tolist())
            realp = np.concatenate(real)
            row = {"mode": mode, "load": load, "rate_rps": round(load * measured["no_batching"]["capacity_rps"], 3),
                   "real": {k: _interval(real, q) for k, q in QS.items()},
                   "real_latency_summary": _quantile_summary(realp),
                   "predictions": {}, "diagnostics": {
                       "completed": diag["completed"], "abandoned": diag["abandoned"],
                       "loadavg_1m_per_rep": diag["loadavg"],
                       "mean_batch_real": float(np.mean(diag["batch_real"])),
                       "service_in_server_over_profile_median": float(np.median(diag["svc_ratio"])),
                       "inbound_ms_p50": _pct(diag["inbound_ms"], 50), "outbound_ms_p50": _pct(diag["outbound_ms"], 50),
                       "handoff_ms_p50": _pct(diag["handoff_ms"], 50),
                       "send_late_ms_p50": _pct(diag["send_late_ms"], 50),
                       "send_late_ms_p99": _pct(diag["send_late_ms"], 99)}}
            for name, sim in sims.items():
                simp = np.concatenate(sim)
                pred = {"ks_distance": float(ks_2samp(realp, simp).statistic),
                        "latency_summary": _quantile_summary(simp)}
                for k, q in QS.items():
                    iv = _interval(sim, q)
                    iv["rel_error"] = iv["estimate"] / row["real"][k]["estimate"] - 1
                    iv.update(tost(real, sim, q, BANDS[k], reps))
                    pred[k] = iv
                row["predictions"][name] = pred
            rows.append(row)
    from importlib.metadata import version

    nb, bt = measured["no_batching"], measured.get("batching", measured["no_batching"])
    report = {
        "lab": lab_id,
        "meta": {"date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                 "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                 "versions": {"python": platform.python_version(), "torch": version("torch"),
                              "numpy": np.__version__, "sklearn": version("scikit-learn"),
                              "uvicorn": version("uvicorn"), "starlette": version("starlette")},
                 "loadavg_start": la_start, "loadavg_end": _loadavg(),
                 "note": "2 shared cores under other jobs: every measurement carries the 1-minute load average.",
                 "loads": list(loads), "reps": reps, "requests": requests, "seed": seed, "width": width,
                 "elapsed_s": round(time.perf_counter() - t_start, 1)},
        "method": {
            "capacity": "1 / mean batch-1 predict() seconds of the profile measured in the no-batching server "
                        "process; both modes get the same absolute rates (load x that capacity)",
            "batching": {**BATCHING, "preferred_batch_size": list(BATCHING["preferred_batch_size"]),
                         "capacity_rps_at_max_batch": BATCHING["max_batch_size"] / float(
                             bt["profile"].service_time(BATCHING["max_batch_size"]).samples.mean())},
            "bands": BANDS, "sim_draws_per_run": SIM_SEEDS,
            "predictions": {"model": "lab simulator, measured predict() times only",
                            "model+overhead": "plus the probe-measured HTTP/event-loop time per request "
                                              "(an added delay) and the worker hand-off per batch (added to service)"},
            "intervals": "95%: t over replications (reps >= 2), else batch means (10 batches)",
            "tost": "90% interval of log(sim/real) inside +-band: equivalent; wholly outside: different; "
                    "else underpowered (paired over reps when reps >= 3)"},
        "profiles": {m: _profile_brief(measured[m]["profile"]) for m in cfgs},
        "capacity_rps": nb["capacity_rps"],
        "probe": {"load": PROBE_LOAD, "requests": int(probe.completed), "loadavg_1m": [p_la0, p_la1],
                  "per_request_overhead_us": [round(float(x) * 1e6, 1) for x in per_req],
                  "per_batch_handoff_us": [round(float(x) * 1e6, 1) for x in per_batch],
                  "per_request_overhead_ms_p50": _pct(per_req * 1e3, 50),
                  "per_request_overhead_ms_p99": _pct(per_req * 1e3, 99),
                  "per_batch_handoff_ms_p50": _pct(per_batch * 1e3, 50)},
        "rows": rows,
    }
    report["chart"] = chart_spec(report)
    return _clean(report)


def _web_versions():
    import starlette
    import uvicorn

    return {"uvicorn": uvicorn.__version__, "starlette": starlette.__version__}


def _profile_brief(p) -> dict:
    return {"provenance": p.provenance,
            "mean_us": {str(b): round(float(p.samples[b].mean()) * 1e6, 1) for b in p.batch_sizes},
            "p50_us": {str(b): round(p.median(b) * 1e6, 1) for b in p.batch_sizes}}


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return round(f, 6) if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --------------------------------------------------------------------------- outputs
def table_rows(report: dict) -> list[list]:
    rows = []
    for r in report["rows"]:
        for name, p in r["predictions"].items():
            rows.append([r["load"], r["mode"], name, r["real"]["p50"]["estimate"], r["real"]["p99"]["estimate"],
                         p["p50"]["estimate"], p["p99"]["estimate"], f"{p['p50']['rel_error']:+.0%}",
                         f"{p['p99']['rel_error']:+.0%}", round(p["ks_distance"], 3),
                         f"{p['p50']['verdict']}/{p['p99']['verdict']}"])
    return rows


TABLE_HEADER = ["load", "mode", "prediction", "real_p50_ms", "real_p99_ms", "sim_p50_ms", "sim_p99_ms",
                "err_p50", "err_p99", "ks", "tost p50/p99"]


def chart_spec(report: dict) -> dict:
    """Altair (Vega-Lite) spec: real percentiles with 95% intervals over the simulated curves, per mode."""
    import altair as alt
    import pandas as pd

    pts, lines = [], []
    for r in report["rows"]:
        for k in ("p50", "p99"):
            iv = r["real"][k]
            pts.append({"mode": r["mode"], "load": r["load"], "metric": k, "ms": iv["estimate"],
                        "low": iv["low"] if iv["low"] is not None else iv["estimate"],
                        "high": iv["high"] if iv["high"] is not None else iv["estimate"]})
            for name, p in r["predictions"].items():
                lines.append({"mode": r["mode"], "load": r["load"], "metric": k, "ms": p[k]["estimate"],
                              "prediction": name})
    df = pd.concat([pd.DataFrame(pts).assign(kind="real"), pd.DataFrame(lines).assign(kind="sim")],
                   ignore_index=True)
    x = alt.X("load:Q", title="offered load (fraction of unbatched capacity)")
    y = alt.Y("ms:Q", title="latency (ms, log)", scale=alt.Scale(type="log"))
    base = alt.Chart()
    curve = base.mark_line().encode(x, y, color="prediction:N", strokeDash="metric:N").transform_filter(
        alt.datum.kind == "sim")
    dots = base.mark_point(filled=True, color="black").encode(x, y, shape="metric:N").transform_filter(
        alt.datum.kind == "real")
    bars = base.mark_rule(color="black").encode(x, alt.Y("low:Q", scale=alt.Scale(type="log")),
                                                y2="high:Q").transform_filter(alt.datum.kind == "real")
    chart = alt.layer(curve, bars, dots, data=df).facet(column="mode:N").properties(
        title="Q11: real server (points, 95% intervals) vs simulator (lines)")
    return chart.to_dict()


def write_report(report: dict, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p
