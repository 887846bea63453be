"""Q15: stealing a served model by querying it, and what the usual defences cost and catch.

A real digits classifier (``sim.models``) answers with ten probabilities. The attacker sends
mixups of a few public digits (or noise images) and trains copies on the answers
(``sim.extraction``); the extraction threshold is the queries until the copies' mean test
accuracy reaches ``target_accuracy_pct``. Each defence runs alone in its own arm and all of
them together in ``pattern``: labels only, rounding, Gaussian noise (ART postprocessors), a
Mahalanobis input validator and Envoy's per-key token bucket (``sim.token_bucket``), which
changes the attacker's time, not its query count. Honest users' costs and the validator's
detection rates are measured on the 450 held-out test digits. Training is cached on disk by
the parameters each part reads (the first run of a setting takes 10-40 s).
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

import sim.extraction
import sim.rng
from sim import extraction as X
from sim.cache import DiskCache
from sim.metrics import wilson
from sim.rng import Streams
from sim.token_bucket import TokenBucket

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .measure import Measurements, fmt_number

GRID = (10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
        1_000_000, 2_000_000, 5_000_000)
CURVE_MIN_END = 100_000  # every curve runs at least this far (the plot); further only while not reached
HONEST_REPEATS = 20  # noise redraws over the test digits for the honest users' utility
HONEST_REQUESTS = 5_000  # an honest client's requests through the token bucket
DETECT_N = 1_000  # inputs per out-of-distribution family
CALIBRATION_SHARE = 0.2  # share of the training digits held out to set the detector's threshold
REPLICATES = 8  # attacker copies trained side by side on the same answers
ARMS = (
    Arm("baseline", "No defence", "the API returns all ten probabilities to anyone, as fast as asked"),
    Arm("labels_only", "Labels only", "the API returns only the top label (ART ClassLabels)"),
    Arm("rounding", "Rounding", "probabilities rounded to round_decimals (ART Rounded)"),
    Arm("noise", "Noisy outputs", "Gaussian noise of noise_scale on each probability, renormalised (ART GaussianNoise)"),
    Arm("validator", "Input validator", "schema check plus a Mahalanobis out-of-distribution detector; refused queries get no answer"),
    Arm("rate_limit", "Rate limit", "Envoy token bucket per API key: same answers, slower to collect"),
    Arm("pattern", "Defence stack", "noise then rounding (or labels only), the validator and the rate limit together"),
)
EXTRACTION_ARMS = tuple(str(a) for a in ARMS)
LIMITED, VALIDATED = ("rate_limit", "pattern"), ("validator", "pattern")
# sim.models by path: importing it would import torch, which only training and serving need
CACHE = DiskCache("extraction", code=[__file__, sim.extraction, Path(sim.rng.__file__).with_name("models.py"), sim.rng])
_RUN = threading.local()  # what this thread's current run had to compute (not read from a cache)


def _cpu_tolerance() -> dict[tuple[str, str], float]:
    """(arm, metric) numbers another CPU's floating point may move, with relative tolerances: thresholds
    on the mean of 8 copies (Intel vs AMD moved a one-copy threshold 3.7%), their ratios, calibration."""
    tol = {}
    for arm in EXTRACTION_ARMS:
        tol.update({(arm, "extraction_queries"): 0.10, (arm, "fidelity_queries"): 0.10,
                    (arm, "extraction_time_h"): 0.10, (arm, "surrogate_accuracy_pct"): 0.01,
                    (arm, "surrogate_fidelity_pct"): 0.01, (arm, "ece_pct"): 0.001, (arm, "brier"): 0.001})
    for arm in VALIDATED:
        tol.update({(arm, "answered_pct"): 0.01, (arm, "adversarial_detection_pct"): 0.005})
    for metric in ("extraction_slowdown_x", "time_slowdown_x", "labels_only_slowdown_x", "rounding_slowdown_x",
                   "noise_slowdown_x", "validator_slowdown_x", "rate_limit_time_slowdown_x", "time_equivalent_queries"):
        tol[("comparison", metric)] = 0.15
    tol[("comparison", "calibration_loss_pct")] = 0.001
    return tol


def _fill_within_bucket(p) -> str | None:
    if p.tokens_per_fill > p.max_tokens:
        return f"<= max_tokens ({p.max_tokens}): the bucket holds max_tokens, so a bigger fill is discarded"
    return None


class ModelTheftLab(Lab):
    id = "q15"
    arms = ARMS
    cpu_tolerance = _cpu_tolerance()
    headline = ("pattern", "extraction_queries")
    rules = (Rule("tokens_per_fill", ("tokens_per_fill", "max_tokens"), _fill_within_bucket),)
    assumptions = (
        "The copy is a multinomial logistic regression on the raw pixels; 8 copies train side by side on the "
        "same answers and their mean curve is measured.",
        "The attacker does not adapt: it neither steers its queries away from the validator nor retries refusals.",
        "The rate limit runs before the validator, so a refused query still spends a token.",
        "The extraction threshold's interval comes from the curve's 95% band (450 test digits, spread of the copies); "
        "it does not redraw the attacker's queries.",
        "Honest users send the 450 test digits; noisy answers are redrawn 20 times.",
        "Differential privacy: logistic regression released by output perturbation (sim.dp, Chaudhuri et al.), "
        "L2 strength 0.01, on a seeded make_classification task (20 features) of dp_train_size rows; 30 noise draws.",
        "Not modelled: watermarking, authentication, encryption, secure enclaves.",
    )
    parts = {
        "victim": ("victim",),
        "detection": ("victim", "ood_detector", "validator_fpr_pct", "fgsm_eps", "fgsm_minimal"),
        "curves": ("victim", "attacker_data", "public_samples", "query_noise", "max_queries", "target_accuracy_pct",
                   "labels_only", "round_decimals", "noise_scale", "ood_detector", "validator_fpr_pct"),
        "dp": ("dp_epsilon", "dp_train_size"),
        "dp_fit": ("dp_train_size",),
        "honest": ("victim", "labels_only", "round_decimals", "noise_scale"),
    }
    params = (
        Param("victim", "mlp", choices=("mlp", "mlp_int8", "logreg", "forest"),
              help="the served model (sim.models, trained on the digits with a seed derived from the run's)"),
        Param("attacker_data", "public_mix", choices=X.QUERY_KINDS, key=True,
              help="public_mix: mixups of a few public digits plus noise; synthetic: uniform noise images (no data)"),
        Param("public_samples", 50, 2, 1000, unit="images", help="unlabeled digits the attacker holds (public_mix)"),
        Param("query_noise", 1.0, 0.0, 8.0, unit="pixel levels", help="std of the noise added to each mixup query (pixels are 0..16)"),
        Param("max_queries", 1_000_000, 100_000, 5_000_000, unit="queries",
              help="the attacker's query budget; a copy that does not reach the target within it is not measured"),
        Param("target_accuracy_pct", 80.0, 50.0, 95.0, unit="%", help="the extraction threshold's accuracy (the seed: 80%)"),
        Param("labels_only", False, key=True,
              help="pattern answers with the top label only (ART ClassLabels) instead of noisy, rounded probabilities"),
        Param("round_decimals", 3, 0, 8, unit="decimals", help="rounding of the probabilities (ART Rounded default 3; 8 is practically none)"),
        Param("noise_scale", 0.2, 0.0, 1.0, unit="probability", key=True,
              help="std of Gaussian noise on each probability (ART GaussianNoise default 0.2)"),
        Param("ood_detector", "mahalanobis", choices=("mahalanobis", "class_mahalanobis"),
              help="Mahalanobis distance to one Gaussian of the training digits, or the nearest of ten class means"),
        Param("validator_fpr_pct", 1.0, 0.5, 20.0, unit="%",
              help="share of the ~270 held-out clean calibration digits the detector may flag (sets its threshold)"),
        Param("fgsm_eps", 2, 1, 16, unit="pixel levels", key=True,
              help="FGSM step (L-inf) on 0..16 pixels; ART's default 0.3 of the range is about 5"),
        Param("fgsm_minimal", False, help="ART minimal=True: each input uses the smallest eps (1, 2, ...) that fools the victim"),
        Param("max_tokens", 100, 1, 1_000_000, unit="tokens", help="Envoy token_bucket.max_tokens: burst size and initial fill, per API key"),
        Param("tokens_per_fill", 100, 1, 1_000_000, unit="tokens", help="Envoy tokens_per_fill: tokens added each fill_interval"),
        Param("fill_interval", 60.0, 0.05, 86_400.0, unit="s", help="Envoy fill_interval (at least 50 ms); default 100 per minute per key"),
        Param("attacker_keys", 1, 1, 100_000, unit="keys", key=True,
              help="API keys the attacker spreads its queries over (one bucket each)"),
        Param("attacker_rps", 50.0, 0.1, 100_000.0, unit="req/s", help="how fast the attacker sends when nothing limits it"),
        Param("honest_rate_per_min", 30.0, 0.1, 100_000.0, unit="req/min", help="an honest client's Poisson request rate on its key"),
        Param("dp_epsilon", 1.0, 0.01, 100.0, unit="epsilon", help="privacy budget of the DP model (the seed: 1.0)"),
        Param("dp_train_size", 1000, 200, 100_000, unit="rows", help="training rows of the DP model's task"),
    )
    exercises = (
        Exercise("The attacker has no digits at all and sends uniform noise images (attacker_data=synthetic). "
                 "How many queries does extraction need now without any defence?",
                 {"attacker_data": "synthetic"}, ("baseline", "extraction_queries"),
                 why="Uniform noise images sit far from the digits the victim was trained on, so the answers the "
                 "attacker buys carry little information about the decision boundaries that matter; the surrogate "
                 "never reaches the target agreement within the query budget."),
        Exercise("The adversary uses ART's minimal FGSM: each image gets the smallest eps that fools the model. "
                 "What share of its adversarial images does the validator still catch?",
                 {"fgsm_minimal": True, "fgsm_eps": 8}, ("pattern", "adversarial_detection_pct"),
                 why="The minimal FGSM perturbation is just large enough to flip the label, so the images stay close "
                 "to natural ones and the input validator's distance test no longer separates them."),
        Exercise("Serve labels only in the defence stack. How many times more queries does the attacker need "
                 "than against the open API?",
                 {"labels_only": True}, ("comparison", "extraction_slowdown_x"),
                 why="Labels alone give the attacker one bit of ranking per query instead of a full probability "
                 "vector, so it needs more queries; how many more is noisy at this query budget, as the wide "
                 "interval shows."),
    )

    # ------------------------------------------------------------------ parts (cached in memory and on disk)
    def part_victim(self, seed, p) -> dict:
        return _Pieces(seed, p).victim_facts()

    def part_detection(self, seed, p) -> dict:
        return _Pieces(seed, p).detection()

    def part_dp_fit(self, seed, p) -> dict:
        """The DP model's task and its non-private weights (what every epsilon perturbs)."""
        from sklearn.datasets import make_classification

        from sim import dp

        streams = Streams(seed)
        X_all, y_all = make_classification(n_samples=p.dp_train_size + 2000, n_features=20, n_informative=10,
                                           random_state=int(streams.seed_sequence("dp_data").generate_state(1)[0]))
        Z, n = dp.unit_rows(X_all), p.dp_train_size
        W = dp.fit_one_vs_rest(Z[:n], y_all[:n], DP_L2)
        return {"W": W, "Z_test": Z[n:], "y_test": y_all[n:], "base": dp.accuracy(W, Z[n:], y_all[n:])}

    def part_dp(self, seed, p) -> dict:
        """Accuracy lost to an epsilon-DP release, per noise draw (real training, real noise)."""
        from sim import dp

        fit, n = self.part("dp_fit", seed, p), p.dp_train_size
        W, Z_test, y_test, base = fit["W"], fit["Z_test"], fit["y_test"], fit["base"]
        rng = Streams(seed)["dp_noise"]
        private = [dp.accuracy(dp.perturb(W, n, DP_L2, p.dp_epsilon, rng), Z_test, y_test) for _ in range(30)]
        return {"base": base, "losses": [100 * (base - a) for a in private]}

    def part_honest(self, seed, p) -> list:
        """What honest users get from each arm's answers (the victim's on the test digits, noise redrawn)."""
        return _honest(seed, p, self.part("victim", seed, p))

    def part_curves(self, seed, p) -> dict:
        pieces = _Pieces(seed, p)
        return {arm: pieces.curve(arm) for arm in EXTRACTION_ARMS}

    # ------------------------------------------------------------------ the run
    def simulate(self, seed: int, p) -> Outcome:
        _RUN.computed, _RUN.compute_s = set(), 0.0
        facts, detection = self.part("victim", seed, p), self.part("detection", seed, p)
        curves = self.part("curves", seed, p)
        bucket = TokenBucket(p.max_tokens, p.tokens_per_fill, p.fill_interval)
        m = Measurements(EXTRACTION_ARMS + ("comparison",))
        reach = {arm: _extraction(m, arm, curves, p, bucket) for arm in EXTRACTION_ARMS}
        for method, args in self.part("honest", seed, p):
            getattr(m, method)(*args)
        _inputs(m, detection)
        _traffic(m, seed, p, bucket)
        _compare(m, p, reach)
        dp_run = self.part("dp", seed, p)
        m.mean("comparison", "dp_utility_loss_pct", dp_run["losses"])
        m.value("comparison", "dp_baseline_accuracy_pct", 100 * dp_run["base"])
        series = {"curves": _curves_frame(curves), "detection": _detection_frame(detection),
                  "attacker_time": _time_frame(p, bucket)}
        b, pt = m.metrics["baseline"], m.metrics["pattern"]
        adv = detection["adversarial"]
        notes = [
            f"Victim '{p.victim}': {100 * facts['accuracy']:.1f}% on the 450 test digits; attacker: {_attacker_text(p)}.",
            f"Queries to {p.target_accuracy_pct:g}% copy accuracy: undefended {reach['baseline']}, defence stack "
            f"{reach['pattern']}; 1M queries take {fmt_number(b['million_queries_time_h'])} h open, "
            f"{fmt_number(pt['million_queries_time_h'])} h through the limit with {p.attacker_keys} key(s).",
            f"FGSM eps {p.fgsm_eps}{' (minimal)' if p.fgsm_minimal else ''} ({adv['source']}) fooled the victim on "
            f"{adv['fooled']} of {adv['attempted']} digits; the validator flagged {adv['flagged']} of them.",
        ]
        extras = {"victim_accuracy_pct": 100 * facts["accuracy"], "computed": sorted(_RUN.computed),
                  "compute_s": round(_RUN.compute_s, 3)}
        return Outcome(m, series, notes=notes, extras=extras)

    def prepare(self, seed: int = 0) -> None:
        """Train the victim and build the attack curves of the defaults and of every exercise into the disk
        cache (the synthetic attacker's curves alone take about 30 s: an exercise click should not)."""
        for changes in [{}, *(e.changes for e in self.exercises)]:
            self.simulate(seed, self.settings(changes))

    def plots(self, result):
        return [_plot_curves(result), _plot_time(result), _plot_detection(result)]


