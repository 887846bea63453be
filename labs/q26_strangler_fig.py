"""Q26: a strangler-fig migration behind an Envoy-style weighted router (``sim.traffic_shift``).

Each of ``endpoints`` endpoints moves from the legacy system to the new one. Some of the new
endpoints hide a defect: with probability ``regression_prob`` an endpoint fails an extra
``regression_size_pct`` of its requests. Three plans share every random number: a big bang
(100% at once), staged weights (first_stage_pct → 10 → 50 → 100, one ``dwell_s`` each) and
shadow traffic (mirror for one dwell, responses discarded, then 100%). One monitor watches each
endpoint: every ``analysis_interval_s`` it tests the new side's errors against the legacy's last
day (one-sided, Šidák-corrected so a healthy endpoint is rolled back with probability ≤ alpha)
and, when it fires, sets the router weight back to 0 after ``revert_s``. The legacy and new
models are real classifiers; parity is their accuracy gap on the 450 held-out digits.
``regression_size_pct = 0`` is the control.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from sim.metrics import order_statistic_interval
from sim.rng import Streams
from sim.traffic_shift import nested_split, required_samples, sidak_alpha, window_alarms

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .measure import Measurements

MODELS = ("logreg", "mlp", "mlp_int8", "forest")
STAGES = 4  # every plan is watched for four dwells (the length of the 1 → 10 → 50 → 100 plan)
REFERENCE_S = 86_400.0  # the legacy reference: each endpoint's last day of legacy traffic
MAX_CELLS = 4_000_000  # endpoint-windows per run (migrations × endpoints × windows)


def _windows_per_stage(p) -> int:
    return int(round(p.dwell_s / p.analysis_interval_s))


def _whole_windows(p) -> str | None:
    k = p.dwell_s / p.analysis_interval_s
    if k >= 1 and abs(k - round(k)) < 1e-9 and round(k) <= 120:
        return None
    return f"a whole multiple (1 to 120) of analysis_interval_s = {p.analysis_interval_s:g} s"


def _size(p) -> str | None:
    cells = p.migrations * p.endpoints * STAGES * _windows_per_stage(p)
    if cells <= MAX_CELLS:
        return None
    most = MAX_CELLS // (p.endpoints * STAGES * _windows_per_stage(p))
    return f"at most {most} with these endpoints and windows (migrations × endpoints × windows ≤ {MAX_CELLS:,})"


class StranglerFigLab(Lab):
    id = "q26"
    headline = ("pattern", "users_hit_per_regression")
    refine_param = "migrations"
    # parity rests on a trained mlp: another CPU's floating point may flip an image or two (0.22 pp each)
    cpu_tolerance = {**{(a, "metric_parity_pct"): 0.5 for a in ("baseline", "pattern", "shadow")},
                     ("pattern", "accuracy_new_pct"): 0.01, ("shadow", "agreement_pct"): 0.01}
    arms = (Arm("baseline", "Big bang", "every endpoint switches to the new system at 100% at once"),
            Arm("pattern", "Staged traffic", "router weight first_stage_pct → 10 → 50 → 100%, one dwell each"),
            Arm("shadow", "Shadow first", "mirror a copy to the new system for one dwell (answers dropped), then 100%"))
    assumptions = (
        "A regression adds failures on the new side only; healthy endpoints fail at base_error_pct on both sides.",
        "Requests arrive as a Poisson stream split evenly over the endpoints; the router picks per request.",
        "The monitor's reference is the endpoint's last day of legacy traffic (errors drawn at base_error_pct).",
        "A mirrored copy fails exactly as a served request would (no state, no side effects); users never see it.",
        "A migration fails when one endpoint's regression hits more than incident_users users, or is never caught.",
        "Every plan is watched for four dwells; a regression still live at the end has escaped.",
    )
    rules = (Rule("dwell_s", ("dwell_s", "analysis_interval_s"), _whole_windows),
             Rule("migrations", ("migrations", "endpoints", "dwell_s", "analysis_interval_s"), _size))
    parts = {"parity": ("legacy_model", "new_model", "new_input_scale")}
    params = (
        Param("migrations", 800, 50, 20000, unit="migrations", help="simulated migrations per arm (the sample size)"),
        Param("endpoints", 8, 1, 64, unit="endpoints", help="endpoints moved from the legacy to the new system"),
        Param("rate_rps", 200.0, 1.0, 20000.0, unit="req/s", key=True,
              help="total request rate over all endpoints (Poisson)"),
        Param("first_stage_pct", 1.0, 0.1, 100.0, unit="%", key=True,
              help="router weight of the first stage; then 10, 50, 100% (100 = big bang)"),
        Param("dwell_s", 300.0, 10.0, 86400.0, unit="s", key=True, help="pause at each stage (Argo pause duration)"),
        Param("analysis_interval_s", 60.0, 10.0, 3600.0, unit="s", help="how often the monitor tests (Flagger default 60 s)"),
        Param("regression_prob", 0.05, 0.0, 1.0, unit="fraction", help="chance that a new endpoint hides a defect"),
        Param("regression_size_pct", 5.0, 0.0, 100.0, unit="pp", key=True,
              help="extra share of requests a defective endpoint fails (0 = no regression, the control)"),
        Param("base_error_pct", 1.0, 0.01, 20.0, unit="%", help="error rate of the legacy and of healthy new endpoints"),
        Param("alpha", 0.05, 0.001, 0.5, unit="fraction", key=True,
              help="false-rollback budget per healthy endpoint over the whole migration"),
        Param("test", "binomial", choices=("binomial", "z"),
              help="monitor test: exact binomial tail or pooled two-proportion z"),
        Param("min_requests", 100, 1, 100000, unit="requests", help="new-side requests a window needs before a test"),
        Param("revert_s", 10.0, 0.0, 3600.0, unit="s", help="time for the weight-0 route to reach every proxy"),
        Param("mirror_pct", 100.0, 1.0, 100.0, unit="%", help="share of requests mirrored (Envoy runtime_fraction)"),
        Param("incident_users", 50, 1, 1000000, unit="users",
              help="users hit by one regression that make the migration count as failed"),
        Param("legacy_model", "logreg", choices=MODELS, help="the legacy system's model"),
        Param("new_model", "mlp", choices=MODELS, help="the new system's model"),
        Param("new_input_scale", 1.0, 0.1, 2.0, unit="x",
              help="pixel scale the new pipeline feeds its model (1 = same preprocessing; else a skew)"),
    )
    exercises = (
        Exercise("Ten times the traffic (2000 req/s). How long until the staged plan sends a bad endpoint back?",
                 {"rate_rps": 2000.0}, ("pattern", "rollback_time_min"),
                 why="The monitor compares error rates per window of requests; ten times the traffic fills a window "
                 "ten times faster, so the regression is detected and rolled back sooner."),
        Exercise("Switch the monitor to the z-test with 20-request windows and no regression at all. How often "
                 "is a healthy endpoint rolled back, against alpha = 5%?",
                 {"test": "z", "min_requests": 20, "regression_size_pct": 0.0}, ("pattern", "false_rollback_pct"),
                 why="A z-test on 20-request windows is badly approximated by a normal distribution and is repeated "
                 "every window, so chance alone crosses the threshold far more often than the nominal 5%."),
        Exercise("The new pipeline halves the pixel values before the model. What happens to parity?",
                 {"new_input_scale": 0.5}, ("pattern", "metric_parity_pct"),
                 why="The new path sees inputs on a different scale than the model was trained on, so it disagrees "
                 "with the old path on more requests: parity measures exactly that disagreement."),
    )

    def prepare(self, seed: int = 0) -> None:
        from sim.models import get_model

        for name in ("logreg", "mlp"):
            get_model(name, 0)

    # ------------------------------------------------------------------ real models
    def part_parity(self, seed: int, p) -> dict:
        """Accuracy of both real models on the held-out digits, with a paired bootstrap over images."""
        pred_old, pred_new, y = _predictions(p.legacy_model, p.new_model, p.new_input_scale)
        ok_old, ok_new = pred_old == y, pred_new == y
        diff = ok_new.astype(float) - ok_old.astype(float)
        idx = Streams(seed)["bootstrap"].integers(0, len(y), size=(2000, len(y)))
        boot = diff[idx].mean(axis=1)
        return {"old": ok_old, "new": ok_new, "agree": pred_new == pred_old, "diff": diff.mean(),
                "lo": float(np.percentile(boot, 2.5)), "hi": float(np.percentile(boot, 97.5))}

    # ------------------------------------------------------------------ simulation
    def simulate(self, seed: int, p) -> Outcome:
        s = Streams(seed)
        spw, T = _windows_per_stage(p), p.analysis_interval_s
        W, rows = STAGES * spw, p.migrations * p.endpoints
        lam = p.rate_rps / p.endpoints * T
        p0, delta = p.base_error_pct / 100, p.regression_size_pct / 100
        staged = [p.first_stage_pct] + [x for x in (10.0, 50.0) if x > p.first_stage_pct] + [100.0]
        stage_of = np.minimum(np.arange(W) // spw, len(staged) - 1)
        plans = {  # (served weight %, watched share %) per window
            "baseline": (np.full(W, 100.0), np.full(W, 100.0)),
            "pattern": (np.array(staged)[stage_of], np.array(staged)[stage_of]),
            "shadow": (np.where(np.arange(W) < spw, 0.0, 100.0), np.where(np.arange(W) < spw, p.mirror_pct, 100.0)),
        }
        levels = sorted({w for plan in plans.values() for a in plan for w in a if w > 0})
        regressed = (s["defects"].random(rows) < p.regression_prob) & (delta > 0)
        arrivals = s["arrivals"].poisson(lam, size=(rows, W))
        counts = nested_split(s["routing"], arrivals, np.array(levels) / 100)  # rows × W × levels
        block = np.diff(counts, axis=2, prepend=0)
        base_fail = s["errors"].binomial(block, p0)
        hits = np.zeros_like(block)  # only defective endpoints draw regression hits
        hits[regressed] = s["regression"].binomial(block[regressed] - base_fail[regressed], delta)
        cum_err, cum_hits = np.cumsum(base_fail + hits, axis=2), np.cumsum(hits, axis=2)
        ref_n = np.full(rows, round(p.rate_rps / p.endpoints * REFERENCE_S))
        ref_e = s["reference"].binomial(ref_n, p0)
        alpha_w = sidak_alpha(p.alpha, W)

        m = Measurements(tuple(str(a) for a in self.arms))
        parity = self.part("parity", seed, p)
        users = arrivals.reshape(p.migrations, -1).sum(axis=1)
        series = []
        for arm, (served, watched) in plans.items():
            pick = lambda w: np.array([levels.index(x) if x > 0 else -1 for x in w])  # noqa: E731
            si, wi = pick(served), pick(watched)
            take = lambda a, ix: np.where(ix >= 0, a[:, np.arange(W), np.maximum(ix, 0)], 0)  # noqa: E731
            n_w, e_w, h_served = take(counts, wi), take(cum_err, wi), take(cum_hits, si)
            first = window_alarms(e_w, n_w, ref_e, ref_n, alpha_w, p.min_requests, p.test)
            t_detect = np.where(first >= 0, (first + 1) * T, np.nan)
            # users hit: served windows up to detection, then, while the weight-0 route propagates,
            # the revert's share of the next windows at the weight in force when the monitor fired
            w_idx = np.arange(W)[None, :]
            stop = np.where(first >= 0, first, W)[:, None]
            late = np.clip((p.revert_s - (w_idx - stop - 1) * T) / T, 0, 1) * (w_idx > stop)
            held = si[np.minimum(stop[:, 0], W - 1)]
            h_held = np.where(held[:, None] >= 0, cum_hits[np.arange(rows)[:, None], w_idx,
                                                            np.maximum(held, 0)[:, None]], 0)
            hit = h_served * (w_idx <= stop) + s.fresh("revert").binomial(h_held * (w_idx > stop), late)
            user_hits = hit.sum(axis=1)
            _measure_arm(m, arm, p, regressed, first, t_detect, user_hits, users)
            m.value(arm, "metric_parity_pct", 100 * abs(parity["diff"]), _abs_interval(parity))
            ex = int(np.argmax(regressed)) if regressed.any() else 0
            weight = np.where(w_idx[0] > (first[ex] if first[ex] >= 0 else W), 0.0, served)
            edges = np.repeat(np.arange(W + 1) * T / 60, 2)[1:-1]  # a step per window: start and end
            series.append(pd.DataFrame({"time_min": edges, "weight_pct": np.repeat(weight, 2), "arm": arm}))
        k = len(parity["old"])
        m.share("pattern", "accuracy_legacy_pct", int(parity["old"].sum()), k)
        m.share("pattern", "accuracy_new_pct", int(parity["new"].sum()), k)
        m.share("shadow", "agreement_pct", int(parity["agree"].sum()), k)
        need = required_samples(p0, p0 + delta * (1 - p0), alpha_w, 0.8)
        notes = [f"{p.migrations} migrations × {p.endpoints} endpoints at {p.rate_rps / p.endpoints:g} req/s each, "
                 f"watched {W} windows of {T:g} s; staged plan {' → '.join(f'{x:g}' for x in staged)}%.",
                 f"One-sided test at {alpha_w:.2g} per window; about {need:,.0f} new-side requests to catch a "
                 f"{p.regression_size_pct:g} pp regression 80% of the time (first stage: "
                 f"{need / max(p.rate_rps / p.endpoints * p.first_stage_pct / 100, 1e-9) / 60:,.1f} min)."]
        return Outcome(m, {"weights": pd.concat(series, ignore_index=True)}, notes=notes)

    def plots(self, result):
        from .plotting import grouped_bars, lines_by_arm

        fig1 = lines_by_arm(result.series["weights"], "time_min", "weight_pct",
                            "Served weight of the new system, one defective endpoint",
                            "served weight (%)")
        rows = {arm: {k: result.metrics[arm].get(k, np.nan) for k in
                      ("migration_failure_pct", "false_rollback_pct", "escaped_pct")} for arm in self.arm_names}
        fig2, _ = grouped_bars(pd.DataFrame(rows), "Failed migrations, false rollbacks, escaped regressions", "%")
        return [fig1, fig2]


@functools.lru_cache(maxsize=16)
def _predictions(legacy: str, new: str, scale: float):
    """Both real models' labels for the 450 held-out digits; the new pipeline scales pixels by ``scale``."""
    from sim.models import get_model

    old, fresh = get_model(legacy, 0), get_model(new, 0)
    X = old.X_test
    return old.predict(X), fresh.predict(np.clip(X * scale, 0, None).astype(np.float32)), old.y_test


