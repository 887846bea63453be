"""Q11: latency percentiles, dynamic batching and INT8 quantization of a real model, by model size.

The model is real: a PyTorch MLP (hidden width 256, 1024 or 2048) trained on scikit-learn's 8x8
digits, and the same network after dynamic INT8 quantization (``sim.models``). The lab times
nothing itself by default: it reads the committed profiles ``data/profiles/mlp_w<width>.json``
and ``mlp_int8_w<width>.json`` (``sim.profiles``), measured wall times of one call per batch
size, or (``profiles = this_machine``) the same models timed once on this machine. A simulated
server puts Triton's dynamic batcher (``sim.batcher``) in front of the model; each batch takes a
time drawn from the profile at its size, times ``service_scale``. All arms share the Poisson
arrivals and the service-time quantiles (common random numbers). Capacity is the highest offered
rate whose P99 stays within ``slo_ms`` (``sim.inference.capacity_within_slo``).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from sim.batcher import DynamicBatchingConfig, QuantileService, simulate_batching
from sim.inference import (capacity_within_slo, cpu_differs, geometric_rates, load_sweep, saturation_rps, scaled,
                           speedup_table)
from sim.profiles import Profile, cpu_model, load_reference_profile, width_profile_name
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .kit import request_budget
from .measure import Measurements

FP32, INT8 = "mlp", "mlp_int8"
ARMS = ("baseline", "pattern", "int8")
MODELS = {"baseline": FP32, "pattern": FP32, "int8": INT8}
#: what an arm's capacity search reads (the offered rate not among them), and the batcher's settings
CAPACITY = ("requests", "width", "profiles", "service_scale", "slo_ms", "instance_count")
BATCHER = ("max_batch_size", "preferred_batch_size", "max_queue_delay_microseconds")
WIDTHS = (256, 1024, 2048)
PREFERRED_CHOICES = ("none", "4", "8", "16", "32", "4,8", "8,16", "16,32", "4,8,16,32")
SWEEP_POINTS = 10  # offered loads in the load sweep


@functools.lru_cache(maxsize=None)
def profile(name: str, width: int = 256, source: str = "reference") -> Profile:
    """The profile of ``name`` at ``width``: the committed reference, or measured once on this machine."""
    if source == "this_machine":
        from sim.models import profile_here

        return profile_here(name, width)
    return load_reference_profile(width_profile_name(name, width))


@functools.lru_cache(maxsize=512)
def service_dist(name: str, batch_size: int, width: int = 256, source: str = "reference", scale: float = 1.0):
    """Seconds of one call of ``name`` at ``batch_size`` (sim.dist.Empirical), times ``scale``, cached."""
    return scaled(profile(name, width, source).service_time(batch_size), scale)


def _preferred(text: str) -> tuple[int, ...]:
    return () if text == "none" else tuple(int(x) for x in text.split(","))


def _preferred_fits(p) -> str | None:
    pref = _preferred(p.preferred_batch_size)
    if not pref or max(pref) <= p.max_batch_size:
        return None
    fits = [c for c in PREFERRED_CHOICES if c == "none" or max(_preferred(c)) <= p.max_batch_size]
    return f"none or sizes <= max_batch_size ({p.max_batch_size}): one of " + ", ".join(fits)


def _sweep_fits(p) -> str | None:
    if p.sweep_requests <= p.requests:
        return None
    return f"an integer in [200, {p.requests}] requests (at most the request budget, requests)"


class InferenceMetricsLab(Lab):
    id = "q11"
    profiles = ("mlp", "mlp_int8")
    arms = (Arm("baseline", "No batching", "one request per model call, FIFO (max_batch_size 1), FP32 model"),
            Arm("pattern", "Dynamic batching", "Triton's dynamic batcher with the chosen settings, FP32 model"),
            Arm("int8", "Batching + INT8", "the same batcher serving the dynamically quantized INT8 model"),
            Arm("comparison", "Between arms", "ratios: batching over no batching, INT8 over FP32"))
    assumptions = (
        "Service times are the committed measurements (data/profiles/mlp_w<width>.json, mlp_int8_w<width>.json) "
        "or this machine's (profiles); batch sizes between measured ones are interpolated by sim.profiles.",
        "service_scale multiplies every measured call time: the measured shape at another size of model or machine.",
        "The k-th batch of every arm takes the same quantile of its size's measured times (common random numbers).",
        "A model instance is one single-threaded CPU core running one batch at a time; utilization is its "
        "busy share (the seed's GPU utilization).",
        "Capacity is the highest offered rate whose P99 stays within slo_ms (searched on the same arrivals); "
        "saturation throughput is completions per second with an always-full queue.",
        "Throughput counts requests completed within the arrival window, divided by the window.",
        "Accuracy is measured on the same 450 test digits for both models (one digit is 0.22 points).",
    )
    rules = (
        Rule("preferred_batch_size", ("preferred_batch_size", "max_batch_size"), _preferred_fits),
        Rule("sweep_requests", ("sweep_requests", "requests"), _sweep_fits),
    )
    headline = ("comparison", "throughput_gain_x")
    refine_param = "requests"
    budget_s = 0.5
    params = (
        Param("rate_rps", 4000.0, 1.0, 200000.0, unit="req/s", key=True,
              help="offered load: Poisson arrivals per second, all arms"),
        request_budget(10000, 1000, 200000),
        Param("width", 256, choices=WIDTHS, unit="units", key=True,
              help="hidden width of the MLP (64 -> width -> width -> 10): the model's size"),
        Param("max_batch_size", 32, 1, 64, unit="requests", key=True,
              help="largest batch the model takes (Triton max_batch_size; 64 = largest measured)"),
        Param("preferred_batch_size", "none", choices=PREFERRED_CHOICES,
              help="sizes sent as soon as they can be formed (Triton preferred_batch_size)"),
        Param("max_queue_delay_microseconds", 0, 0, 1000000, unit="us", key=True,
              help="longest hold of the oldest request waiting for a fuller batch (Triton default 0)"),
        Param("instance_count", 1, 1, 8, unit="instances", key=True,
              help="model instances, each one core running one batch at a time (all arms)"),
        Param("service_scale", 1.0, 1.0, 2000.0, unit="x", key=True,
              help="multiplies every measured call time (e.g. 200: a 0.25 ms call becomes 50 ms)"),
        Param("slo_ms", 300.0, 1.0, 10000.0, unit="ms",
              help="P99 objective that capacity is read against (the seed's target: 300 ms)"),
        Param("profiles", "reference", choices=("reference", "this_machine"),
              help="call times: the committed reference profiles, or measured once on this machine"),
        Param("sweep_requests", 1500, 200, 50000, unit="requests",
              help="requests per offered-load point of the load sweep plot"),
    )
    exercises = (
        Exercise("Cap batches at 4 requests (max_batch_size = 4). Does the gain in capacity over "
                 "no batching now land in the seed's 3-5x?", {"max_batch_size": 4}, ("comparison", "throughput_gain_x"),
                 why="Capacity with batching grows with the batch size until the per-call fixed cost is amortised; "
                 "capping batches at 4 caps that amortisation, so the gain falls to about what a batch of 4 buys."),
        Exercise("At 1000 req/s, let the batcher hold requests up to 10 ms for fuller batches (the seed's "
                 "'collect 10-50 ms'). What happens to the pattern's median latency, and to its batch size?",
                 {"rate_rps": 1000.0, "max_queue_delay_microseconds": 10000}, ("pattern", "p50_ms"),
                 why="Holding a request for up to the queue delay trades latency for fuller batches: at this rate "
                 "most requests wait most of the delay before their batch runs."),
        Exercise("Drop the offered load to 250 req/s. How large is the unbatched service's P99 compared with its P50 now?",
                 {"rate_rps": 250.0}, ("baseline", "p99_over_p50_x"),
                 why="A lighter load means shorter queues, so the P99 keeps less queueing on top of the service time "
                 "and moves closer to the P50."),
        Exercise("Make the model 2048 wide. How much faster is the INT8 call than the FP32 one at batch 32?",
                 {"width": 2048}, ("comparison", "int8_speedup_x"),
                 why="The int8 kernel saves more when the matrix multiply dominates the call; a wider model puts more "
                 "of the time into the multiply and less into fixed overhead."),
    )

    # The capacity searches read neither the offered rate nor the other arm's settings: sweeps over the rate,
    # or over the batcher's settings for the unbatched arm, reuse them.
    parts = {"baseline_capacity": CAPACITY, "batched_capacity": CAPACITY + BATCHER}

    def part_baseline_capacity(self, seed: int, p) -> dict:
        return _capacities(seed, p, {"baseline": DynamicBatchingConfig(1, (), 0, p.instance_count)})

    def part_batched_capacity(self, seed: int, p) -> dict:
        batching = DynamicBatchingConfig(p.max_batch_size, _preferred(p.preferred_batch_size),
                                         p.max_queue_delay_microseconds, p.instance_count)
        return _capacities(seed, p, {"pattern": batching, "int8": batching})

    # ------------------------------------------------------------------ model
    def configs(self, p) -> dict[str, DynamicBatchingConfig]:
        batching = DynamicBatchingConfig(p.max_batch_size, _preferred(p.preferred_batch_size),
                                         p.max_queue_delay_microseconds, p.instance_count)
        return {"baseline": DynamicBatchingConfig(1, (), 0, p.instance_count), "pattern": batching, "int8": batching}

    def simulate(self, seed: int, p) -> Outcome:
        cfgs = self.configs(p)
        prof = {arm: profile(MODELS[arm], p.width, p.profiles) for arm in ARMS}
        streams = Streams(seed)
        n = p.requests
        unit_arrivals = np.cumsum(streams["arrivals"].exponential(1.0, n))  # rate 1; rate r uses unit_arrivals / r
        uniforms = streams["service"].random(n)
        services = {arm: QuantileService(functools.partial(_dist, MODELS[arm], p.width, p.profiles, p.service_scale),
                                         uniforms) for arm in ARMS}
        arrivals = unit_arrivals / p.rate_rps
        window = float(arrivals[-1])
        m = Measurements((*ARMS, "comparison"))
        saturation = {}
        no_capacity = f"even a nearly idle server misses the P99 objective of {p.slo_ms:g} ms, so it has no capacity"
        caps = {**self.part("baseline_capacity", seed, p), **self.part("batched_capacity", seed, p)}
        for arm in ARMS:
            cfg, svc = cfgs[arm], services[arm]
            run = simulate_batching(arrivals, cfg, svc)
            saturation[arm], cap, util_at_cap = caps[arm]
            m.percentiles(arm, run.latency, (50, 95, 99))
            m.batch_mean(arm, "mean_ms", run.latency * 1e3)
            m.ratio(arm, "p99_over_p50_x", (arm, "p99_ms"), (arm, "p50_ms"))
            m.value(arm, "throughput_rps", run.completed_by(window) / window)
            m.value(arm, "offered_rps", n / window)
            m.value(arm, "utilization_pct", 100.0 * run.utilization(window))
            m.value(arm, "mean_batch_size", run.mean_batch_size())
            m.value(arm, "saturation_rps", saturation[arm])
            m.value(arm, "renewal_capacity_rps", cfg.capacity_rps(svc.mean))
            m.value(arm, "capacity_rps", cap)
            if cap > 0:
                m.value(arm, "utilization_at_capacity_pct", util_at_cap)
            else:
                m.missing(arm, "utilization_at_capacity_pct", no_capacity)
            m.value(arm, "load_pct", 100.0 * (n / window) / saturation[arm])
            m.value(arm, "service_p50_ms", 1e3 * p.service_scale * prof[arm].median(cfg.saturated_batch_size))
            m.value(arm, "accuracy_pct", 100.0 * prof[arm].accuracy)

        ratio = speedup_table(prof["pattern"], prof["int8"])
        c, B = "comparison", p.max_batch_size
        m.ratio(c, "throughput_gain_x", ("pattern", "capacity_rps"), ("baseline", "capacity_rps"),
                missing="the unbatched server has no capacity within the P99 objective (idle P99 over slo_ms)")
        m.ratio(c, "saturation_gain_x", ("pattern", "saturation_rps"), ("baseline", "saturation_rps"))
        m.ratio(c, "p99_reduction_x", ("baseline", "p99_ms"), ("pattern", "p99_ms"))
        m.ratio(c, "batching_p99_x", ("pattern", "p99_ms"), ("baseline", "p99_ms"))
        m.value(c, "int8_speedup_x", prof["pattern"].median(B) / prof["int8"].median(B))
        m.value(c, "int8_speedup_best_x", float(ratio["speedup_x"].max()))
        m.value(c, "int8_speedup_best_batch", float(ratio["speedup_x"].idxmax()))
        m.ratio(c, "int8_capacity_gain_x", ("int8", "capacity_rps"), ("pattern", "capacity_rps"),
                missing="the FP32 batched server has no capacity within the P99 objective")
        m.ratio(c, "int8_p99_speedup_x", ("pattern", "p99_ms"), ("int8", "p99_ms"))
        m.value(c, "accuracy_loss_pct", 100.0 * (prof["pattern"].accuracy - prof["int8"].accuracy))

        rates = geometric_rates(saturation, p.rate_rps, SWEEP_POINTS)
        # the load sweep is for plots only: built when first read (never by sweeps or checks)
        load = lambda: load_sweep(unit_arrivals, rates, {a: (cfgs[a], services[a]) for a in ARMS},  # noqa: E731
                                  saturation, p.sweep_requests)
        here = cpu_model()
        other = sorted({prof[a].provenance.get("cpu", "?") for a in ARMS if cpu_differs(prof[a], here)})
        notes = [f"Simulated window: {window:.4g} s ({n} Poisson requests per arm at {p.rate_rps:g} req/s); "
                 f"service times from {_provenance(p.width, p.profiles)}"
                 + (f", times {p.service_scale:g}" if p.service_scale != 1 else "") + "."]
        if other:
            notes.append(f"The profiles were measured on another CPU ({', '.join(other)}) than this machine's ({here}); "
                         "set profiles = this_machine to see whether a verdict changes here.")
        over = [f"{arm} ({m.metrics[arm]['load_pct']:.0f}%)" for arm in ARMS if m.metrics[arm]["load_pct"] >= 100]
        if over:
            notes.append("Overloaded (offered load over saturation throughput): " + ", ".join(over)
                         + "; their queues grow for the whole window, so their percentiles grow with requests.")
        extras = {"saturation_rps": saturation, "profile_cpu": sorted({prof[a].provenance.get("cpu", "?") for a in ARMS}),
                  "this_cpu": here, "profile_cpu_differs": bool(other)}
        return Outcome(m, {"load": load, "profiles": ratio.reset_index()}, notes=notes, extras=extras)

    # ------------------------------------------------------------------ plots
    def plots(self, result):
        from .plotting import line_chart

        load, rate = result.series["load"], result.params["rate_rps"]
        here = [("x", rate, f"this run ({rate:g} req/s)")]
        sat = [("y", df["saturation_rps"].iloc[0], f"{arm} saturation") for arm, df in load.groupby("arm", sort=False)]
        prof = result.series["profiles"].melt("batch_size", ["fp32_ms", "int8_ms"], var_name="model",
                                               value_name="ms")
        speed = result.series["profiles"].assign(what="INT8 speedup (FP32 / INT8)")
        return [
            line_chart(load, "offered_rps", "throughput_rps", "Throughput vs offered load", "offered load (req/s, log)",
                       "completed req/s (log)", log_x=True, log_y=True, points=True, rules=here + sat),
            line_chart(load, "offered_rps", "p99_ms", "P99 latency vs offered load", "offered load (req/s, log)",
                       "P99 (ms, log)", log_x=True, log_y=True, points=True,
                       rules=here + [("y", 300, "seed target 300 ms")]),
            line_chart(prof, "batch_size", "ms", "Measured time of one predict() call (median) per batch size",
                       "batch size (log)", "median ms per call (log)", color="model", log_x=True, log_y=True,
                       points=True),
            line_chart(speed, "batch_size", "speedup_x", "INT8 speedup per batch size (claimed 2-4x shaded)",
                       "batch size (log)", "FP32 / INT8 (x)", color="what", log_x=True, points=True,
                       rules=[("y", 2, "2x"), ("y", 4, "4x")]),
        ]


# ---------------------------------------------------------------------- helpers
def _capacities(seed: int, p, cfgs: dict) -> dict:
    """Per arm: saturation throughput, capacity within the P99 objective and utilization there, on the run's
    arrivals and service draws (the same streams as ``simulate``, so the same numbers)."""
    streams, n = Streams(seed), p.requests
    unit_arrivals = np.cumsum(streams["arrivals"].exponential(1.0, n))
    uniforms = streams["service"].random(n)
    out = {}
    for arm, cfg in cfgs.items():
        svc = QuantileService(functools.partial(_dist, MODELS[arm], p.width, p.profiles, p.service_scale), uniforms)
        saturation = saturation_rps(cfg, svc, n)
        cap = capacity_within_slo(unit_arrivals, cfg, svc, saturation, p.slo_ms * 1e-3)
        util = math.nan
        if cap > 0:
            at_cap = simulate_batching(unit_arrivals / cap, cfg, svc)
            util = 100.0 * at_cap.utilization(float(unit_arrivals[-1] / cap))
        out[arm] = (saturation, cap, util)
    return out


def _dist(name: str, width: int, source: str, scale: float, batch_size: int):
    return service_dist(name, batch_size, width, source, scale)


@functools.lru_cache(maxsize=8)
def _provenance(width: int, source: str) -> str:
    """Where the profiles were measured, in one clause."""
    def where(pr: Profile) -> str:
        v = pr.provenance
        return f"{v.get('cpu', '?')}, torch {v.get('torch', '?')}, {v.get('date', '?')}"

    if source == "this_machine":
        return f"the {width}-wide mlp and mlp_int8 timed on this machine ({where(profile(FP32, width, source))})"
    return (f"data/profiles/{width_profile_name(FP32, width)}.json ({where(profile(FP32, width))}) and "
            f"{width_profile_name(INT8, width)}.json ({where(profile(INT8, width))})")


LAB = InferenceMetricsLab()