# ---------------------------------------------------------------------- measurements
DP_L2 = 0.01  # the DP model's L2 strength (lambda); the noise scale is 2 / (n lambda epsilon)


def _extraction(m: Measurements, arm: str, curves: dict, p, bucket: TokenBucket) -> str:
    """Thresholds, the copy's end state and the attacker's time for one arm; returns the threshold as text."""
    c, budget, t = curves[arm], p.max_queries, p.target_accuracy_pct
    limited = arm in LIMITED
    base_reached = X.queries_to_reach(curves["baseline"]["queries"], curves["baseline"]["accuracy"], t / 100)[1]
    text = ""
    for field, key in (("accuracy", "extraction_queries"), ("fidelity", "fidelity_queries")):
        value, reached, (lo, hi) = X.threshold_band(c["queries"], c[field], t / 100, c["n_eval"],
                                                    c[f"{field}_sd"], c["replicates"])
        if reached:
            hi = hi if math.isfinite(hi) else budget + 1.0  # the lower band stays under the target: beyond the budget
            m.value(arm, key, value, (min(lo, value), max(hi, value)))
        elif base_reached or arm == "baseline":
            m.missing(arm, key, f"not reached within {budget:,} queries (the copy's {field} stays below {t:g}%; "
                                "raise max_queries to measure it)")
        else:
            m.missing(arm, key, f"not reached within {budget:,} queries, and the undefended copy does not reach "
                                f"{t:g}% either: the attack fails here, not the defences")
        if key == "extraction_queries":
            m.value(arm, "extraction_reached", float(reached))
            text = fmt_number(value) if reached else f"not reached within {budget:,} queries"
            if reached:
                m.value(arm, "extraction_time_h", _attack_time_h(p, bucket, value, limited),
                        (_attack_time_h(p, bucket, min(lo, value), limited),
                         _attack_time_h(p, bucket, max(hi, value), limited)))
            else:
                m.missing(arm, "extraction_time_h", m.reasons[arm][key])
    m.value(arm, "surrogate_accuracy_pct", 100 * c["accuracy"][-1])
    m.value(arm, "surrogate_fidelity_pct", 100 * c["fidelity"][-1])
    m.value(arm, "curve_end_queries", c["queries"][-1])
    m.share(arm, "answered_pct", c["answered"][-1], c["queries"][-1])
    m.value(arm, "million_queries_time_h", _attack_time_h(p, bucket, 1_000_000, limited))
    return text


