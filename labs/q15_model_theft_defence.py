"""Q15 lab: stealing a served model by querying it, and what the usual defences cost and catch.

Everything is measured on real models; nothing is simulated in time except
the rate limiter, which is exact arithmetic on Envoy's token bucket.

Victim. One of ``sim.models``' classifiers of scikit-learn's 8x8 digits (the
PyTorch MLP by default), trained with the run's seed. It is served behind an
API that answers with ten class probabilities.

Attacker (model extraction, ``sim.extraction``). The attacker holds
``public_samples`` unlabeled digit images from the training split (or none,
``attacker_data=synthetic``), sends mixups of them plus pixel noise (or noise
images) and trains a copy, a multinomial logistic regression, on the answers
(soft targets). It keeps training as answers arrive; the curve records the
copy's accuracy on the 450 held-out test digits (and its fidelity, agreement
with the victim) after 10, 20, 50, ... queries. The **extraction threshold**
is the seed's formula: queries sent until the copy first reaches
``target_accuracy_pct`` accuracy (log-interpolated between grid points). The
curve is computed up to 100k queries, and on to ``max_queries`` while the
target has not been reached; a copy that never reaches it reports
``max_queries + 1`` ("more than the budget", a lower bound).

Defences, each alone in its own arm and stacked in ``pattern``:

``labels_only``  ART ``ClassLabels``: only the top label;
``rounding``     ART ``Rounded(decimals=round_decimals)``;
``noise``        ART ``GaussianNoise(scale=noise_scale)``: noise on the probabilities, renormalised;
``validator``    a schema/range check plus a Mahalanobis out-of-distribution detector fitted on
                 training digits, threshold at ``validator_fpr_pct`` false positives; refused
                 queries get no answer but still count as sent;
``rate_limit``   Envoy's local rate limit token bucket per API key (``max_tokens``,
                 ``tokens_per_fill``, ``fill_interval``; ``sim.token_bucket``), for an attacker
                 with ``attacker_keys`` keys. It does not change how many queries extraction
                 needs, only how long sending them takes;
``pattern``      all of it: noise then rounding (or labels only), the validator, the rate limit.

Costs to honest users, measured: accuracy of the answers' top label on the
test digits (noise redrawn ``HONEST_REPEATS`` times), calibration (ECE, Brier
score), clean inputs the validator refuses, and requests of an honest client
(Poisson at ``honest_rate_per_min``) the token bucket refuses.

Adversarial inputs. FGSM (ART ``FastGradientMethod``, L-inf, ``eps`` in pixel
levels, optionally ``minimal``) on the test digits with the victim's own
gradient (torch autograd for the MLPs, closed form for the logistic
regression; the forest has none, so its adversarial images are transferred
from the logistic regression). The validator's detection rate is measured on
adversarial images that fool the victim, on schema violations, noise images,
natural-image patches and random +-eps perturbations, and its false-positive
rate on the clean test digits.

Caching. Training the copies and querying the victim is the expensive part:
on a busy 2-core machine the first default run takes about 11-15 s (plus
about 2 s if the victim itself is not trained yet), a first run with
``attacker_data=synthetic`` (every curve runs to ``max_queries``) about
30-40 s, and a new output-defence setting retrains only the two or three
curves it touches (2-4 s). Results go to the user's cache folder
(``sim.extraction.DiskCache``, keyed by the parameters each piece depends
on and by the code that computes it), so a repeated setting reads a few
JSON files in about 0.05 s. Changing only the rate-limit or honest-traffic
parameters never recomputes anything.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

import sim.extraction
import sim.models
import sim.rng
from sim import extraction as X
from sim.cache import DiskCache
from sim.rng import Streams
from sim.token_bucket import TokenBucket

from .contract import Exercise, Lab, Outcome, Param

GRID = (10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
        1_000_000, 2_000_000, 5_000_000)
CURVE_MIN_END = 100_000  # every curve runs at least this far (the plot); further only while not reached
HONEST_REPEATS = 20  # noise redraws over the 450 test digits for the honest users' utility
HONEST_REQUESTS = 5_000  # honest client's requests through the token bucket
DETECT_N = 1_000  # inputs per out-of-distribution family
CALIBRATION_SHARE = 0.2  # share of the training digits held out to set the detector's threshold
REPLICATES = 8  # attacker copies trained side by side on the same answers (their mean curve is measured)
EXTRACTION_ARMS = ("baseline", "labels_only", "rounding", "noise", "validator", "rate_limit", "pattern")
ARMS = EXTRACTION_ARMS + ("comparison",)
ARM_LABELS = {"baseline": "no defence", "labels_only": "labels only", "rounding": "rounding",
              "noise": "noise", "validator": "input validator", "rate_limit": "rate limit",
              "pattern": "defence stack"}
# The code whose bytes make the cached pieces: this file, the attack, the victim's recipe, the seeds.
CACHE = DiskCache("extraction", code=[__file__, sim.extraction, sim.models, sim.rng])


def _cpu_tolerance() -> dict[tuple[str, str], float]:
    """Numbers another CPU's floating point may move, with relative tolerances. Thresholds: on the
    mean of REPLICATES copies one test digit of one copy moves the mean by 0.03 points, about 1% of
    the threshold where the curve is flattest near 80%; Intel vs AMD moved the old one-copy threshold
    3.7%. Calibration numbers move in their 6th digit (victim float32 rounding)."""
    tol = {}
    for arm in EXTRACTION_ARMS:
        tol.update({(arm, "extraction_queries"): 0.10, (arm, "fidelity_queries"): 0.10,
                    (arm, "extraction_time_h"): 0.10, (arm, "surrogate_accuracy_pct"): 0.01,
                    (arm, "surrogate_fidelity_pct"): 0.01, (arm, "ece_pct"): 0.001, (arm, "brier"): 0.001})
    for arm in ("validator", "pattern"):
        tol.update({(arm, "answered_pct"): 0.01, (arm, "adversarial_detection_pct"): 0.005})
    for metric in ("extraction_slowdown_x", "time_slowdown_x", "labels_only_slowdown_x", "rounding_slowdown_x",
                   "noise_slowdown_x", "validator_slowdown_x", "rate_limit_time_slowdown_x", "time_equivalent_queries"):
        tol[("comparison", metric)] = 0.15
    tol[("comparison", "calibration_loss_pct")] = 0.001
    return tol


class ModelTheftLab(Lab):
    id = "q15"
    arms = ARMS
    cpu_tolerance = _cpu_tolerance()
    headline = ("pattern", "extraction_queries")
    budget_s = 0.5
    params = (
        Param("victim", "mlp", choices=("mlp", "mlp_int8", "logreg", "forest"),
              help="the served model (sim.models, trained on the digits with the run's seed)"),
        Param("attacker_data", "public_mix", choices=X.QUERY_KINDS,
              help="public_mix: mixups of a few public digits plus noise; synthetic: uniform noise images (no data)"),
        Param("public_samples", 50, 2, 1000, unit="images", help="unlabeled digits the attacker holds (public_mix)"),
        Param("query_noise", 1.0, 0.0, 8.0, unit="pixel levels", help="std of the noise added to each mixup query (pixels are 0..16)"),
        Param("max_queries", 1_000_000, 100_000, 5_000_000, unit="queries",
              help="the attacker's query budget; a copy that never reaches the target reports max_queries + 1"),
        Param("target_accuracy_pct", 80.0, 50.0, 95.0, unit="%", help="the extraction threshold's accuracy (the seed: 80%)"),
        Param("labels_only", False, help="pattern answers with the top label only (ART ClassLabels) instead of noisy, rounded probabilities"),
        Param("round_decimals", 3, 0, 8, unit="decimals", help="rounding of the probabilities (ART Rounded default 3; 8 is practically none)"),
        Param("noise_scale", 0.2, 0.0, 1.0, unit="probability", help="std of Gaussian noise on each probability (ART GaussianNoise default 0.2)"),
        Param("ood_detector", "mahalanobis", choices=("mahalanobis", "class_mahalanobis"),
              help="Mahalanobis distance to one Gaussian of the training digits, or the nearest of ten class means"),
        Param("validator_fpr_pct", 1.0, 0.1, 20.0, unit="%", help="share of held-out clean digits the detector may flag (sets its threshold)"),
        Param("fgsm_eps", 2, 1, 16, unit="pixel levels", help="FGSM step (L-inf) on 0..16 pixels; ART's default 0.3 of the range is about 5"),
        Param("fgsm_minimal", False, help="ART minimal=True: each input uses the smallest eps (1, 2, ...) that fools the victim"),
        Param("max_tokens", 100, 1, 1_000_000, unit="tokens", help="Envoy token_bucket.max_tokens: burst size and initial fill, per API key"),
        Param("tokens_per_fill", 100, 1, 1_000_000, unit="tokens", help="Envoy tokens_per_fill: tokens added each fill_interval"),
        Param("fill_interval", 60.0, 0.05, 86_400.0, unit="s", help="Envoy fill_interval (at least 50 ms); default 100 per minute per key"),
        Param("attacker_keys", 1, 1, 100_000, unit="keys", help="API keys the attacker spreads its queries over (one bucket each)"),
        Param("attacker_rps", 50.0, 0.1, 100_000.0, unit="req/s", help="how fast the attacker sends when nothing limits it"),
        Param("honest_rate_per_min", 30.0, 0.1, 100_000.0, unit="req/min", help="an honest client's Poisson request rate on its key"),
    )
    exercises = (
        Exercise("The attacker has no digits at all and sends uniform noise images (attacker_data=synthetic). "
                 "How many queries does extraction need now without any defence?",
                 {"attacker_data": "synthetic"}, ("baseline", "extraction_queries")),
        Exercise("The adversary uses ART's minimal FGSM: each image gets the smallest eps that fools the model. "
                 "What share of its adversarial images does the validator still catch?",
                 {"fgsm_minimal": True, "fgsm_eps": 8}, ("pattern", "adversarial_detection_pct")),
        Exercise("Serve labels only in the defence stack. How many times more queries does the attacker need "
                 "than against the open API?",
                 {"labels_only": True}, ("comparison", "extraction_slowdown_x")),
    )

    # ------------------------------------------------------------------ the run
    def simulate(self, seed: int, p) -> Outcome:
        ctx = _Context(seed, p)
        facts = ctx.victim_facts()
        detection = ctx.detection()
        curves = {arm: ctx.curve(arm) for arm in EXTRACTION_ARMS}
        honest = _honest_utility(seed, p, facts)
        traffic = _honest_traffic(seed, p)
        bucket = _bucket(p)

        metrics, intervals = {}, {}
        for arm in EXTRACTION_ARMS:
            m, iv = _arm_metrics(arm, p, curves[arm], honest, traffic, detection, bucket)
            metrics[arm], intervals[arm] = m, iv
        base, pat = metrics["baseline"], metrics["pattern"]
        for arm in EXTRACTION_ARMS:
            metrics[arm]["utility_loss_pct"] = base["honest_accuracy_pct"] - metrics[arm]["honest_accuracy_pct"]
            intervals[arm]["utility_loss_pct"] = honest[arm]["loss_interval"]
        comp = {
            "utility_loss_pct": pat["utility_loss_pct"],
            "calibration_loss_pct": pat["ece_pct"] - base["ece_pct"],
            "honest_refused_pct": pat["honest_refused_pct"],
            "extraction_slowdown_x": pat["extraction_queries"] / base["extraction_queries"],
            "time_slowdown_x": pat["extraction_time_h"] / base["extraction_time_h"],
        }
        for arm in ("labels_only", "rounding", "noise", "validator"):
            comp[f"{arm}_slowdown_x"] = metrics[arm]["extraction_queries"] / base["extraction_queries"]
        comp["rate_limit_time_slowdown_x"] = metrics["rate_limit"]["extraction_time_h"] / base["extraction_time_h"]
        # the defended attack's duration, in queries an attacker could send to the open API meanwhile
        comp["time_equivalent_queries"] = pat["extraction_time_h"] * 3600.0 * p["attacker_rps"]
        metrics["comparison"] = comp
        intervals["comparison"] = {"utility_loss_pct": honest["pattern"]["loss_interval"]}

        series = {
            "curves": _curves_frame(curves),
            "detection": _detection_frame(detection),
            "attacker_time": _time_frame(p, bucket, metrics),
        }
        notes = _notes(p, facts, detection, curves, metrics, bucket, ctx)
        extras = {"victim_accuracy_pct": 100 * facts["accuracy"], "computed": sorted(ctx.computed),
                  "compute_s": round(ctx.compute_s, 3)}
        return Outcome(metrics, series, intervals, notes, extras)

    def prepare(self, seed: int = 0) -> None:
        """Train the victim and the default attack curves into the disk cache."""
        self.simulate(seed, self.settings())

    def plots(self, result):
        return [_plot_curves(result), _plot_time(result), _plot_detection(result)]


# ---------------------------------------------------------------------- the expensive part (cached)
class _Context:
    """One run's access to the victim, the attacker's queries and the cache.

    Each cached piece (victim facts, validator measurements, one curve per set
    of defences) is keyed by exactly the parameters it depends on; ``CACHE``
    adds the code that produces it (this file, sim/extraction.py, sim/models.py,
    sim/rng.py).
    """

    def __init__(self, seed: int, p: dict):
        self.seed, self.p = seed, p
        self.cache = CACHE
        self.streams = Streams(seed)
        self.computed: set[str] = set()
        self.compute_s = 0.0
        self._model = None
        self._stream = None
        self._answers: dict[int, np.ndarray] = {}
        self._dirty: set[int] = set()
        self._noise: dict[int, np.ndarray] = {}
        self._validator = None

    # -- keys
    def _victim_key(self) -> dict:
        return {"victim": self.p["victim"], "seed": self.seed}

    def _stream_key(self) -> dict:
        p = self.p
        key = {**self._victim_key(), "attacker_data": p["attacker_data"]}
        if p["attacker_data"] == "public_mix":
            key.update(public_samples=p["public_samples"], query_noise=p["query_noise"])
        return key

    def _validator_key(self) -> dict:
        return {"ood_detector": self.p["ood_detector"], "validator_fpr_pct": self.p["validator_fpr_pct"]}

    # -- the victim (loaded only when something must be computed)
    def model(self):
        if self._model is None:
            from sim.models import get_model

            self._model = get_model(self.p["victim"], self.seed)
        return self._model

    def victim_proba(self, rows: np.ndarray) -> np.ndarray:
        from sim.profiles import torch_threads

        m = self.model()
        if m.family == "torch":
            with torch_threads(1):
                return m.predict_proba(np.asarray(rows, dtype=np.float32)).astype(np.float32)
        return np.asarray(m.predict_proba(np.asarray(rows, dtype=np.float32)), dtype=np.float32)

    def _timed(self, label: str, fn):
        t0 = time.perf_counter()
        out = fn()
        self.compute_s += time.perf_counter() - t0
        self.computed.add(label)
        return out

    # -- victim facts: its answers on the test digits
    def victim_facts(self) -> dict:
        key = self._victim_key()
        got = self.cache.get_json("victim", key)
        if got is None:
            got = self._timed("victim", self._compute_facts)
            self.cache.put_json("victim", key, got)
        return got

    def _compute_facts(self) -> dict:
        _, X_test, _, y_test = X.digits_split()
        P = self.victim_proba(X_test)
        return {"proba": [[float(v) for v in row] for row in P], "y_test": [int(v) for v in y_test],
                "victim_pred": [int(v) for v in P.argmax(axis=1)],
                "accuracy": float(np.mean(P.argmax(axis=1) == y_test))}

    # -- the validator (same for extraction arms and the detection measurements)
    def validator(self) -> X.InputValidator:
        if self._validator is None:
            X_train, _, y_train, _ = X.digits_split()
            order = self.streams.fresh("validator_split").permutation(len(X_train))
            n_cal = int(round(CALIBRATION_SHARE * len(X_train)))
            cal, fit = order[:n_cal], order[n_cal:]
            self._validator = X.InputValidator.calibrated(
                X_train[fit], y_train[fit], X_train[cal], self.p["validator_fpr_pct"] / 100.0,
                class_conditional=self.p["ood_detector"] == "class_mahalanobis")
        return self._validator

    # -- validator measurements and adversarial inputs
    def detection(self) -> dict:
        p = self.p
        key = {**self._victim_key(), **self._validator_key(), "fgsm_eps": p["fgsm_eps"],
               "fgsm_minimal": p["fgsm_minimal"]}
        got = self.cache.get_json("detection", key)
        if got is None:
            got = self._timed("detection", self._compute_detection)
            self.cache.put_json("detection", key, got)
        return got

    def _compute_detection(self) -> dict:
        p = self.p
        _, X_test, _, y_test = X.digits_split()
        val = self.validator()
        rng = self.streams.fresh("ood_inputs")

        def flagged(rows) -> dict:
            codes = val.check(rows)
            return {"n": int(len(codes)), "flagged": int(np.sum(codes != X.ACCEPTED)),
                    "schema": int(np.sum(codes == X.SCHEMA)), "ood": int(np.sum(codes == X.OOD))}

        model = self.model()
        clean_pred = model.predict(X_test)
        correct = clean_pred == y_test
        grad, source = self._input_gradient(X_test, y_test)
        if p["fgsm_minimal"]:
            adv, eps_used = X.fgsm_minimal(X_test, y_test, grad, model.predict, p["fgsm_eps"])
        else:
            adv = X.fgsm(X_test, grad, p["fgsm_eps"])
            eps_used = np.full(len(X_test), float(p["fgsm_eps"]))
        adv_pred = model.predict(adv.astype(np.float32))
        fooled = correct & (adv_pred != y_test)
        adv_codes = val.check(adv)
        rnd = X.random_perturbation(rng, X_test, p["fgsm_eps"])
        rnd_pred = model.predict(rnd.astype(np.float32))
        out = {
            "clean": flagged(X_test),
            "out_of_range": flagged(X.out_of_range_inputs(rng, X_test, DETECT_N)),
            "noise_images": flagged(X.noise_images(rng, DETECT_N)),
            "natural_patches": flagged(X.natural_patches(rng, DETECT_N)),
            "random_perturbation": {**flagged(rnd), "flips": int(np.sum(correct & (rnd_pred != y_test))),
                                    "correct": int(correct.sum())},
            "adversarial": {"n": int(fooled.sum()), "flagged": int(np.sum(adv_codes[fooled] != X.ACCEPTED)),
                            "attempted": int(correct.sum()), "fooled": int(fooled.sum()),
                            "fooled_and_passed": int(np.sum(fooled & (adv_codes == X.ACCEPTED))),
                            "mean_eps": float(np.mean(eps_used[fooled])) if fooled.any() else float("nan"),
                            "source": source},
            "threshold": float(val.threshold),
            "shrinkage": float(val.detector.shrinkage_),
        }
        return out

    def _input_gradient(self, X_in, y):
        name = self.p["victim"]
        if name in ("mlp", "mlp_int8"):
            from sim.models import get_model

            module = get_model("mlp", self.seed).estimator  # int8 has no autograd: use its fp32 original
            return X.torch_input_gradient(module, X_in, y), ("victim's own gradient" if name == "mlp"
                                                             else "fp32 MLP's gradient (transfer to INT8)")
        if name == "logreg":
            return X.logreg_input_gradient(self.model().estimator, X_in, y), "victim's own gradient"
        from sim.models import get_model

        lr = get_model("logreg", self.seed).estimator
        return X.logreg_input_gradient(lr, X_in, y), "logistic regression's gradient (transfer to the forest)"

    # -- the attacker's queries and the victim's answers to them
    def stream(self) -> X.QueryStream:
        if self._stream is None:
            p = self.p
            public = None
            if p["attacker_data"] == "public_mix":
                X_train = X.digits_split()[0]
                pick = self.streams.fresh("public_samples").choice(len(X_train), p["public_samples"], replace=False)
                public = X_train[pick]
            self._stream = X.QueryStream(p["attacker_data"], lambda c: self.streams.fresh(f"queries/{c}"),
                                         public, p["query_noise"])
        return self._stream

    def answers(self, idx: np.ndarray) -> np.ndarray:
        """The victim's raw probabilities for queries ``idx`` (sorted), computed once and cached per chunk."""
        out = np.empty((len(idx), X.N_CLASSES), dtype=np.float32)
        chunks = idx // X.CHUNK
        for c in np.unique(chunks):
            c = int(c)
            sel = chunks == c
            off = idx[sel] - c * X.CHUNK
            arr = self._answers.get(c)
            if arr is None:
                arr = self.cache.get_array("answers", {**self._stream_key(), "chunk": c})
                if arr is None or arr.shape != (X.CHUNK, X.N_CLASSES):
                    arr = np.full((X.CHUNK, X.N_CLASSES), np.nan, dtype=np.float32)
                self._answers[c] = arr
            missing = off[np.isnan(arr[off, 0])]
            if missing.size:
                rows = self.stream().chunk(c)[missing]
                t0 = time.perf_counter()
                arr[missing] = self.victim_proba(rows)
                self.compute_s += time.perf_counter() - t0
                self._dirty.add(c)
            out[sel] = arr[off]
        return out

    def flush(self) -> None:
        for c in sorted(self._dirty):
            self.cache.put_array("answers", {**self._stream_key(), "chunk": c}, self._answers[c])
        self._dirty.clear()

    def noise(self, idx: np.ndarray) -> np.ndarray:
        """Standard normals for the answers to queries ``idx``: one stream per chunk, shared by every arm."""
        out = np.empty((len(idx), X.N_CLASSES))
        chunks = idx // X.CHUNK
        for c in np.unique(chunks):
            c = int(c)
            if c not in self._noise:
                if len(self._noise) >= 2:
                    self._noise.pop(next(iter(self._noise)))
                self._noise[c] = self.streams.fresh(f"answer_noise/{c}").standard_normal((X.CHUNK, X.N_CLASSES))
            sel = chunks == c
            out[sel] = self._noise[c][idx[sel] - c * X.CHUNK]
        return out

    # -- one extraction curve
    def curve(self, arm: str) -> dict:
        policy, validated = _defences(arm, self.p)
        p = self.p
        key = {**self._stream_key(), "labels_only": policy.labels_only,
               "decimals": policy.decimals, "noise_scale": policy.noise_scale if policy.uses_noise else 0.0,
               "validator": self._validator_key() if validated else None, "max_queries": p["max_queries"],
               "target_accuracy_pct": p["target_accuracy_pct"]}
        got = self.cache.get_json("curve", key)
        if got is None:
            got = self._timed(f"curve:{arm}", lambda: self._compute_curve(policy, validated))
            self.flush()
            self.cache.put_json("curve", key, got)
        return got

    def _compute_curve(self, policy: X.OutputPolicy, validated: bool) -> dict:
        from threadpoolctl import threadpool_limits

        p = self.p
        _, X_test, _, y_test = X.digits_split()
        victim_pred = np.asarray(self.victim_facts()["victim_pred"])
        target = p["target_accuracy_pct"] / 100.0
        grid = [q for q in GRID if q < p["max_queries"]] + [p["max_queries"]]
        stream = self.stream()
        surrogate = X.SurrogateEnsemble([self.streams.fresh(f"surrogate/rep{r}") for r in range(REPLICATES)])
        cap = min(p["max_queries"], CURVE_MIN_END)
        Xs = np.empty((cap, X.N_FEATURES), dtype=np.uint8)
        Ts = np.empty((cap, X.N_CLASSES))
        n = 0
        rows_out = {"queries": [], "answered": [], "accuracy": [], "fidelity": [], "accuracy_sd": [],
                    "fidelity_sd": []}
        sent = 0
        reached_acc = reached_fid = False
        with threadpool_limits(limits=1):
            for q in grid:
                for start in range(sent, q, X.CHUNK):  # chunk by chunk: bounded memory at millions of queries
                    stop = min(q, (start // X.CHUNK + 1) * X.CHUNK)
                    rows = stream.take(start, stop)
                    idx = np.arange(start, stop)
                    if validated:
                        ok = self.validator().accepts(rows)
                        rows, idx = rows[ok], idx[ok]
                    if idx.size:
                        raw = self.answers(idx)
                        noise = self.noise(idx) if policy.uses_noise else None
                        T = X.to_targets(policy.apply(raw, noise))
                        if n + idx.size > len(Xs):
                            grow = max(n + idx.size, 2 * len(Xs))
                            Xs = np.concatenate([Xs[:n], np.empty((grow - n, X.N_FEATURES), dtype=np.uint8)])
                            Ts = np.concatenate([Ts[:n], np.empty((grow - n, X.N_CLASSES))])
                        Xs[n:n + idx.size] = rows
                        Ts[n:n + idx.size] = T
                        n += idx.size
                sent = q
                surrogate.train(Xs[:n], Ts[:n], X.steps_for(n))
                pred = surrogate.predict(X_test)  # (replicates, test digits)
                accs, fids = np.mean(pred == y_test, axis=1), np.mean(pred == victim_pred, axis=1)
                acc, fid = float(np.mean(accs)), float(np.mean(fids))
                reached_acc |= acc >= target
                reached_fid |= fid >= target
                for k, v in (("queries", q), ("answered", n), ("accuracy", acc), ("fidelity", fid),
                             ("accuracy_sd", float(np.std(accs, ddof=1))),
                             ("fidelity_sd", float(np.std(fids, ddof=1)))):
                    rows_out[k].append(v)
                if q >= CURVE_MIN_END and reached_acc and reached_fid:
                    break
        rows_out["n_eval"] = int(len(y_test))
        rows_out["replicates"] = REPLICATES
        return rows_out


# ---------------------------------------------------------------------- cheap, live parts
def _defences(arm: str, p: dict) -> tuple[X.OutputPolicy, bool]:
    """An arm's output policy and whether it validates inputs."""
    policy = {
        "baseline": X.OutputPolicy(), "rate_limit": X.OutputPolicy(), "validator": X.OutputPolicy(),
        "labels_only": X.OutputPolicy(labels_only=True),
        "rounding": X.OutputPolicy(decimals=p["round_decimals"]),
        "noise": X.OutputPolicy(noise_scale=p["noise_scale"]),
        "pattern": X.OutputPolicy(labels_only=True) if p["labels_only"] else
        X.OutputPolicy(decimals=p["round_decimals"], noise_scale=p["noise_scale"]),
    }[arm]
    return policy, arm in ("validator", "pattern")


def _bucket(p: dict) -> TokenBucket:
    return TokenBucket(p["max_tokens"], p["tokens_per_fill"], p["fill_interval"])


def _threshold(curve: dict, key: str, target: float, max_queries: int) -> tuple[float, bool, tuple[float, float]]:
    """Queries until the replicates' mean curve reaches the target, whether reached, and an interval:
    where the curve's 95% band crosses the target. The band adds, in quadrature, the evaluation
    set's sampling error (Wilson, 450 digits) and the replicates' spread (sd / sqrt(R))."""
    q, v, n = curve["queries"], np.asarray(curve[key]), curve["n_eval"]
    reps = int(curve.get("replicates", 1))
    sd = np.asarray(curve.get(f"{key}_sd", np.zeros(len(v))), dtype=float)
    rep_half = 1.96 * sd / math.sqrt(reps) if reps > 1 else np.zeros(len(v))
    value, reached = X.queries_to_reach(q, v, target)
    wilson = np.array([X.wilson_interval(x * n, n) for x in v])
    upper = v + np.hypot(wilson[:, 1] - v, rep_half)
    lower = v - np.hypot(v - wilson[:, 0], rep_half)
    early, _ = X.queries_to_reach(q, upper, target)  # the upper band reaches it first
    late, late_ok = X.queries_to_reach(q, lower, target)
    beyond = float(max_queries + 1)
    if not reached:
        value = beyond
    low = early if not math.isnan(early) else beyond
    high = late if late_ok else beyond
    return float(value), reached, (float(min(low, value)), float(max(high, value)))


def _honest_utility(seed: int, p: dict, facts: dict) -> dict:
    """What honest users get on the test digits from each arm's answers (noise redrawn HONEST_REPEATS times)."""
    P = np.asarray(facts["proba"])
    y = np.asarray(facts["y_test"])
    noise = Streams(seed).fresh("honest_noise").standard_normal((HONEST_REPEATS,) + P.shape)
    out = {}
    base_correct = (P.argmax(axis=1) == y).astype(float)
    for arm in EXTRACTION_ARMS:
        policy, _ = _defences(arm, p)
        reps = range(HONEST_REPEATS) if policy.uses_noise else range(1)
        per_image = np.zeros(len(y))
        eces, briers = [], []
        for r in reps:
            A = policy.apply(P, noise[r] if policy.uses_noise else None)
            per_image += (A.argmax(axis=1) == y)
            T = X.to_targets(A)
            eces.append(X.expected_calibration_error(T, y))
            briers.append(X.brier_score(T, y))
        per_image /= len(reps)
        diff = base_correct - per_image  # paired over images
        half = 1.96 * diff.std(ddof=1) / math.sqrt(len(y)) if diff.std() > 0 else 0.0
        out[arm] = {"accuracy_pct": 100 * float(per_image.mean()), "ece_pct": 100 * float(np.mean(eces)),
                    "brier": float(np.mean(briers)),
                    "loss_interval": (100 * (float(diff.mean()) - float(half)), 100 * (float(diff.mean()) + float(half))),
                    "acc_interval": tuple(100 * v for v in _mean_interval(per_image))}
    return out


def _mean_interval(x: np.ndarray) -> tuple[float, float]:
    m = float(np.mean(x))
    half = 1.96 * float(np.std(x, ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return (float(m - half), float(m + half))


def _honest_traffic(seed: int, p: dict) -> dict:
    """One honest key sending Poisson traffic through the same token bucket as the attacker."""
    rng = Streams(seed).fresh("honest_arrivals")
    arrivals = np.cumsum(rng.exponential(60.0 / p["honest_rate_per_min"], HONEST_REQUESTS))
    ok = _bucket(p).admit(arrivals)
    refused = int(np.sum(~ok))
    return {"n": HONEST_REQUESTS, "refused": refused, "window_h": float(arrivals[-1] / 3600)}


def _pct(k: float, n: float) -> float:
    return 100.0 * k / n if n else float("nan")


def _wilson_pct(k: float, n: float) -> tuple[float, float]:
    lo, hi = X.wilson_interval(k, n)
    return (100 * lo, 100 * hi)


def _attack_time_h(p: dict, bucket: TokenBucket, n: float, limited: bool) -> float:
    if limited:
        return bucket.time_to_admit(n, p["attacker_keys"], p["attacker_rps"]) / 3600.0
    return n / p["attacker_rps"] / 3600.0


def _arm_metrics(arm, p, curve, honest, traffic, detection, bucket) -> tuple[dict, dict]:
    target = p["target_accuracy_pct"] / 100.0
    q_acc, reached, iv_acc = _threshold(curve, "accuracy", target, p["max_queries"])
    q_fid, _, iv_fid = _threshold(curve, "fidelity", target, p["max_queries"])
    limited = arm in ("rate_limit", "pattern")
    validated = arm in ("validator", "pattern")
    h = honest[arm]
    m = {
        "extraction_queries": q_acc,
        "extraction_reached": 1.0 if reached else 0.0,
        "fidelity_queries": q_fid,
        "surrogate_accuracy_pct": 100 * curve["accuracy"][-1],
        "surrogate_fidelity_pct": 100 * curve["fidelity"][-1],
        "curve_end_queries": float(curve["queries"][-1]),
        "answered_pct": _pct(curve["answered"][-1], curve["queries"][-1]),
        "extraction_time_h": _attack_time_h(p, bucket, q_acc, limited),
        "million_queries_time_h": _attack_time_h(p, bucket, 1_000_000, limited),
        "honest_accuracy_pct": h["accuracy_pct"],
        "ece_pct": h["ece_pct"],
        "brier": h["brier"],
    }
    iv = {"extraction_queries": iv_acc, "fidelity_queries": iv_fid, "honest_accuracy_pct": h["acc_interval"]}
    adv = detection["adversarial"]
    fp = detection["clean"]
    throttled = traffic["refused"] if limited else 0
    fp_pct = _pct(fp["flagged"], fp["n"]) if validated else 0.0
    thr_pct = _pct(throttled, traffic["n"])
    m["false_positive_pct"] = fp_pct
    m["honest_throttled_pct"] = thr_pct
    m["honest_refused_pct"] = 100.0 * (1 - (1 - fp_pct / 100) * (1 - thr_pct / 100))
    if validated:
        m["adversarial_detection_pct"] = _pct(adv["flagged"], adv["n"])
        iv["adversarial_detection_pct"] = _wilson_pct(adv["flagged"], adv["n"])
        m["adversarial_success_pct"] = _pct(adv["fooled_and_passed"], adv["attempted"])
        iv["adversarial_success_pct"] = _wilson_pct(adv["fooled_and_passed"], adv["attempted"])
        iv["false_positive_pct"] = _wilson_pct(fp["flagged"], fp["n"])
        for name in ("out_of_range", "noise_images", "natural_patches", "random_perturbation"):
            d = detection[name]
            metric = {"out_of_range": "out_of_range_detection_pct", "noise_images": "ood_noise_detection_pct",
                      "natural_patches": "ood_natural_detection_pct",
                      "random_perturbation": "random_perturbation_detection_pct"}[name]
            m[metric] = _pct(d["flagged"], d["n"])
            iv[metric] = _wilson_pct(d["flagged"], d["n"])
    else:
        m["adversarial_detection_pct"] = 0.0  # nothing inspects the inputs
        m["adversarial_success_pct"] = _pct(adv["fooled"], adv["attempted"])
        iv["adversarial_success_pct"] = _wilson_pct(adv["fooled"], adv["attempted"])
    if limited:
        iv["honest_throttled_pct"] = _wilson_pct(throttled, traffic["n"])
    return m, iv


# ---------------------------------------------------------------------- series, notes, plots
def _curves_frame(curves: dict) -> pd.DataFrame:
    frames = []
    for arm, c in curves.items():
        frames.append(pd.DataFrame({"arm": arm, "queries": c["queries"], "answered": c["answered"],
                                    "accuracy_pct": 100 * np.asarray(c["accuracy"]),
                                    "fidelity_pct": 100 * np.asarray(c["fidelity"])}))
    return pd.concat(frames, ignore_index=True)


DETECTION_LABELS = {
    "clean": "clean test digits (false positives)",
    "out_of_range": "schema violations",
    "noise_images": "noise images",
    "natural_patches": "photo patches",
    "random_perturbation": "random +-eps noise",
    "adversarial": "FGSM (fooling the victim)",
}


def _detection_frame(detection: dict) -> pd.DataFrame:
    rows = []
    for name, label in DETECTION_LABELS.items():
        d = detection[name]
        lo, hi = _wilson_pct(d["flagged"], d["n"])
        rows.append({"inputs": name, "label": label, "n": d["n"], "flagged_pct": _pct(d["flagged"], d["n"]),
                     "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def _time_frame(p: dict, bucket: TokenBucket, metrics: dict) -> pd.DataFrame:
    qs = np.unique(np.round(np.logspace(1, math.log10(max(p["max_queries"], 1_000_000) * 2), 60)))
    rows = []
    for q in qs:
        rows.append({"queries": q, "scenario": "no rate limit", "time_h": _attack_time_h(p, bucket, q, False)})
        rows.append({"queries": q, "scenario": f"rate limit, {p['attacker_keys']} key(s)",
                     "time_h": _attack_time_h(p, bucket, q, True)})
    return pd.DataFrame(rows)


def _fmt_q(x: float) -> str:
    return f"{x:,.0f}"


def _notes(p, facts, detection, curves, metrics, bucket, ctx) -> list[str]:
    b, pt = metrics["baseline"], metrics["pattern"]
    adv = detection["adversarial"]
    notes = [
        f"Victim: sim.models '{p['victim']}' (seed {ctx.seed}), test accuracy {100 * facts['accuracy']:.1f}% on the 450 "
        f"held-out digits. Attacker: {_attacker_text(p)}; copy = softmax regression trained on the answers.",
        f"Extraction threshold = queries sent until the copy's test accuracy first reaches {p['target_accuracy_pct']:g}% "
        f"(grid 10, 20, 50, ... interpolated in log queries), on the mean curve of {REPLICATES} copies trained "
        f"side by side on the same answers. Undefended: {_reach_text(b, p)}; defence stack: {_reach_text(pt, p)}. "
        "The interval is where the curve's 95% band crosses the target; the band combines the 450-digit "
        "evaluation set and the copies' spread (it does not redraw the attacker's queries).",
        f"Rate limit: {p['max_tokens']} tokens, +{p['tokens_per_fill']} every {p['fill_interval']:g} s per key "
        f"(sustained {bucket.sustained_rate_per_s * 60:g}/min); with {p['attacker_keys']} key(s) the attacker needs "
        f"{pt['extraction_time_h']:.3g} h for the stack's threshold and {pt['million_queries_time_h']:.3g} h for "
        f"1M queries (unlimited at {p['attacker_rps']:g} req/s: {b['million_queries_time_h']:.3g} h). Queries the "
        "validator refuses still spend tokens (the rate limit filter runs first).",
        f"Validator: {'class-conditional ' if p['ood_detector'] == 'class_mahalanobis' else ''}Mahalanobis distance, "
        f"Ledoit-Wolf shrinkage {detection['shrinkage']:.3f}, threshold at {p['validator_fpr_pct']:g}% of held-out clean "
        f"digits; measured false positives on the test digits {pt['false_positive_pct']:.2f}%. It answered "
        f"{pt['answered_pct']:.1f}% of the attacker's queries.",
        f"Adversarial inputs: FGSM eps {p['fgsm_eps']}{' (minimal)' if p['fgsm_minimal'] else ''} with the "
        f"{adv['source']}; it fooled the victim on {adv['fooled']} of {adv['attempted']} correctly classified digits "
        f"(mean eps used {adv['mean_eps']:.2f}); the validator flagged {adv['flagged']} of those.",
        f"Honest users: accuracy of the answers' top label over {HONEST_REPEATS} noise draws; utility_loss_pct = "
        "undefended minus defended accuracy (points); honest_refused_pct adds validator false positives and "
        f"token-bucket refusals of a Poisson client at {p['honest_rate_per_min']:g}/min ({HONEST_REQUESTS} requests).",
        "Not modelled: watermarking (it proves theft after the fact, it does not slow it), authentication, "
        "encryption, secure enclaves, differential privacy. The copy is linear and the attacker does not adapt "
        "to refusals; a neural-network copy or queries steered away from the validator could only lower the "
        "attacker's cost.",
    ]
    return notes


def _attacker_text(p: dict) -> str:
    if p["attacker_data"] == "synthetic":
        return "uniform random noise images (no data)"
    return (f"mixups of {p['public_samples']} unlabeled public digits plus N(0, {p['query_noise']:g}) pixel noise, "
            "rounded to the schema")


def _reach_text(m: dict, p: dict) -> str:
    if m["extraction_reached"]:
        return _fmt_q(m["extraction_queries"])
    return f"not reached within {_fmt_q(p['max_queries'])} queries"


def _plot_curves(result):
    from .plotting import arm_colour, figure

    df = result.series["curves"]
    fig, ax = figure("Copy's accuracy on held-out digits vs queries sent", size=(8, 3.6))
    for k, arm in enumerate(EXTRACTION_ARMS):
        if arm == "rate_limit":
            continue  # same queries as the baseline; only its time differs
        d = df[df.arm == arm]
        ax.plot(d.queries, d.accuracy_pct, marker="o", ms=3, lw=1.4, label=ARM_LABELS[arm], color=arm_colour(arm, k))
    target = result.params["target_accuracy_pct"]
    ax.axhline(target, color="0.3", ls="--", lw=1, label=f"target {target:g}%")
    ax.axvline(1e6, color="0.6", ls=":", lw=1, label="1M queries")
    ax.set_xscale("log")
    ax.set_xlabel("queries sent by the attacker")
    ax.set_ylabel("copy accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right", fontsize=7, ncol=2)
    return fig


def _plot_time(result):
    from .plotting import EXTRA_COLOURS, figure

    df = result.series["attacker_time"]
    fig, ax = figure("Attacker's time to send N queries", size=(8, 3.4))
    for k, (scenario, d) in enumerate(df.groupby("scenario", sort=False)):
        ax.plot(d.queries, d.time_h, lw=1.6, label=scenario, color=EXTRA_COLOURS[k % len(EXTRA_COLOURS)])
    for arm, marker in (("baseline", "o"), ("pattern", "s")):
        m = result.metrics[arm]
        ax.plot([m["extraction_queries"]], [max(m["extraction_time_h"], 1e-4)], marker=marker, ls="none", ms=7,
                color="k", label=f"{ARM_LABELS[arm]}: threshold")
    ax.axvline(1e6, color="0.6", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("queries")
    ax.set_ylabel("hours")
    ax.legend(loc="upper left", fontsize=7)
    return fig


def _plot_detection(result):
    from .plotting import arm_colour, figure

    df = result.series["detection"].copy()
    p = result.params
    eps = f"eps {p['fgsm_eps']}" + (", minimal" if p["fgsm_minimal"] else "")
    df.loc[df.inputs == "adversarial", "label"] = f"FGSM {eps} (fooling the victim)"
    df.loc[df.inputs == "random_perturbation", "label"] = f"random +-{p['fgsm_eps']} noise"
    fig, ax = figure("Input validator: share of inputs flagged (95% Wilson intervals)", size=(8, 3.4))
    y = np.arange(len(df))
    err = np.vstack([df.flagged_pct - df.ci_low, df.ci_high - df.flagged_pct])
    ax.barh(y, df.flagged_pct, xerr=err, color=arm_colour("pattern"), alpha=0.8, capsize=3)
    ax.set_yticks(y, df.label, fontsize=8)
    ax.axvline(90, color="0.3", ls="--", lw=1, label="90% target")
    ax.set_xlim(0, 100)
    ax.set_xlabel("flagged (%)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=7)
    return fig


LAB = ModelTheftLab()
