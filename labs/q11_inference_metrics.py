"""Q11 lab: latency percentiles, dynamic batching and INT8 quantization of a real model.

The model is real: a PyTorch MLP (64 -> 256 -> 256 -> 10) trained on the 8x8
digits scikit-learn ships, and the same network after dynamic INT8
quantization of its Linear layers (``sim.models``: ``mlp`` and ``mlp_int8``).
The lab never times anything itself: it reads the committed reference profiles
``data/profiles/mlp.json`` and ``mlp_int8.json`` (``sim.profiles``), which hold
200 measured wall times of one ``predict`` call per batch size (1..64) and each
model's test accuracy, with their provenance (CPU, library versions, threads,
machine load). Runs are therefore the same on every machine; the notes say
where the numbers come from.

A simulated model server puts Triton's dynamic batcher (``sim.batcher``:
``max_batch_size``, ``preferred_batch_size``, ``max_queue_delay_microseconds``,
``instance_count``) in front of the model; each batch it sends takes a time
drawn from the profile at that batch size. Three arms see the same Poisson
arrivals and the same service-time uniforms (common random numbers: the k-th
batch of every arm takes the same quantile of its size's measured times):

``baseline``  no batching (``max_batch_size`` 1): one request per call, FIFO;
``pattern``   the dynamic batcher with the chosen settings, FP32 model;
``int8``      the same batcher serving the INT8 model.

Per arm: P50/P95/P99 with batch-means confidence intervals, throughput
(requests completed within the arrival window / window), utilization (the
seed's "GPU utilization": here the share of time the model instance, one CPU
core, is computing a batch), mean batch size, and the saturation throughput
(completions per second with an always-full queue, on the same random numbers;
the renewal-reward capacity instances x B / E[S(B)] is reported beside it). A
load sweep over the offered rate shows throughput and P99 per arm. The server
is computed with ``sim.batcher.simulate_batching`` (an exact next-event engine,
checked request by request against the SimPy ``DynamicBatcher`` in the tests);
with no batching it is the Lindley recursion.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from sim.batcher import DynamicBatchingConfig, QuantileService, simulate_batching
from sim.metrics import percentile_ci
from sim.profiles import Profile, load_reference_profile
from sim.rng import Streams

from .contract import Exercise, Lab, Outcome, Param, ParamError

FP32, INT8 = "mlp", "mlp_int8"
ARMS = ("baseline", "pattern", "int8")
PREFERRED_CHOICES = ("none", "4", "8", "16", "32", "4,8", "8,16", "16,32", "4,8,16,32")
SWEEP_POINTS = 10  # offered loads in the load sweep
SATURATION_BATCHES = 2000  # the backlog run for saturation throughput sends at least this many batches


@functools.lru_cache(maxsize=None)
def profile(name: str) -> Profile:
    """A committed reference profile (read once per process)."""
    return load_reference_profile(name)


@functools.lru_cache(maxsize=512)
def service_dist(name: str, batch_size: int):
    """The measured seconds of one call of ``name`` at ``batch_size`` (sim.dist.Empirical), cached."""
    return profile(name).service_time(batch_size)


def _preferred(text: str) -> tuple[int, ...]:
    return () if text == "none" else tuple(int(x) for x in text.split(","))


class InferenceMetricsLab(Lab):
    id = "q11"
    profiles = ("mlp", "mlp_int8")
    arms = ("baseline", "pattern", "int8", "comparison")
    headline = ("comparison", "throughput_gain_x")
    refine_param = "requests"
    budget_s = 0.5
    params = (
        Param("rate_rps", 4000.0, 10.0, 200000.0, unit="req/s",
              help="offered load: Poisson arrivals per second, all arms (default: just above what one unbatched instance serves)"),
        Param("requests", 10000, 1000, 200000, unit="requests",
              help="request budget per arm; the simulated window is requests / rate_rps"),
        # Triton dynamic-batching settings (pattern and int8 arms)
        Param("max_batch_size", 32, 1, 64, unit="requests",
              help="largest batch the model takes (Triton max_batch_size; 64 = largest measured)"),
        Param("preferred_batch_size", "none", choices=PREFERRED_CHOICES,
              help="sizes sent as soon as they can be formed (Triton preferred_batch_size; default none)"),
        Param("max_queue_delay_microseconds", 0, 0, 1000000, unit="us",
              help="longest hold of the oldest request waiting for a fuller batch (Triton default 0)"),
        Param("instance_count", 1, 1, 8, unit="instances",
              help="model instances, each one single-threaded core running one batch at a time (all arms)"),
        Param("sweep_requests", 1500, 200, 50000, unit="requests",
              help="requests per offered-load point of the load sweep plot"),
    )
    exercises = (
        Exercise("Cap batches at 4 requests (max_batch_size = 4). Does the gain in saturation throughput over "
                 "no batching now land in the seed's 3-5x?", {"max_batch_size": 4}, ("comparison", "throughput_gain_x")),
        Exercise("At 1000 req/s, let the batcher hold requests up to 10 ms for fuller batches (the seed's "
                 "'collect 10-50 ms'). What happens to the pattern's median latency, and to its batch size?",
                 {"rate_rps": 1000.0, "max_queue_delay_microseconds": 10000}, ("pattern", "p50_ms")),
        Exercise("Drop the offered load to 250 req/s. How large is the unbatched service's P99 compared with its P50 now?",
                 {"rate_rps": 250.0}, ("baseline", "p99_over_p50_x")),
    )

    # ------------------------------------------------------------------ model
    def configs(self, p: dict) -> dict[str, DynamicBatchingConfig]:
        pref = _preferred(p["preferred_batch_size"])
        if pref and max(pref) > p["max_batch_size"]:
            raise ParamError(f"parameter preferred_batch_size: {p['preferred_batch_size']!r} is not allowed; expected "
                             f"none or sizes <= max_batch_size ({p['max_batch_size']}): one of "
                             + ", ".join(c for c in PREFERRED_CHOICES
                                         if c == "none" or max(_preferred(c)) <= p["max_batch_size"]))
        batching = DynamicBatchingConfig(p["max_batch_size"], pref, p["max_queue_delay_microseconds"], p["instance_count"])
        return {"baseline": DynamicBatchingConfig(1, (), 0, p["instance_count"]), "pattern": batching, "int8": batching}

    def simulate(self, seed: int, p) -> Outcome:
        cfgs = self.configs(p)
        if p["sweep_requests"] > p["requests"]:
            raise ParamError(f"parameter sweep_requests: {p['sweep_requests']} is not allowed; expected an integer in "
                             f"[200, {p['requests']}] requests (at most the request budget, requests)")
        names = {"baseline": FP32, "pattern": FP32, "int8": INT8}
        prof = {arm: profile(name) for arm, name in names.items()}
        streams = Streams(seed)
        n = p["requests"]
        unit_arrivals = np.cumsum(streams["arrivals"].exponential(1.0, n))  # rate 1; rate r uses unit_arrivals / r
        uniforms = streams["service"].random(n)
        services = {arm: QuantileService(functools.partial(service_dist, names[arm]), uniforms) for arm in ARMS}

        arrivals = unit_arrivals / p["rate_rps"]
        window = float(arrivals[-1])
        metrics: dict[str, dict[str, float]] = {}
        intervals: dict[str, dict[str, tuple[float, float]]] = {}
        saturation = {}
        for arm in ARMS:
            cfg, svc = cfgs[arm], services[arm]
            run = simulate_batching(arrivals, cfg, svc)
            lat_ms = run.latency * 1e3
            b_sat = cfg.saturated_batch_size
            backlog = b_sat * max(-(-n // b_sat), SATURATION_BATCHES)
            sat_run = simulate_batching(np.zeros(backlog), cfg, svc)
            saturation[arm] = backlog / float(sat_run.batch_end.max())
            p50, p95, p99 = np.percentile(lat_ms, (50, 95, 99))
            metrics[arm] = {
                "p50_ms": float(p50),
                "p95_ms": float(p95),
                "p99_ms": float(p99),
                "mean_ms": float(lat_ms.mean()),
                "p99_over_p50_x": float(p99 / p50),
                "throughput_rps": run.completed_by(window) / window,
                "offered_rps": n / window,
                "utilization_pct": 100.0 * run.utilization(window),
                "mean_batch_size": run.mean_batch_size(),
                "saturation_rps": saturation[arm],
                "capacity_rps": cfg.capacity_rps(svc.mean),
                "load_pct": 100.0 * (n / window) / saturation[arm],
                "service_p50_ms": 1e3 * prof[arm].median(b_sat),
                "accuracy_pct": 100.0 * prof[arm].accuracy,
            }
            intervals[arm] = {f"p{q}_ms": _pair(percentile_ci(lat_ms, q)) for q in (50, 95, 99)}

        B = p["max_batch_size"]
        ratio = _int8_ratios()
        best_b = int(ratio["speedup_x"].idxmax())
        metrics["comparison"] = {
            "throughput_gain_x": saturation["pattern"] / saturation["baseline"],
            "capacity_gain_x": metrics["pattern"]["capacity_rps"] / metrics["baseline"]["capacity_rps"],
            "p99_reduction_x": metrics["baseline"]["p99_ms"] / metrics["pattern"]["p99_ms"],
            "int8_speedup_x": profile(FP32).median(B) / profile(INT8).median(B),
            "int8_speedup_best_x": float(ratio["speedup_x"].max()),
            "int8_speedup_best_batch": float(best_b),
            "int8_saturation_gain_x": saturation["int8"] / saturation["pattern"],
            "int8_p99_speedup_x": metrics["pattern"]["p99_ms"] / metrics["int8"]["p99_ms"],
            "accuracy_loss_pct": 100.0 * (profile(FP32).accuracy - profile(INT8).accuracy),
        }

        load = _load_sweep(p, cfgs, services, unit_arrivals, saturation)
        series = {"load": load, "profiles": ratio.reset_index()}
        notes = _notes(p, n, window, metrics, cfgs)
        return Outcome(metrics, series, intervals, notes, extras={"saturation_rps": saturation})

    # ------------------------------------------------------------------ plots
    def plots(self, result):
        from .plotting import figure, lines_by_arm

        load = result.series["load"]
        rate = result.params["rate_rps"]
        figs = []
        for y, title, ylabel in (("throughput_rps", "Throughput vs offered load (dotted: each arm's saturation)",
                                  "completed req/s (log)"),
                                 ("p99_ms", "P99 latency vs offered load (open markers: overloaded)", "P99 (ms, log)")):
            fig = lines_by_arm(load, "offered_rps", y, title, ylabel, logy=True)
            ax = fig.axes[0]
            ax.set_xscale("log")
            ax.set_xlabel("offered load (req/s, log)")
            colours = {ln.get_label(): ln.get_color() for ln in ax.get_lines()}
            for arm, df in load.groupby("arm", sort=False):
                over = df[df["overloaded"]]
                ax.plot(over["offered_rps"], over[y], ls="none", marker="o", mfc="white", color=colours.get(arm))
                if y == "throughput_rps":
                    ax.axhline(df["saturation_rps"].iloc[0], color=colours.get(arm), ls=":", lw=1)
            ax.axvline(rate, color="0.4", ls="--", lw=1, label=f"this run ({rate:g} req/s)")
            if y == "p99_ms":
                ax.axhline(300, color="0.6", ls="-.", lw=1, label="seed target 300 ms")
            ax.legend(loc="best", fontsize=8)
            figs.append(fig)

        prof = result.series["profiles"]
        fig, ax = figure("Measured time of one predict() call (median) per batch size")
        ax.plot(prof["batch_size"], prof["fp32_ms"], marker="o", label="FP32 (mlp)", color="#2471a3")
        ax.plot(prof["batch_size"], prof["int8_ms"], marker="s", label="INT8 (mlp_int8)", color="#27ae60")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (log2)")
        ax.set_ylabel("median ms per call")
        ax2 = ax.twinx()
        ax2.plot(prof["batch_size"], prof["speedup_x"], ls="--", color="#7d3c98", label="INT8 speedup (FP32 / INT8)")
        ax2.axhspan(2, 4, color="#7d3c98", alpha=0.08, label="claimed 2-4x")
        ax2.set_ylabel("speedup (x)")
        ax2.set_ylim(0, max(4.5, float(prof["speedup_x"].max()) * 1.1))
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
        figs.append(fig)
        return figs


# ---------------------------------------------------------------------- helpers
def _pair(iv) -> tuple[float, float]:
    return (float(iv.low), float(iv.high))


@functools.lru_cache(maxsize=1)
def _int8_ratios() -> pd.DataFrame:
    """Median seconds per call of both models at every measured batch size, and their ratio."""
    fp, q8 = profile(FP32), profile(INT8)
    sizes = [b for b in fp.batch_sizes if b in q8.batch_sizes]
    df = pd.DataFrame({
        "batch_size": sizes,
        "fp32_ms": [1e3 * fp.median(b) for b in sizes],
        "int8_ms": [1e3 * q8.median(b) for b in sizes],
    }).set_index("batch_size")
    df["speedup_x"] = df["fp32_ms"] / df["int8_ms"]
    return df


def _load_sweep(p, cfgs, services, unit_arrivals, saturation) -> pd.DataFrame:
    """Throughput and P99 per arm over a geometric grid of offered loads (same random numbers at every load).

    A point at rate r uses the first ``sweep_requests x max(1, r / lowest saturation)`` requests (at most the
    request budget), so that points far above the unbatched capacity still span many full batches.
    """
    lo = 0.2 * min(saturation.values())
    hi = 1.3 * max(saturation.values())
    rates = np.unique(np.concatenate((np.geomspace(lo, hi, SWEEP_POINTS), [p["rate_rps"]])))
    rows = []
    for r in rates:
        m = int(min(unit_arrivals.size, p["sweep_requests"] * max(1.0, r / min(saturation.values()))))
        a = unit_arrivals[:m] / r
        window = float(a[-1])
        for arm in ARMS:
            run = simulate_batching(a, cfgs[arm], services[arm])
            lat_ms = run.latency * 1e3
            rows.append({"arm": arm, "offered_rps": float(r), "requests": m,
                         "throughput_rps": run.completed_by(window) / window,
                         "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
                         "utilization_pct": 100.0 * run.utilization(window), "mean_batch_size": run.mean_batch_size(),
                         "saturation_rps": saturation[arm], "overloaded": bool(r >= saturation[arm])})
    return pd.DataFrame(rows).sort_values(["arm", "offered_rps"], key=lambda c: c.map(ARMS.index) if c.name == "arm" else c,
                                          kind="stable").reset_index(drop=True)


def _slow_share(pr: Profile, b: int) -> float:
    x = pr.samples[b]
    return 100.0 * float(np.mean(x > 4 * np.median(x)))


def _notes(p, n, window, m, cfgs) -> list[str]:
    fp, q8 = profile(FP32), profile(INT8)
    prov = fp.provenance

    def where(pr: Profile) -> str:
        v = pr.provenance
        load = v.get("loadavg_1m_before")
        return (f"{v.get('cpu', '?')} ({v.get('cpu_count', '?')} cores), torch {v.get('torch', '?')} with "
                f"{v.get('torch_threads', '?')} thread(s), {v.get('repeats', '?')} timed calls per batch size, "
                f"{v.get('date', '?')}" + (f", 1-min load average {load:g} while measuring" if load is not None else ""))

    base, pat, i8, cmp_ = m["baseline"], m["pattern"], m["int8"], m["comparison"]
    notes = [
        f"Simulated window: {window:.4g} s ({n} Poisson requests per arm at {p['rate_rps']:g} req/s); the load sweep "
        f"uses the first {p['sweep_requests']} of the same arrivals at each rate (more above the unbatched "
        "capacity, up to the budget).",
        f"Service times are measured, not modelled: data/profiles/mlp.json ({where(fp)}) and mlp_int8.json "
        f"({where(q8)}), produced by {prov.get('generated_by', 'bench/measure_profiles.py')} for model seed "
        f"{prov.get('model_seed', 0)}. Sizes between measured ones are interpolated by sim.profiles.",
        "Call times at batch 1 (median / mean / P99): " + "; ".join(
            f"{label} {pr.summary()[1]['p50'] * 1e3:.3g} / {pr.summary()[1]['mean'] * 1e3:.3g} / "
            f"{pr.summary()[1]['p99'] * 1e3:.3g} ms" for label, pr in (("FP32", fp), ("INT8", q8)))
        + ". These are wall times of single calls on a shared machine, pauses by other processes included; the "
        "tail sets the simulated latency tails and, through the mean, the saturation throughput.",
        f"Saturation throughput = completions per second with an always-full queue (same random numbers): baseline "
        f"{base['saturation_rps']:.4g}, pattern {pat['saturation_rps']:.4g}, int8 {i8['saturation_rps']:.4g} req/s "
        f"(renewal formula instances x B / mean time of a batch of B: {base['capacity_rps']:.4g}, "
        f"{pat['capacity_rps']:.4g}, {i8['capacity_rps']:.4g}). With batches of {cfgs['pattern'].saturated_batch_size} "
        f"a call costs {pat['service_p50_ms']:.3g} ms (median) against {base['service_p50_ms']:.3g} ms for one request: "
        "the per-batch cost grows far slower than the batch.",
        "Utilization is the seed's 'GPU utilization' (busy / total) measured on a CPU: the share of the window a "
        "model instance spends running a batch. Busy is not the same as efficient: an instance running batches of "
        "one is as busy as one running batches of 32.",
        f"INT8: accuracy {100 * q8.accuracy:.2f}% vs FP32 {100 * fp.accuracy:.2f}% on the same 450 test digits "
        f"(one digit is 0.22 points); accuracy_loss_pct is the difference in percentage points. int8_speedup_x is the "
        f"ratio of median call times at max_batch_size = {p['max_batch_size']}; the best over measured sizes is "
        f"{cmp_['int8_speedup_best_x']:.2f}x at batch {int(cmp_['int8_speedup_best_batch'])} (FP32 / INT8 median per batch "
        "size: " + ", ".join(f"{b}: {x:.2f}x" for b, x in _int8_ratios()["speedup_x"].items()) + "). A likely reason: "
        "dynamic quantization converts each call's activations to INT8 and back at run time, and on matrices this "
        "small that overhead is as large as the saving in the matrix products.",
        "Slow calls (over 4x the median) per batch size, FP32 / INT8: " + ", ".join(
            f"{b}: {_slow_share(fp, b):.0f}% / {_slow_share(q8, b):.0f}%" for b in fp.batch_sizes if b in q8.batch_sizes)
        + ".",
    ]
    for arm in ARMS:
        if m[arm]["load_pct"] >= 100:
            notes.append(f"The {arm} arm is overloaded (offered load {m[arm]['load_pct']:.0f}% of its saturation "
                         "throughput): its queue grows for the whole window, so its latency percentiles grow with the "
                         "window (raise requests and they rise) and its throughput is its saturation throughput.")
    notes.append("Engine: sim.batcher.simulate_batching (exact; equal request by request to the SimPy DynamicBatcher, "
                 "see tests/test_batcher.py); confidence intervals are batch means over 20 consecutive batches of requests.")
    return notes


LAB = InferenceMetricsLab()