def _abs_interval(parity: dict) -> tuple[float, float]:
    """An interval for |difference| from the bootstrap interval of the difference."""
    lo, hi = 100 * parity["lo"], 100 * parity["hi"]
    if lo <= 0 <= hi:
        return 0.0, max(-lo, hi)
    return min(abs(lo), abs(hi)), max(abs(lo), abs(hi))


def _measure_arm(m: Measurements, arm: str, p, regressed, first, t_detect, user_hits, users) -> None:
    caught = regressed & (first >= 0)
    incident = (regressed & (user_hits > p.incident_users)) | (regressed & (first < 0))
    failed = incident.reshape(p.migrations, p.endpoints).any(axis=1)
    m.share(arm, "migration_failure_pct", int(failed.sum()), p.migrations)
    per_migration = user_hits.reshape(p.migrations, -1).sum(axis=1) / np.maximum(users, 1)
    m.mean(arm, "users_hit_pct", 100 * per_migration)
    m.mean(arm, "users_hit_per_regression", user_hits[regressed], missing="no endpoint regressed in this run")
    none = "no regression was caught at these settings"
    m.share(arm, "detected_pct", int(caught.sum()), int(regressed.sum()), missing="no endpoint regressed")
    m.share(arm, "escaped_pct", int((regressed & (first < 0)).sum()), int(regressed.sum()),
            missing="no endpoint regressed")
    m.share(arm, "false_rollback_pct", int((~regressed & (first >= 0)).sum()), int((~regressed).sum()),
            missing="every endpoint regressed: none was healthy")
    m.share(arm, "migration_progress_pct", int((first < 0).sum()), len(first))
    for key, extra in (("time_to_detect_min", 0.0), ("rollback_time_min", p.revert_s)):
        x = (t_detect[caught] + extra) / 60
        iv = order_statistic_interval(x, 50)
        m.value(arm, key, float(np.median(x)) if x.size else np.nan, (iv.low, iv.high), missing=none)
    m.value(arm, "revert_time_s", p.revert_s)


LAB = StranglerFigLab()
