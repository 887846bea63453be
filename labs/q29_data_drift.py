"""Q29: detect data drift with PSI and KS (Evidently's definitions, ``sim.drift``) and decide when to retrain.

scikit-learn's handwritten digits arrive week by week; a logistic regression classifies them.
Covariate drift makes a band of pixels gain ink (PSI and KS see it); concept drift swaps the
meaning of two digit pairs with a growing probability while the pixels stay put (they cannot).
Three policies serve the same weeks on common random numbers: never retrain, retrain every
``schedule_weeks``, and retrain when any feature's PSI against the serving model's training
data reaches ``psi_threshold``. A retrain fits a real model on the last ``window_weeks`` of
labelled rows (drawn from images disjoint from the scored ones); each fit's weekly correct
counts are kept in the disk cache. ``drift_kind = none`` is the control.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

import sim.drift as D
from sim.cache import DiskCache
from sim.metrics import wilson
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .measure import Measurements

DATA = ("weeks", "rows_per_week", "drift_kind", "drift_start_week", "shift_per_week", "scale_per_week",
        "drifted_features", "swap_per_week", "window_weeks")
CACHE = DiskCache("q29_drift", code=[__file__, D])
ARMS = ("baseline", "scheduled", "pattern")


class _Stream:
    """One drifting stream: its weeks, PSI of every (model, week) pair, and fitted models' scores (lazy)."""

    def __init__(self, seed: int, p):
        self.key = {"seed": seed, **dict(p)}
        self.cfg = D.DriftConfig(**dict(p))
        self.data = D.make_stream(self.cfg, Streams(seed).seed_sequence("stream"))
        W, n = p.weeks, p.rows_per_week
        label = {w: D.value_counts(x) for w, (x, _) in self.data["label"].items()}
        self.score_counts = {w: D.value_counts(x) for w, (x, _) in self.data["score"].items()}
        win = range(-p.window_weeks + 1, 1)
        self.train_counts = {}
        for s in range(W):
            self.train_counts[s] = sum(label[w + s] for w in win)
        # psi[s, t]: max over features of PSI(week t's inputs | training inputs of the model fitted at s)
        self.psi = np.full((W, W + 1), np.nan)
        self.psi_feature = np.zeros((W, W + 1), dtype=int)
        for s in range(W):
            for t in range(s + 1, W + 1):
                v = D.psi_from_counts(self.train_counts[s], self.score_counts[t])
                self.psi[s, t], self.psi_feature[s, t] = v.max(), int(v.argmax())
        self.n = n
        self._correct: dict[int, np.ndarray] = {}
        ks = CACHE.get_json("ks", self.key)
        if ks is None:
            X0 = D.training_set(self.cfg, self.data, 0)[0]
            ks = [list(D.ks_drifted_features(X0, self.data["score"][t][0])) for t in range(W + 1)]
            CACHE.put_json("ks", self.key, ks)
        self.ks_min_p = np.array([k[0] for k in ks])
        self.ks_drifted = np.array([k[1] for k in ks])

    def correct(self, s: int) -> np.ndarray:
        """Correct answers per scored week 0..weeks of the model fitted at the end of week s."""
        if s not in self._correct:
            key = {**self.key, "trained_week": s}
            got = CACHE.get_array("correct", key)
            if got is None:
                model = D.fit_model(*D.training_set(self.cfg, self.data, s))
                got = np.array([int(np.sum(model.predict(X) == y)) for X, y in self.data["score"].values()])
                CACHE.put_array("correct", key, got)
            self._correct[s] = got
        return self._correct[s]


def _start_inside(p) -> str | None:
    return None if p.drift_start_week < p.weeks else f"< weeks ({p.weeks}): drift must start inside the run"


def _final_inside(p) -> str | None:
    return None if p.final_weeks <= p.weeks else f"<= weeks ({p.weeks})"