def _honest(seed: int, p, facts: dict) -> list:
    """What honest users get from each arm's answers on the test digits: top-1 accuracy, paired loss, calibration.

    Returned as the ``Measurements`` calls to make, in order, so a run can reuse them (a part)."""
    P, y = np.asarray(facts["proba"]), np.asarray(facts["y_test"])
    noise = Streams(seed).fresh("honest_noise").standard_normal((HONEST_REPEATS,) + P.shape)
    base = (P.argmax(axis=1) == y).astype(float)
    calls, ece = [], {}
    for arm in EXTRACTION_ARMS:
        policy = _policy(arm, p)
        answers = [policy.apply(P, noise[r] if policy.uses_noise else None)
                   for r in range(HONEST_REPEATS if policy.uses_noise else 1)]
        correct = np.mean([A.argmax(axis=1) == y for A in answers], axis=0)  # per digit, over noise draws
        calls.append(("mean", (arm, "honest_accuracy_pct", 100 * correct)))
        calls.append(("mean", (arm, "utility_loss_pct", 100 * (base - correct))))
        if arm == "pattern":
            calls.append(("mean", ("comparison", "utility_loss_pct", 100 * (base - correct))))
        ece[arm] = 100 * np.mean([X.expected_calibration_error(X.to_targets(A), y) for A in answers])
        calls.append(("value", (arm, "ece_pct", ece[arm])))
        calls.append(("value", (arm, "brier", np.mean([X.brier_score(X.to_targets(A), y) for A in answers]))))
    calls.append(("value", ("comparison", "calibration_loss_pct", ece["pattern"] - ece["baseline"])))
    return calls


