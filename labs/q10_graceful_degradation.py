"""Q10: graceful degradation: a fallback chain against "every dependency must answer".

Four dependencies fail and get repaired (``sim.dependencies``: MTBF, MTTR, exponential or
Weibull): the feature store, a large model server, a small model server and the catalog.
The strict baseline needs the feature store, the large model and the catalog on every
request. The pattern tries the large model, then the small model, then this user's cached
answer (if younger than ``max_cache_age_s``), then the catalog's popular items. The models
are real (``sim.models`` on the held-out digits: accuracy measured, latency from the
committed profiles). Part one samples ``requests`` request times over ``horizon_years``
(availability, degraded share, quality per tier); part two replays one large-model outage
at full traffic in SimPy with a time limiter and a bulkhead per model (``sim.bulkhead``).
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import simpy

from sim.bulkhead import Bulkhead, BulkheadConfig, guarded_call
from sim.components import poisson_arrivals
from sim.dependencies import Dependency, Timeline, combine, parallel, series
from sim.dist import Zipf
from sim.fallback import cached_answer_age, first_available, predictions, tier_quality
from sim.metrics import OK, batch_means, wilson
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .measure import Measurements

DEPS = ("features", "large_model", "small_model", "catalog")
DEFAULTS = {"features": (1000.0, 2.0), "large_model": (200.0, 0.5), "small_model": (1000.0, 1.0),
            "catalog": (500.0, 1.0)}  # (MTBF h, MTTR h): assumptions of ours, the seed gives none
TIERS = ("large", "small", "cache", "popular")
FALLBACKS = ("none", "small", "small+cache", "small+cache+popular")
MODELS = ("mlp", "logreg", "mlp_int8", "forest")
HOURS_PER_YEAR = 8766.0


@functools.lru_cache(maxsize=8)
def service_time(name: str):
    from sim.profiles import load_reference_profile

    return load_reference_profile(name).service_time(1)


def _dep_params():
    out = []
    for d in DEPS:
        mtbf, mttr = DEFAULTS[d]
        out += [Param(f"{d}_mtbf_h", mtbf, 1.0, 1e5, unit="h", key=d == "large_model",
                      help=f"mean time between failures of the {d.replace('_', ' ')}"),
                Param(f"{d}_mttr_h", mttr, 0.01, 1000.0, unit="h", key=d == "catalog",
                      help=f"mean time to repair the {d.replace('_', ' ')}")]
    return out


class GracefulDegradationLab(Lab):
    id = "q10"
    headline = ("pattern", "availability_pct")
    refine_param = "requests"
    profiles = ("mlp", "logreg")
    arms = (Arm("baseline", "Strict", "feature store, large model and catalog must all answer"),
            Arm("pattern", "Fallback chain", "large model, then small model, then cached answer, then popular items"))
    assumptions = (
        "Dependencies fail independently; a failed one is wholly down until repaired (no partial failures).",
        "The pattern treats the catalog as optional for model answers (item details omitted), "
        "critical only for popular items; the cache and the chain's logic live in the service itself.",
        "A user's cached answer is the large model's last answer to that user; users send Poisson requests "
        "at rate_rps x their Zipf(zipf_s) share over users, so its age is known from the draw.",
        "A user's interest changes at drift_per_h per hour; a cached answer is right only if it still matches.",
        "Popular items are right when the digit is the training set's most common class (majority-class accuracy).",
        "Answer quality is classification accuracy on the 450 held-out digits (sim.models), relative to the large model.",
        "In part one every fallback finishes within the caller's deadline (part two measures how long it takes).",
    )
    params = (
        Param("requests", 100000, 1000, 400000, unit="requests",
              help="request times sampled over the horizon (availability, degraded share, quality)"),
        Param("horizon_years", 20.0, 1.0, 200.0, unit="years", help="simulated operating time the requests sample"),
        Param("failures", "exponential", choices=("exponential", "weibull", "none"), key=True,
              help="failure and repair time law; none: nothing fails (control)"),
        Param("weibull_shape", 0.7, 0.2, 5.0, help="Weibull shape for up and repair times (1 = exponential)"),
        *_dep_params(),
        Param("fallbacks", "small+cache+popular", choices=FALLBACKS, key=True,
              help="tiers after the large model; none: the pattern arm is strict too (control)"),
        Param("max_cache_age_s", 3600.0, 0.0, 86400.0, unit="s", key=True,
              help="oldest cached answer the pattern serves (0: no cache tier)"),
        Param("rate_rps", 50.0, 1.0, 2000.0, unit="req/s", help="traffic: user revisit rates and the incident replay"),
        Param("users", 100000, 10, 10000000, unit="users", help="distinct users (Zipf activity)"),
        Param("zipf_s", 1.0, 0.0, 2.0, help="Zipf exponent of user activity (assumed)"),
        Param("drift_per_h", 0.5, 0.0, 100.0, unit="1/h", help="rate at which a user's interest changes (assumed)"),
        Param("large_model", "mlp", choices=MODELS, help="the large model (real, digits)"),
        Param("small_model", "logreg", choices=MODELS, help="the fallback model (real, digits)"),
        Param("large_timeout_ms", 40.0, 1.0, 30000.0, unit="ms", key=True,
              help="time limiter on the large-model call (resilience4j default 1000 ms)"),
        Param("small_timeout_ms", 100.0, 1.0, 30000.0, unit="ms", help="time limiter on the small-model call"),
        Param("max_concurrent_calls", 25, 1, 10000, unit="calls",
              help="bulkhead permits per model (resilience4j default 25)"),
        Param("max_wait_duration_ms", 0.0, 0.0, 10000.0, unit="ms",
              help="wait for a bulkhead permit before rejecting (resilience4j default 0)"),
        Param("network_ms", 5.0, 0.0, 500.0, unit="ms", help="round trip of one remote call"),
        Param("outage_mode", "hang", choices=("hang", "error"),
              help="incident replay: the large model hangs (until the timeout) or fails fast"),
        Param("error_ms", 5.0, 0.0, 10000.0, unit="ms", help="time for a failing call in error mode"),
        Param("incident_s", 30.0, 10.0, 600.0, unit="s", help="incident replay window; the outage is its middle half"),
    )
    rules = (Rule("incident_s", ("incident_s", "rate_rps"),
                  lambda p: None if p.rate_rps * p.incident_s <= 40000 else
                  f"at most {40000 / p.rate_rps:g} s so the replay stays within 40000 requests (rate_rps x incident_s)"),)
    parts = {"incident": ("rate_rps", "failures", "fallbacks", "large_model", "small_model", "large_timeout_ms",
                          "small_timeout_ms", "max_concurrent_calls", "max_wait_duration_ms", "network_ms",
                          "outage_mode", "error_ms", "incident_s")}
    exercises = (
        Exercise("Let the catalog take 16 h to repair instead of 1 h. What happens to the fallback chain's "
                 "availability?", {"catalog_mttr_h": 16.0}, ("pattern", "availability_pct"),
                 why="Each tier of the chain fails independently; a long catalog repair only matters while every tier "
                 "below it is also down, which stays rare, so availability barely moves."),
        Exercise("Raise the large-model timeout to 1 s (resilience4j's default). How much later do fallback answers "
                 "arrive?", {"large_timeout_ms": 1000.0}, ("comparison", "fallback_extra_latency_ms"),
                 why="A fallback starts only after the primary call times out, so every fallback answer pays the "
                 "timeout first: raising it from the default to 1 s adds that difference to each degraded answer."),
        Exercise("Turn the cache tier off. How much of the lost function does the chain still keep?",
                 {"max_cache_age_s": 0.0}, ("pattern", "functionality_pct"),
                 why="Without the cache tier, requests that miss the model fall straight to the static default, which "
                 "answers them with less of the original function."),
    )

    def prepare(self, seed: int = 0) -> None:
        for name in MODELS:  # the four models the settings offer, trained and predicted once
            predictions(name)

    def simulate(self, seed: int, p) -> Outcome:
        streams = Streams(seed)
        m = Measurements(("baseline", "pattern", "comparison"))
        a = _availability_part(streams, p)
        large, small = predictions(p.large_model), predictions(p.small_model)
        q = tier_quality(large, small)
        acc_l = q["large"]
        for arm in ("baseline", "pattern"):
            _share(m, arm, "availability_pct", a[arm]["tier"] >= 0)
            if a["failures"]:
                _share(m, arm, "degradation_rate_pct", a[arm]["tier"] >= 1)
            else:
                m.missing(arm, "degradation_rate_pct", "no dependency failed over the horizon: nothing to fall back from")
            m.batch_mean(arm, "answer_quality_pct", 100 * a[arm]["quality"] / acc_l)
            m.value(arm, "closed_form_availability_pct", 100 * a[arm]["closed_form"])
            lost = a["baseline"]["tier"] < 0
            m.batch_mean(arm, "functionality_pct", 100 * a[arm]["quality"][lost] / acc_l,
                         missing="no dependency on the strict path failed in the sampled requests")
        for k, tier in enumerate(TIERS):
            served = a["pattern"]["tier"] == k
            m.share("pattern", f"share_{tier}_pct", served.sum(), served.size)
            if tier == "cache":  # its quality depends on each answer's age: averaged over the answers served
                m.batch_mean("pattern", "accuracy_cache_pct", 100 * a["pattern"]["quality"][served],
                             missing="no request was answered from the cache")
            else:  # a fixed property of the tier, measured on the held-out digits
                m.share("pattern", f"accuracy_{tier}_pct", round(q[tier] * q["n"]), q["n"])
        d = 100.0 * ((large["pred"] == large["y"]).astype(float) - (small["pred"] == small["y"]))
        if np.any(a["pattern"]["tier"] == 1):
            m.mean("comparison", "fallback_accuracy_loss_pct", d)
        else:
            m.missing("comparison", "fallback_accuracy_loss_pct", "no request fell back to the small model")
        inc = self.part("incident", seed, p)
        for key, v in inc["values"].items():
            m.value(*key, v[0], v[1:] if len(v) == 3 else None, missing=inc["why"])
        series = {"availability": a["by_year"], "tiers": a["tiers"], "dependencies": a["deps"],
                  "incident": inc["series"]}
        notes = [f"Part one: {p.requests} request times over {p.horizon_years:g} years; part two: "
                 f"{inc['n']} requests at {p.rate_rps:g} req/s while the large model is down for "
                 f"{p.incident_s / 2:g} s ({p.outage_mode}).",
                 "Quality is accuracy relative to the large model on the held-out digits (measured)."]
        return Outcome(m, series, notes=notes)

    def part_incident(self, seed: int, p) -> dict:
        return _incident(Streams(seed), p)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        t = result.series["tiers"].melt("tier", ["share_of_degraded_pct", "quality_pct"], var_name="measure",
                                        value_name="pct")
        w = result.params["incident_s"]
        return [
            bar_chart(t, "tier", "pct", "Fallback tiers: share of degraded answers and quality (vs large model)", "%",
                      color="measure"),
            line_chart(result.series["incident"], "time_s", "mean_ms", "Incident replay: mean latency (1 s windows)",
                       "time (s)", "mean latency (ms)", spans=[(w / 4, 3 * w / 4)], span_label="large model down"),
            line_chart(result.series["availability"], "year", "availability_pct",
                       "Availability per year of the sampled horizon", "year", "availability (%)", points=True),
        ]


def _share(m: Measurements, arm: str, key: str, hit: np.ndarray) -> None:
    """A share with the wider of Wilson (independent requests) and batch means (outages span requests)."""
    w, b = wilson(hit.sum(), hit.size), batch_means(hit.astype(float))
    lo, hi = min(w.low, b.low if np.isfinite(b.low) else w.low), max(w.high, b.high if np.isfinite(b.high) else w.high)
    m.value(arm, key, 100 * w.estimate, (100 * max(lo, 0.0), 100 * min(hi, 1.0)))


def _availability_part(streams: Streams, p) -> dict:
    horizon = p.horizon_years * HOURS_PER_YEAR
    deps = {d: Dependency(d, p[f"{d}_mtbf_h"], p[f"{d}_mttr_h"], "exponential" if p.failures != "weibull"
                          else "weibull", p.weibull_shape) for d in DEPS}
    tl = {d: (Timeline.always_up(horizon) if p.failures == "none" else dep.timeline(streams[f"dep_{d}"], horizon))
          for d, dep in deps.items()}
    n = p.requests
    t = np.sort(streams["arrivals"].uniform(0.0, horizon, n))
    up = {d: tl[d].up_at(t) for d in DEPS}
    models = combine([tl["features"], tl["large_model"], tl["small_model"]], lambda f, l, s: f & (l | s))
    since_h = t - models.down_since(t)  # hours since no model tier could answer (NaN while one can)
    users = Zipf(p.users, p.zipf_s)
    share = users.weights[users.sample(streams["users"], n)]
    age_s = np.nan_to_num(cached_answer_age(streams["cache"], since_h * 3600.0, p.rate_rps * share))
    hit = ~models.up_at(t) & (age_s <= p.max_cache_age_s) & (p.max_cache_age_s > 0)
    q = tier_quality(predictions(p.large_model), predictions(p.small_model))
    fresh = np.exp(-p.drift_per_h * age_s / 3600.0)  # chance the user's interest has not moved since caching
    quality = np.stack([np.full(n, q["large"]), np.full(n, q["small"]), fresh * q["large"] + (1 - fresh) * q["stale"],
                        np.full(n, q["popular"])])
    strict_ok = up["features"] & up["large_model"] & up["catalog"]
    on = [True] + [t_ in p.fallbacks for t_ in TIERS[1:]] if p.fallbacks != "none" else [True, False, False, False]
    first = up["features"] & up["large_model"] & (up["catalog"] | (p.fallbacks != "none"))
    chain = np.stack([first, up["features"] & up["small_model"], hit, up["catalog"]]) & np.array(on)[:, None]
    tier_p = first_available(chain)
    tier_b = np.where(strict_ok, 0, -1)
    out = {}
    for arm, tier in (("baseline", tier_b), ("pattern", tier_p)):
        out[arm] = {"tier": tier, "quality": np.where(tier >= 0, quality[np.maximum(tier, 0), np.arange(n)], 0.0)}
    a = {d: dep.availability if p.failures != "none" else 1.0 for d, dep in deps.items()}
    out["baseline"]["closed_form"] = series([a["features"], a["large_model"], a["catalog"]])
    models_a = a["features"] * parallel([a["large_model"], a["small_model"]])  # without the cache tier:
    out["pattern"]["closed_form"] = (out["baseline"]["closed_form"] if p.fallbacks == "none" else
                                     parallel([a["catalog"], models_a]) if "popular" in p.fallbacks else models_a)
    out["failures"] = sum(tl[d].failures for d in DEPS)
    year = np.minimum((t / HOURS_PER_YEAR).astype(int), int(np.ceil(p.horizon_years)) - 1)
    out["by_year"] = pd.concat([pd.DataFrame({"year": np.arange(year.max() + 1), "arm": arm, "availability_pct":
                                              100 * np.bincount(year, out[arm]["tier"] >= 0) / np.maximum(
                                                  np.bincount(year), 1)}) for arm in ("baseline", "pattern")])
    degraded = max(int(np.sum(tier_p >= 1)), 1)
    out["tiers"] = pd.DataFrame({"tier": TIERS, "answers": [int(np.sum(tier_p == k)) for k in range(4)],
                                 "share_of_degraded_pct": [100 * np.sum(tier_p == k) / degraded if k else 0.0
                                                           for k in range(4)],
                                 "quality_pct": [100 * (quality[k][tier_p == k].mean() if np.any(tier_p == k) else
                                                        quality[k].mean()) / q["large"] for k in range(4)]})
    out["deps"] = pd.DataFrame({"dependency": DEPS, "mtbf_h": [deps[d].mtbf for d in DEPS],
                                "mttr_h": [deps[d].mttr for d in DEPS], "closed_form_pct": [100 * a[d] for d in DEPS],
                                "simulated_pct": [100 * tl[d].availability() for d in DEPS],
                                "failures": [tl[d].failures for d in DEPS]})
    return out


def _incident(streams: Streams, p) -> dict:
    """SimPy at full traffic: the large model is down for the middle half of ``incident_s``."""
    n = max(int(p.rate_rps * p.incident_s), 20)
    arrivals = poisson_arrivals(streams["incident_arrivals"], p.rate_rps, n)
    svc = {"large": service_time(p.large_model).sample(streams["svc_large"], n),
           "small": service_time(p.small_model).sample(streams["svc_small"], n)}
    net, w = p.network_ms / 1e3, p.incident_s
    down = (p.failures != "none") & (arrivals >= w / 4) & (arrivals < 3 * w / 4)
    cfg = BulkheadConfig(p.max_concurrent_calls, p.max_wait_duration_ms / 1e3)
    res = {}
    for arm in ("baseline", "pattern"):
        env = simpy.Environment()
        heads = {k: Bulkhead(env, cfg, k) for k in ("large", "small")}
        lat, tier = np.full(n, np.nan), np.full(n, -1)

        def request(i, arm=arm, env=env, heads=heads, lat=lat, tier=tier):
            yield env.timeout(net)  # feature store
            hang = np.inf if p.outage_mode == "hang" else p.error_ms / 1e3
            dur = hang if down[i] else net + svc["large"][i]
            out, _ = yield from guarded_call(env, heads["large"], dur, p.large_timeout_ms / 1e3, fails=down[i])
            if out == OK:
                tier[i] = 0
            elif arm == "pattern" and p.fallbacks != "none":
                out, _ = yield from guarded_call(env, heads["small"], net + svc["small"][i], p.small_timeout_ms / 1e3)
                tier[i] = 1 if out == OK else (3 if "popular" in p.fallbacks else -1)  # catalog is up here
            if tier[i] >= 0 and tier[i] < 3:
                yield env.timeout(net)  # catalog details
            lat[i] = env.now - arrivals[i]

        def drive(env=env):
            for i, t in enumerate(arrivals):
                yield env.timeout(t - env.now)
                env.process(request(i))

        env.process(drive())
        env.run()
        res[arm] = {"lat": lat * 1e3, "tier": tier, "rejected": heads["large"].rejected}
    pat = res["pattern"]
    values, why = {}, "the large model never failed in the incident replay (failures = none), so nothing fell back"
    full, fb = batch_means(pat["lat"][pat["tier"] == 0]), batch_means(pat["lat"][pat["tier"] == 1])
    extra = fb.estimate - full.estimate
    values[("comparison", "fallback_extra_latency_ms")] = (
        (extra, fb.low - full.high, fb.high - full.low) if np.isfinite(fb.low) and np.isfinite(full.low) else (extra,))
    for arm, r in res.items():
        values[(arm, "incident_p99_ms")] = (float(np.percentile(r["lat"], 99)),)
        values[(arm, "incident_availability_pct")] = (100 * float(np.mean(r["tier"] >= 0)),)
    values[("pattern", "bulkhead_rejected")] = (float(pat["rejected"]),)
    frame = pd.concat([pd.DataFrame({"time_s": np.floor(arrivals), "arm": arm, "tier": r["tier"], "mean_ms": r["lat"]})
                       for arm, r in res.items()])
    frame = frame[frame["tier"] >= 0].groupby(["arm", "tier", "time_s"], as_index=False)["mean_ms"].mean()
    frame["arm"] = frame["arm"] + ": " + np.asarray(TIERS)[frame["tier"]]
    series = frame[["time_s", "arm", "mean_ms"]]
    return {"values": values, "why": why, "series": series, "n": n}


LAB = GracefulDegradationLab()
