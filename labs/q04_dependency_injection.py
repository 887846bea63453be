"""Q4: models injected from configuration (``sim.injection``) against a hard-wired model, at fleet scale.

Real pieces (the committed profile ``data/profiles/di_swap.json``, or this machine's): a
dependency-injector container (a Selector over Singletons) builds a scikit-learn and a torch
predictor from configuration and is flipped and flipped back under threaded load, warm-then-
atomic and unload-then-load; each predictor's build time; the sample suite run with torch and
sklearn unimportable, injected vs hard-wired; and the hash router's split over variants
(chi-square). The fleet model extrapolates: ``replicas`` pick up a configuration change within
``config_poll_s``, load a ``model_size_mb`` model at ``load_mb_s`` (assumed) and flip; a
hard-wired model changes only by a rebuild and a rolling redeploy (assumed durations).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from sim import injection
from sim.components import poisson_arrivals
from sim.di_sample import MAX_VARIANTS
from sim.metrics import t_interval
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .kit import arrival_rate, request_budget
from .measure import Measurements

ARMS = ("baseline", "pattern", "unload", "comparison")
SWAPS = 400  # simulated swap events per run (poll phases drawn afresh for each)


def _timeline_fits(p) -> str | None:
    window = p.requests / p.rate_rps
    if p.swap_at_s <= p.rollback_at_s < window:
        return None
    return f"a time in [swap_at_s = {p.swap_at_s:g}, {window:g}) s: after the swap, inside requests / rate_rps"


class DependencyInjectionLab(Lab):
    id = "q04"
    headline = ("pattern", "model_swap_time_s")
    refine_param = "requests"
    arms = (Arm("baseline", "Hard-wired model", "the service builds its model in code: a change is a rebuild and a "
                "rolling redeploy"),
            Arm("pattern", "Injected, warm then atomic", "the container builds and warms the new predictor, then one "
                "assignment switches; the old one stays loaded"),
            Arm("unload", "Injected, unload then load", "the old predictor is dropped first (memory), then the new one "
                "is built; requests in between fail"))
    assumptions = (
        "A replica notices a configuration change after U(0, config_poll_s) (a watched config store or file).",
        "Loading a model takes the measured build time of the small real predictor plus model_size_mb / load_mb_s.",
        "A replica holds floor(memory_budget_mb / model_size_mb) models; a warm swap needs one free slot.",
        "Requests are spread uniformly over replicas; a replica between unload and load fails what it gets.",
        "A hard-wired change is ci_build_s, then a rolling update of max_surge_pct of the replicas at a time, each "
        "pod_start_s plus the model load; readiness gates traffic, so it drops nothing.",
        "Every configured variant gets one real-artifact smoke test; the other tests are the sample suite's.",
    )
    rules = (Rule("rollback_at_s", ("rollback_at_s", "swap_at_s", "requests", "rate_rps"), _timeline_fits),)
    params = (
        request_budget(20000, 2000, 200000),
        arrival_rate(100.0, 1.0, 5000.0),
        Param("replicas", 4, 1, 64, unit="replicas", help="serving replicas"),
        Param("model_size_mb", 500.0, 1.0, 50000.0, unit="MB", key=True, help="size of one model in memory"),
        Param("load_mb_s", 200.0, 1.0, 5000.0, unit="MB/s", help="read and deserialise throughput (assumed)"),
        Param("config_poll_s", 10.0, 0.0, 600.0, unit="s", key=True, help="longest delay before a replica sees a "
              "configuration change (0 = pushed at once)"),
        Param("memory_budget_mb", 4096.0, 256.0, 262144.0, unit="MB", key=True, help="model memory per replica"),
        Param("variants", 3, 1, MAX_VARIANTS, unit="variants", key=True, help="model variants served side by side"),
        Param("control_share_pct", 50.0, 1.0, 100.0, unit="%", help="traffic share of the first (control) variant"),
        Param("ci_build_s", 600.0, 0.0, 7200.0, unit="s", help="test, build and push an image (hard-wired change)"),
        Param("pod_start_s", 20.0, 0.0, 600.0, unit="s", help="pod scheduling and start before the model loads"),
        Param("max_surge_pct", 25.0, 1.0, 100.0, unit="%", help="rolling update: replicas replaced at a time"),
        Param("swap_at_s", 40.0, 0.0, 1e5, unit="s", help="when the configuration changes (timeline)"),
        Param("rollback_at_s", 120.0, 0.0, 1e5, unit="s", help="when the change is reverted (timeline)"),
        Param("profile", "reference", choices=("reference", "live"),
              help="real measurements: the committed profile or this machine now (slow: about a minute)"),
    )
    exercises = (
        Exercise("A 5 GB model read at 200 MB/s, on replicas with 16 GB: how long does a configuration swap take now?",
                 {"model_size_mb": 5000.0, "memory_budget_mb": 16384.0}, ("pattern", "model_swap_time_s"),
                 why="A configuration swap loads the new model before it flips the reference: load time is size ÷ "
                 "read throughput (5 GB ÷ 200 MB/s = 25 s), plus the wait for the next configuration poll."),
        Exercise("Serve 8 variants of a 500 MB model in 4 GB. What happens to swaps and rollbacks?",
                 {"variants": 8}, ("pattern", "rollback_time_s"),
                 why="Eight warm 500 MB variants fill the 4 GB budget, so nothing new can load beside them: a swap "
                 "must evict first, and rolling back to an evicted model pays its load time again."),
        Exercise("Give every one of 12 variants its smoke test. What share of the suite still runs on fakes?",
                 {"variants": 12, "memory_budget_mb": 16384.0}, ("pattern", "mocked_tests_pct"),
                 why="Each variant brings a smoke test that loads the real model, while the tests on fakes stay as "
                 "they are, so the share of the suite that runs on fakes falls as variants are added."),
    )

    def simulate(self, seed: int, p) -> Outcome:
        prof = _profile(p.profile)
        s, m = Streams(seed), Measurements(ARMS)
        slots = int(p.memory_budget_mb // p.model_size_mb)
        served = min(p.variants, slots)
        warm = served + 1 <= slots
        load_s = float(np.median(prof["load_s"]["torch"])) + p.model_size_mb / p.load_mb_s
        redeploy = _redeploy_s(p, load_s)
        for key in ("model_swap_time_s", "rollback_time_s"):
            m.value("baseline", key, redeploy)
        m.value("baseline", "concurrent_variants", 1.0)
        m.value("pattern", "load_time_s", load_s)
        m.value("pattern", "model_slots", float(slots))
        m.value("pattern", "warm_swap_possible", float(warm))
        series = {"split": _split(m, seed, p)}
        _mocked(m, prof, p.variants)
        if slots == 0:
            why = "model_size_mb exceeds memory_budget_mb: no model fits on a replica"
            for arm in ("pattern", "unload"):
                for key in ("model_swap_time_s", "rollback_time_s", "concurrent_variants", "swap_error_pct",
                            "swap_errors"):
                    m.missing(arm, key, why)
            m.missing("comparison", "rollback_speedup_x", why)
            return Outcome(m, series, notes=[why])
        # swap and rollback: config change -> every replica serving, over SWAPS poll-phase draws
        seen = s["poll"].uniform(0, p.config_poll_s, (SWAPS, p.replicas))
        flip, reload = seen.max(axis=1), (seen + load_s).max(axis=1)
        for arm, (swap, back) in {"pattern": (reload, flip if warm else reload), "unload": (reload, reload)}.items():
            m.mean(arm, "model_swap_time_s", swap)
            m.mean(arm, "rollback_time_s", back)
        m.ratio("comparison", "rollback_speedup_x", ("baseline", "rollback_time_s"), ("pattern", "rollback_time_s"))
        # variants side by side: what fits per replica (the pattern keeps one slot free for warm swaps)
        m.value("pattern", "concurrent_variants", float(max(slots - 1, 0)))
        m.value("unload", "concurrent_variants", float(slots))
        m.value("pattern", "memory_per_replica_mb", p.model_size_mb * (served + warm))
        series["timeline"] = _timeline(m, s, p, load_s, warm, redeploy)
        _measured_swaps(m, prof, warm)
        notes = [f"Real pieces from the {p.profile} profile, measured on {prof['provenance']['cpu']} "
                 f"({prof['provenance']['threads']} client threads, {len(prof['swaps']['warm_atomic'])} runs per "
                 "strategy).",
                 f"{p.replicas} replicas with {slots} model slots each serve {served} of {p.variants} variants; warm "
                 f"swaps {'possible' if warm else 'impossible (no free slot): the pattern unloads first'}."]
        return Outcome(m, series, notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        split = bar_chart(result.series["split"], "variant", "share_pct", "Configured vs routed traffic share",
                          "share (%)", color="what")
        tl = result.series.get("timeline")
        if tl is None:
            return [split]
        return [line_chart(tl, "time_s", "new_version_pct", "Share of requests answered by the new version",
                           "time (s)", "new version (%)"),
                line_chart(tl, "time_s", "error_pct", "Requests failing during swap and rollback", "time (s)",
                           "errors (%)"), split]


@functools.lru_cache(maxsize=2)
def _profile(which: str) -> dict:
    return injection.reference_profile() if which == "reference" else injection.live_profile()


def _redeploy_s(p, load_s: float) -> float:
    batch = max(1, math.floor(p.replicas * p.max_surge_pct / 100))
    return p.ci_build_s + math.ceil(p.replicas / batch) * (p.pod_start_s + load_s)


def _timeline(m: Measurements, s: Streams, p, load_s: float, warm: bool, redeploy: float) -> pd.DataFrame:
    """Requests per version and errors on one timeline: swap at swap_at_s, revert at rollback_at_s."""
    arr = poisson_arrivals(s["arrivals"], p.rate_rps, p.requests)
    replica = s["routing"].integers(0, p.replicas, arr.size)
    seen_swap = p.swap_at_s + s["timeline_poll"].uniform(0, p.config_poll_s, p.replicas)
    seen_back = p.rollback_at_s + s["timeline_poll"].uniform(0, p.config_poll_s, p.replicas)
    batch = max(1, math.floor(p.replicas * p.max_surge_pct / 100))
    step = p.pod_start_s + load_s
    deploy = p.swap_at_s + p.ci_build_s + (np.arange(p.replicas) // batch + 1) * step
    undeploy = p.rollback_at_s + p.ci_build_s + (np.arange(p.replicas) // batch + 1) * step
    arms = {
        # (switch to new, switch back, gaps with no model) per replica
        "pattern": (seen_swap + load_s, seen_back if warm else seen_back + load_s, None if warm else (seen_swap, seen_back)),
        "unload": (seen_swap + load_s, seen_back + load_s, (seen_swap, seen_back)),
        "baseline": (deploy, undeploy, None),
    }
    rows = []
    edges = np.arange(0, arr[-1] + 5, 5.0)
    for arm, (on, off, gaps) in arms.items():
        t_on, t_off = on[replica], off[replica]
        new = (arr >= t_on) & (arr < t_off)
        err = np.zeros(arr.size, dtype=bool)
        if gaps is not None:
            for start in gaps:
                err |= (arr >= start[replica]) & (arr < start[replica] + load_s)
        window = (arr >= p.swap_at_s) & (arr < p.rollback_at_s + p.config_poll_s + load_s + redeploy)
        m.share(arm, "swap_error_pct", int(err[window].sum()), int(window.sum()),
                missing="no request arrived around the swap")
        m.value(arm, "requests_new_version", float((new & ~err).sum()))
        m.value(arm, "requests_old_version", float((~new & ~err).sum()))
        idx = np.digitize(arr, edges) - 1
        n = np.bincount(idx, minlength=edges.size)
        rows.append(pd.DataFrame({"time_s": edges, "arm": arm,
                                  "new_version_pct": 100 * np.bincount(idx, new & ~err, edges.size) / np.maximum(n, 1),
                                  "error_pct": 100 * np.bincount(idx, err, edges.size) / np.maximum(n, 1)}))
    return pd.concat(rows, ignore_index=True)


def _measured_swaps(m: Measurements, prof: dict, warm: bool) -> None:
    """The real container flipped under threaded load: errors per run and seconds to serve the new model."""
    for arm, strategy in (("pattern", "warm_atomic" if warm else "unload_load"), ("unload", "unload_load")):
        runs = prof["swaps"][strategy]
        errors = np.array([r["errors"] for r in runs], dtype=float)
        iv = t_interval(errors)
        m.value(arm, "swap_errors", float(errors.mean()), (max(iv.low, 0.0), iv.high) if errors.any() else (0, 0))
        total = sum(r["requests"] for r in runs)
        m.share(arm, "measured_error_pct", float(errors.sum()), total)
        swap_ms = np.array([1e3 * r["swap_s"][0] for r in runs])
        _positive_mean(m, arm, "measured_swap_ms", swap_ms)
        _positive_mean(m, arm, "measured_rollback_ms", np.array([1e3 * r["swap_s"][1] for r in runs]))
        per = [r["per_version"] for r in runs]
        m.value(arm, "measured_versions_served", float(np.mean([len(v) for v in per])))
        for tag, key in (("torch", "measured_requests_new"), ("sklearn", "measured_requests_old")):
            m.value(arm, key, float(sum(n for v in per for name, n in v.items() if name.endswith(tag))))
    for kind in injection.KINDS:
        x = np.asarray(prof["load_s"][kind]) * 1e3
        _positive_mean(m, "pattern", f"build_{kind}_ms", x)
        m.value("pattern", f"size_{kind}_kb", prof["size_bytes"][kind] / 1024)


def _positive_mean(m: Measurements, arm: str, key: str, x) -> None:
    iv = t_interval(x)
    m.value(arm, key, iv.estimate, (max(iv.low, 0.0), iv.high))


def _split(m: Measurements, seed: int, p) -> pd.DataFrame:
    """The real hash router over ``requests`` ids, checked against the configured shares by chi-square."""
    w = _weights(p)
    counts = _route_counts(tuple(np.round(w, 12)), p.requests, seed)
    _, pval = injection.split_test(counts, w)
    m.value("pattern", "split_chi2_p", pval)
    m.value("pattern", "split_max_dev_pp", float(np.max(np.abs(100 * counts / counts.sum() - 100 * w))))
    names = [f"v{k}" for k in range(w.size)]
    return pd.DataFrame({"variant": names * 2, "share_pct": np.r_[100 * w, 100 * counts / counts.sum()],
                         "what": ["configured"] * w.size + ["routed"] * w.size})


@functools.lru_cache(maxsize=32)
def _route_counts(w: tuple, n: int, seed: int) -> np.ndarray:
    router = injection.VariantRouter(w, salt=f"experiment-{seed}")
    return np.bincount([router.route(i) for i in range(n)], minlength=len(w)).astype(float)


def _weights(p) -> np.ndarray:
    if p.variants == 1:
        return np.ones(1)
    rest = (100 - p.control_share_pct) / (p.variants - 1)
    return np.array([p.control_share_pct] + [rest] * (p.variants - 1)) / 100


def _mocked(m: Measurements, prof: dict, variants: int) -> None:
    """Share of the suite (unit tests + one artifact test per variant) that passes with torch and sklearn absent."""
    names = [t for t in prof["suite"]["injected"] if t != "<collection>"]
    keep = [t for t in names if not t.startswith("test_variant_artifact[") or
            int(t[len("test_variant_artifact["):-1]) < variants]
    for arm, style in (("pattern", "injected"), ("baseline", "hardwired")):
        res = prof["suite"][style]
        passed = sum(res.get(t) == "passed" for t in keep)
        m.value(arm, "mocked_tests_pct", 100 * passed / len(keep))
        m.value(arm, "suite_tests", float(len(keep)))


LAB = DependencyInjectionLab()