def _inputs(m: Measurements, d: dict) -> None:
    """The validator's rates (validated arms) and adversarial success (every arm)."""
    adv = d["adversarial"]
    none = "FGSM fooled none of the victim's correctly classified test digits at this eps: nothing to detect"
    for arm in EXTRACTION_ARMS:
        if arm not in VALIDATED:
            m.value(arm, "adversarial_detection_pct", 0.0)  # nothing inspects the inputs
            m.value(arm, "false_positive_pct", 0.0)
            m.share(arm, "adversarial_success_pct", adv["fooled"], adv["attempted"])
            continue
        m.share(arm, "adversarial_detection_pct", adv["flagged"], adv["n"], missing=none)
        m.share(arm, "adversarial_success_pct", adv["fooled_and_passed"], adv["attempted"])
        m.share(arm, "false_positive_pct", d["clean"]["flagged"], d["clean"]["n"])
        for name, key in (("out_of_range", "out_of_range_detection_pct"), ("noise_images", "ood_noise_detection_pct"),
                          ("natural_patches", "ood_natural_detection_pct"),
                          ("random_perturbation", "random_perturbation_detection_pct")):
            m.share(arm, key, d[name]["flagged"], d[name]["n"])


def _traffic(m: Measurements, seed: int, p, bucket: TokenBucket) -> None:
    """An honest key's Poisson traffic through the same token bucket; refusals add validator false positives."""
    rng = Streams(seed).fresh("honest_arrivals")
    refused = int(np.sum(~bucket.admit(np.cumsum(rng.exponential(60.0 / p.honest_rate_per_min, HONEST_REQUESTS)))))
    for arm in EXTRACTION_ARMS:
        thr = m.share(arm, "honest_throttled_pct", refused, HONEST_REQUESTS) if arm in LIMITED else \
            m.value(arm, "honest_throttled_pct", 0.0)
        fp = m.metrics[arm]["false_positive_pct"]
        m.value(arm, "honest_refused_pct", 100.0 * (1 - (1 - fp / 100) * (1 - thr / 100)))
    m.value("comparison", "honest_refused_pct", m.metrics["pattern"]["honest_refused_pct"])