class DataDriftLab(Lab):
    id = "q29"
    headline = ("pattern", "accuracy_pct")
    refine_param = "rows_per_week"
    parts = {"stream": DATA}
    arms = (Arm("baseline", "Never retrain", "the model fitted before week 1 serves every week"),
            Arm("scheduled", "Fixed schedule", "refit on the latest labelled weeks every schedule_weeks weeks"),
            Arm("pattern", "PSI-triggered", "refit when any feature's PSI against the model's training data "
                                            ">= psi_threshold (Evidently's PSI)"),
            Arm("comparison", "Detectors and gaps", "PSI and KS flags against weeks where accuracy really fell"))
    assumptions = (
        "Data: scikit-learn's 1,797 8x8 digits, split 50/50 once: labelled feedback rows come from one half, "
        "scored production rows from the other, drawn with replacement each week.",
        "Labels of a week arrive at its end; a retrain then fits StandardScaler + LogisticRegression(C=0.1, tol=1e-3) on "
        "the last window_weeks of labelled rows and serves from the next week.",
        "Covariate drift: drifted_features pixels of the middle rows gain shift_per_week levels (and "
        "scale_per_week gain) per week after drift_start_week, stochastically rounded and clipped to 0..16.",
        "Concept drift: labels 3<->8 and 1<->7 swap with probability swap_per_week per week of drift; pixels "
        "do not change.",
        "PSI per pixel as Evidently: one bin per value (pixels take at most 17 values), empty bins 0.0001; "
        "the trigger is the largest PSI over the 64 pixels. KS: scipy ks_2samp, a pixel drifts when p <= 0.05; "
        "the data set drifts when any pixel does, or (Evidently's dataset rule) when half of them do.",
    )
    rules = (Rule("drift_start_week", ("drift_start_week", "weeks"), _start_inside),
             Rule("final_weeks", ("final_weeks", "weeks"), _final_inside))
    params = (
        Param("weeks", 26, 6, 52, unit="weeks", key=True, help="production weeks simulated (26 = half a year)"),
        Param("rows_per_week", 600, 100, 2000, unit="rows",
              help="scored rows per week (as many labelled rows arrive for retraining)"),
        Param("drift_kind", "covariate", choices=("covariate", "concept", "both", "none"), key=True,
              help="what drifts: pixel values, the label rule, both, or nothing (control)"),
        Param("drift_start_week", 4, 0, 51, unit="week", help="last week before drift begins"),
        Param("shift_per_week", 0.4, 0.0, 2.0, unit="levels/week", key=True,
              help="ink added to each drifted pixel per week of drift (pixel range 0..16)"),
        Param("scale_per_week", 0.0, 0.0, 0.2, unit="1/week", help="relative gain added to drifted pixels per week"),
        Param("drifted_features", 12, 1, len(D.BAND), unit="pixels", help="how many pixels drift (middle rows first)"),
        Param("swap_per_week", 0.03, 0.0, 0.5, unit="1/week",
              help="probability added per week that a 3/8 or 1/7 label swaps meaning"),
        Param("psi_threshold", 0.2, 0.01, 20.0, key=True,
              help="retrain when max PSI >= this (Evidently default 0.1; 0.2 is the usual 'act' level)"),
        Param("schedule_weeks", 2, 1, 26, unit="weeks", help="fixed schedule: retrain every this many weeks"),
        Param("window_weeks", 2, 1, 4, unit="weeks", help="a retrain fits on this many most recent labelled weeks"),
        Param("degradation_pct", 5.0, 0.5, 50.0, unit="%",
              help="a week's drift 'mattered' when accuracy fell this much (relative) below training accuracy"),
        Param("final_weeks", 4, 1, 13, unit="weeks", help="accuracy_pct is measured over the last this many weeks"),
    )
    exercises = (
        Exercise("Switch to concept drift (labels change, pixels do not). How often does the PSI policy retrain, "
                 "and what accuracy does it end with?", {"drift_kind": "concept"}, ("pattern", "accuracy_pct"),
                 why="Concept drift changes what the labels mean, not what the inputs look like; PSI on the pixels "
                 "sees nothing, so the policy does not retrain and accuracy decays."),
        Exercise("Lower the PSI threshold to Evidently's default 0.1 with no drift at all. How many retrains are "
                 "false alarms?", {"drift_kind": "none", "psi_threshold": 0.1}, ("pattern", "retrains"),
                 why="PSI computed on finite samples is never exactly zero; a lower threshold is crossed by sampling "
                 "noise alone, so every retrain here is a false alarm."),
        Exercise("Retrain on a fixed quarterly schedule (13 weeks). How stale does the model get, and what does "
                 "it cost in accuracy?", {"schedule_weeks": 13}, ("scheduled", "accuracy_pct"),
                 why="A quarterly schedule lets the model age for up to 13 weeks between retrains; under gradual "
                 "drift, accuracy falls during that time."),
    )

    def part_stream(self, seed, p) -> _Stream:
        return _Stream(seed, p)

    def prepare(self, seed: int = 0) -> None:
        self.simulate(seed, self.settings())

    def simulate(self, seed: int, p) -> Outcome:
        st = self.part("stream", seed, p)
        W, n = p.weeks, p.rows_per_week
        weeks = np.arange(1, W + 1)
        serving = {"baseline": D.run_policy("never", W),
                   "scheduled": D.run_policy("scheduled", W, every=p.schedule_weeks),
                   "pattern": D.run_policy("triggered", W, trigger=lambda s, t: st.psi[s, t] >= p.psi_threshold)}
        correct = {a: np.array([st.correct(s)[t] for t, s in zip(weeks, srv)]) for a, srv in serving.items()}
        ref_k = int(st.correct(0)[0])
        ref_acc = ref_k / n
        drifting = np.array([p.drift_kind != "none" and st.cfg.drift_weeks(t) > 0 for t in weeks])

        m = Measurements(ARMS + ("comparison",))
        final = weeks > W - p.final_weeks
        rows = []
        for arm, srv in serving.items():
            k = correct[arm]
            acc = m.share(arm, "accuracy_pct", k[final].sum(), n * final.sum())
            m.share(arm, "accuracy_all_pct", k.sum(), n * W)
            worst = int(np.argmin(k))
            m.share(arm, "worst_week_accuracy_pct", k[worst], n)
            lo, hi = m.intervals[arm]["accuracy_pct"]
            m.value(arm, "accuracy_degradation_pct", 100 * (1 - acc / 100 / ref_acc),
                    (100 * (1 - hi / 100 / ref_acc), 100 * (1 - lo / 100 / ref_acc)))
            age = D.staleness_days(srv)
            retrain_weeks = [t for t, (a, b) in enumerate(zip(srv, srv[1:]), start=1) if a != b]
            m.value(arm, "model_staleness_days", float(age.mean()))
            m.value(arm, "days_since_retrain_days", 7.0 * (W - srv[-1]))
            m.value(arm, "retrains", float(len(retrain_weeks)))
            m.value(arm, "false_retrains", float(sum(not drifting[t - 1] for t in retrain_weeks)))
            m.value(arm, "psi_max", float(np.nanmax([st.psi[s, t] for t, s in zip(weeks, srv)])))
            for t, s, kk, a in zip(weeks, srv, k, age):
                iv = wilson(int(kk), n)
                rows.append({"week": int(t), "arm": arm, "accuracy_pct": 100 * iv.estimate, "low": 100 * iv.low,
                             "high": 100 * iv.high, "model_week": int(s), "age_days": float(a),
                             "retrained": int(t) in retrain_weeks, "psi": float(st.psi[s, t])})
        self._detection(m, st, p, correct["baseline"], ref_acc, seed)
        m.share("comparison", "train_accuracy_pct", ref_k, n)
        a, b = m.interval("pattern", "accuracy_pct"), m.interval("baseline", "accuracy_pct")
        m.value("comparison", "recovered_pts", a.estimate - b.estimate, (a.low - b.high, a.high - b.low))

        drift = pd.DataFrame({"week": weeks, "psi_vs_original": st.psi[0, 1:], "ks_drifted_pixels": st.ks_drifted[1:],
                              "baseline_accuracy_pct": 100 * correct["baseline"] / n})
        drift["mattered"] = correct["baseline"] < n * ref_acc * (1 - p.degradation_pct / 100)
        drift["flag_psi"] = drift["psi_vs_original"] >= p.psi_threshold
        drift["flag_ks"] = drift["ks_drifted_pixels"] > 0
        drift["flag_ks_share"] = drift["ks_drifted_pixels"] >= D.DRIFT_SHARE * 64
        confusion = pd.DataFrame([{"detector": det, "flagged": bool(f), "mattered": bool(mt),
                                   "weeks": int(np.sum((drift[col] == f) & (drift["mattered"] == mt)))}
                                  for det, col in (("PSI", "flag_psi"), ("KS any pixel", "flag_ks"),
                                                   ("KS share>=0.5", "flag_ks_share"))
                                  for f in (True, False) for mt in (True, False)])
        r = m.metrics
        notes = [f"{W} weeks x {n} scored rows; {p.drift_kind} drift from week {p.drift_start_week + 1}; model "
                 f"accuracy at training {100 * ref_acc:.1f}%.",
                 f"Retrains: scheduled {r['scheduled']['retrains']:.0f}, PSI-triggered {r['pattern']['retrains']:.0f} "
                 f"({r['pattern']['false_retrains']:.0f} before any drift); final accuracy never "
                 f"{r['baseline']['accuracy_pct']:.1f}%, scheduled {r['scheduled']['accuracy_pct']:.1f}%, "
                 f"PSI {r['pattern']['accuracy_pct']:.1f}%."]
        return Outcome(m, {"weekly": pd.DataFrame(rows), "drift": drift, "confusion": confusion}, notes=notes)

    @staticmethod
    def _detection(m: Measurements, st: _Stream, p, k_base: np.ndarray, ref_acc: float, seed: int) -> None:
        """Flags of PSI and KS (against the original training data) versus weeks where accuracy really fell."""
        W, n = p.weeks, p.rows_per_week
        mattered = k_base < n * ref_acc * (1 - p.degradation_pct / 100)
        flags = {"psi": st.psi[0, 1:] >= p.psi_threshold, "ks": st.ks_drifted[1:] > 0,
                 "ks_share": st.ks_drifted[1:] >= D.DRIFT_SHARE * st.score_counts[0].shape[0]}
        none = "the never-retrained model never lost degradation_pct at these settings: no drift mattered"
        calm = "every week's accuracy fell by degradation_pct: no calm week to raise a false alarm in"
        for det, f in flags.items():
            m.share("comparison", f"{det}_recall_pct", np.sum(f & mattered), mattered.sum(), missing=none)
            m.share("comparison", f"{det}_false_alarm_pct", np.sum(f & ~mattered), (~mattered).sum(), missing=calm)
        m.value("comparison", "weeks_mattered", float(mattered.sum()))
        if not mattered.any():
            m.missing("pattern", "psi", none)
            return
        t = int(np.argmax(mattered)) + 1
        j = st.psi_feature[0, t]
        R, C = st.train_counts[0][j], st.score_counts[t][j]
        rng = Streams(seed).fresh("psi_bootstrap")
        boot = D.psi_from_counts(rng.multinomial(R.sum(), R / R.sum(), 200), rng.multinomial(C.sum(), C / C.sum(), 200))
        # basic bootstrap (2θ − q): resampling inflates PSI, and this interval takes that bias back out
        lo, hi = 2 * st.psi[0, t] - np.percentile(boot, [97.5, 2.5])
        m.value("pattern", "psi", st.psi[0, t], (max(0.0, lo), hi))
        m.value("pattern", "psi_week", float(t))

    def plots(self, result):
        import altair as alt

        from .plotting import arm_scale, bar_chart, line_chart

        wk = result.series["weekly"]
        p = result.params
        ref = result.metrics["comparison"]["train_accuracy_pct"]
        acc = line_chart(wk, "week", "accuracy_pct", "Accuracy per week (Wilson 95% band) by policy", "week",
                         "accuracy (%)", points=True,
                         rules=[("y", ref * (1 - p["degradation_pct"] / 100), "drift that matters"),
                                ("x", p["drift_start_week"] + 0.5, "drift starts")])
        band = alt.Chart(wk).mark_area(opacity=0.15).encode(
            x="week:Q", y="low:Q", y2="high:Q", color=alt.Color("arm:N", scale=arm_scale(wk["arm"]), legend=None))
        ticks = alt.Chart(wk[wk["retrained"]]).mark_tick(thickness=2, size=14).encode(
            x=alt.X("week:Q", title="week (retrain at its end)"), y=alt.Y("arm:N", title=None),
            color=alt.Color("arm:N", scale=arm_scale(wk["arm"]), legend=None), tooltip=["arm:N", "week:Q"]
        ).properties(title="Retrains", height=90, width="container")
        drift = result.series["drift"].melt("week", ["psi_vs_original"], var_name="arm", value_name="psi")
        pat = wk[wk["arm"] == "pattern"][["week", "psi"]].assign(arm="vs PSI policy's model")
        psi = line_chart(pd.concat([drift.replace({"psi_vs_original": "vs original model"}), pat]), "week", "psi",
                         "Largest pixel PSI each week (log)", "week", "max PSI over 64 pixels", color="arm",
                         log_y=True, rules=[("y", p["psi_threshold"], "psi_threshold"), ("y", 0.1, "Evidently 0.1")])
        conf = result.series["confusion"].assign(
            cell=lambda d: np.where(d.flagged, "flagged", "quiet") + " / " + np.where(d.mattered, "mattered", "harmless"))
        bars = bar_chart(conf, "detector", "weeks", "Drift flagged vs accuracy drop (weeks, vs original model)",
                         "weeks", color="cell")
        return [alt.layer(band, acc), ticks, psi, bars]


LAB = DataDriftLab()