def _compare(m: Measurements, p, reach: dict) -> None:
    def why(arm, key="extraction_queries"):
        return f"{arm} {key} not measured: {m.reasons[arm].get(key) or m.reasons['baseline'].get(key)}"

    for arm, key, name in [("pattern", "extraction_queries", "extraction_slowdown_x"),
                           ("pattern", "extraction_time_h", "time_slowdown_x"),
                           ("rate_limit", "extraction_time_h", "rate_limit_time_slowdown_x")] + \
            [(a, "extraction_queries", f"{a}_slowdown_x") for a in ("labels_only", "rounding", "noise", "validator")]:
        m.ratio("comparison", name, (arm, key), ("baseline", key), missing=why(arm, key))
    t = m.interval("pattern", "extraction_time_h")
    scale = 3600.0 * p.attacker_rps  # the defended attack's duration, in queries the open API would answer meanwhile
    m.value("comparison", "time_equivalent_queries", t.estimate * scale, (t.low * scale, t.high * scale),
            missing=why("pattern", "extraction_time_h"))


def _policy(arm: str, p) -> X.OutputPolicy:
    if arm == "labels_only" or (arm == "pattern" and p.labels_only):
        return X.OutputPolicy(labels_only=True)
    return {"rounding": X.OutputPolicy(decimals=p.round_decimals), "noise": X.OutputPolicy(noise_scale=p.noise_scale),
            "pattern": X.OutputPolicy(decimals=p.round_decimals, noise_scale=p.noise_scale)}.get(arm, X.OutputPolicy())


def _attack_time_h(p, bucket: TokenBucket, n: float, limited: bool) -> float:
    if limited:
        return bucket.time_to_admit(n, p.attacker_keys, p.attacker_rps) / 3600.0
    return n / p.attacker_rps / 3600.0


def _attacker_text(p) -> str:
    if p.attacker_data == "synthetic":
        return "uniform noise images (no data)"
    return f"mixups of {p.public_samples} public digits + N(0, {p.query_noise:g}) pixel noise"


# ---------------------------------------------------------------------- the expensive pieces (disk cache)
class _Pieces:
    """The victim, its answers to the attacker's queries, the validator, each keyed by what it reads."""

    def __init__(self, seed: int, p):
        self.seed, self.p, self.streams = seed, p, Streams(seed)
        # library seeds (torch, scikit-learn) come from the run's seed through numpy's SeedSequence
        self.model_seed = int(self.streams.seed_sequence("victim").generate_state(1)[0])
        self._answers: dict[int, np.ndarray] = {}
        self._noise: dict[int, np.ndarray] = {}
        self._stream = self._validator = None

    def _cached(self, kind: str, key: dict, label: str, compute):
        got = CACHE.get_json(kind, key)
        if got is None:
            t0 = time.perf_counter()
            got = compute()
            _RUN.compute_s = getattr(_RUN, "compute_s", 0.0) + time.perf_counter() - t0
            getattr(_RUN, "computed", set()).add(label)
            CACHE.put_json(kind, key, got)
        return got

    def model(self, name: str | None = None):
        from sim.models import get_model

        return get_model(name or self.p.victim, self.model_seed)

    def victim_proba(self, rows) -> np.ndarray:
        from sim.profiles import torch_threads

        m = self.model()
        with torch_threads(1) if m.family == "torch" else nullcontext():
            return np.asarray(m.predict_proba(np.asarray(rows, dtype=np.float32)), dtype=np.float32)

    def victim_facts(self) -> dict:
        def compute():
            _, X_test, _, y_test = X.digits_split()
            P = self.victim_proba(X_test)
            return {"proba": P.tolist(), "y_test": y_test.tolist(), "victim_pred": P.argmax(axis=1).tolist(),
                    "accuracy": float(np.mean(P.argmax(axis=1) == y_test))}

        return self._cached("victim", {"victim": self.p.victim, "seed": self.seed}, "victim", compute)

    def validator(self) -> X.InputValidator:
        if self._validator is None:
            X_train, _, y_train, _ = X.digits_split()
            order = self.streams.fresh("validator_split").permutation(len(X_train))
            cal, fit = np.split(order, [int(round(CALIBRATION_SHARE * len(X_train)))])
            self._validator = X.InputValidator.calibrated(
                X_train[fit], y_train[fit], X_train[cal], self.p.validator_fpr_pct / 100.0,
                class_conditional=self.p.ood_detector == "class_mahalanobis")
        return self._validator

    def _validator_key(self) -> dict:
        return {"ood_detector": self.p.ood_detector, "validator_fpr_pct": self.p.validator_fpr_pct}

    def detection(self) -> dict:
        p = self.p
        key = {"victim": p.victim, "seed": self.seed, **self._validator_key(), "fgsm_eps": p.fgsm_eps,
               "fgsm_minimal": p.fgsm_minimal}
        return self._cached("detection", key, "detection", self._compute_detection)

    def _compute_detection(self) -> dict:
        p, model = self.p, self.model()
        _, X_test, _, y_test = X.digits_split()
        grad, source = self._input_gradient(X_test, y_test)
        out = X.validator_report(self.validator().check, model.predict, X_test, y_test, grad, p.fgsm_eps,
                                 p.fgsm_minimal, self.streams.fresh("ood_inputs"), DETECT_N)
        out["adversarial"]["source"] = source
        return out

    def _input_gradient(self, X_in, y):
        name = self.p.victim
        if name in ("mlp", "mlp_int8"):  # int8 has no autograd: its fp32 original's gradient transfers
            src = "victim's own gradient" if name == "mlp" else "fp32 MLP's gradient, transferred to INT8"
            return X.torch_input_gradient(self.model("mlp").estimator, X_in, y), src
        src = "victim's own gradient" if name == "logreg" else "logistic regression's gradient, transferred"
        return X.logreg_input_gradient(self.model("logreg").estimator, X_in, y), src

    # -- the attacker's queries, the victim's answers (cached per chunk) and the answer noise
    def _stream_key(self) -> dict:
        p = self.p
        key = {"victim": p.victim, "seed": self.seed, "attacker_data": p.attacker_data}
        if p.attacker_data == "public_mix":
            key.update(public_samples=p.public_samples, query_noise=p.query_noise)
        return key

    def stream(self) -> X.QueryStream:
        if self._stream is None:
            p, public = self.p, None
            if p.attacker_data == "public_mix":
                X_train = X.digits_split()[0]
                public = X_train[self.streams.fresh("public_samples").choice(len(X_train), p.public_samples,
                                                                             replace=False)]
            self._stream = X.QueryStream(p.attacker_data, lambda c: self.streams.fresh(f"queries/{c}"), public,
                                         p.query_noise)
        return self._stream

    def answers(self, idx: np.ndarray) -> np.ndarray:
        """The victim's float32 probabilities for queries ``idx``, computed once per chunk and cached on disk."""
        def load(c):
            key = {**self._stream_key(), "chunk": c}
            arr = CACHE.get_array("answers", key)
            if arr is None or arr.shape != (X.CHUNK, X.N_CLASSES):
                arr = self.victim_proba(self.stream().chunk(c))
                CACHE.put_array("answers", key, arr)
            return arr

        return X.chunked_rows(self._answers, idx, load)

    def noise(self, idx: np.ndarray) -> np.ndarray:
        return X.chunked_rows(self._noise, idx, lambda c: self.streams.fresh(f"answer_noise/{c}").standard_normal(
            (X.CHUNK, X.N_CLASSES)))

    def curve(self, arm: str) -> dict:
        p, policy, validated = self.p, _policy(arm, self.p), arm in VALIDATED
        key = {**self._stream_key(), "labels_only": policy.labels_only, "decimals": policy.decimals,
               "noise_scale": policy.noise_scale if policy.uses_noise else 0.0,
               "validator": self._validator_key() if validated else None, "max_queries": p.max_queries,
               "target_accuracy_pct": p.target_accuracy_pct}

        def compute():
            from threadpoolctl import threadpool_limits

            _, X_test, _, y_test = X.digits_split()
            grid = [q for q in GRID if q < p.max_queries] + [p.max_queries]

            def answer(idx):
                return X.to_targets(policy.apply(self.answers(idx), self.noise(idx) if policy.uses_noise else None))

            with threadpool_limits(limits=1):
                return X.learning_curve(self.stream(), answer, grid, X_test, y_test,
                                        np.asarray(self.victim_facts()["victim_pred"]),
                                        [self.streams.fresh(f"surrogate/rep{r}") for r in range(REPLICATES)],
                                        p.target_accuracy_pct / 100.0, CURVE_MIN_END,
                                        self.validator().accepts if validated else None)

        return self._cached("curve", key, f"curve:{arm}", compute)


# ---------------------------------------------------------------------- series and plots
DETECTION_LABELS = {"clean": "clean test digits (false positives)", "out_of_range": "schema violations",
                    "noise_images": "noise images", "natural_patches": "photo patches",
                    "random_perturbation": "random +-eps noise", "adversarial": "FGSM (fooling the victim)"}


def _curves_frame(curves: dict) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"arm": arm, "queries": c["queries"], "answered": c["answered"],
                                    "accuracy_pct": 100 * np.asarray(c["accuracy"]),
                                    "fidelity_pct": 100 * np.asarray(c["fidelity"])})
                      for arm, c in curves.items()], ignore_index=True)


def _detection_frame(detection: dict) -> pd.DataFrame:
    ivs = {name: wilson(detection[name]["flagged"], detection[name]["n"]) for name in DETECTION_LABELS}
    return pd.DataFrame([{"inputs": name, "label": label, "n": detection[name]["n"], "flagged_pct": 100 * iv.estimate,
                          "ci_low": 100 * iv.low, "ci_high": 100 * iv.high}
                         for (name, label), iv in zip(DETECTION_LABELS.items(), ivs.values())])


def _time_frame(p, bucket: TokenBucket) -> pd.DataFrame:
    qs = np.unique(np.round(np.logspace(1, math.log10(max(p.max_queries, 1_000_000) * 2), 60)))
    return pd.DataFrame([{"queries": q, "scenario": scenario, "time_h": _attack_time_h(p, bucket, q, limited)}
                         for q in qs for scenario, limited in
                         (("no rate limit", False), (f"rate limit, {p.attacker_keys} key(s)", True))])


def _plot_curves(result):
    from .plotting import line_chart

    df, target = result.series["curves"], result.params["target_accuracy_pct"]
    df = df[df.arm != "rate_limit"]  # the rate limit sends the baseline's queries, only slower
    return line_chart(df, "queries", "accuracy_pct", "Copy's accuracy on held-out digits vs queries sent",
                      "queries sent by the attacker (log)", "copy accuracy (%)", log_x=True, points=True,
                      rules=[("y", target, f"target {target:g}%"), ("x", 1e6, "1M queries")])


def _plot_time(result):
    from .plotting import line_chart

    marks = [("x", 1e6, "1M queries")] + [
        ("x", result.metrics[arm]["extraction_queries"], f"{arm} threshold") for arm in ("baseline", "pattern")
        if math.isfinite(result.metrics[arm]["extraction_queries"])]
    return line_chart(result.series["attacker_time"], "queries", "time_h", "Attacker's time to send N queries",
                      "queries (log)", "hours (log)", color="scenario", log_x=True, log_y=True, rules=marks)


def _plot_detection(result):
    from .plotting import bar_chart

    df, p = result.series["detection"].copy(), result.params
    df.loc[df.inputs == "adversarial", "label"] = f"FGSM eps {p['fgsm_eps']}{', minimal' if p['fgsm_minimal'] else ''}"
    df.loc[df.inputs == "random_perturbation", "label"] = f"random +-{p['fgsm_eps']} noise"
    return bar_chart(df.fillna({"flagged_pct": 0}), "label", "flagged_pct",
                     "Input validator: share of inputs flagged (95% Wilson intervals)", "flagged (%)",
                     horizontal=True, low="ci_low", high="ci_high", rules=[(90, "90% target")])


LAB = ModelTheftLab()
