"""Drift statistics as Evidently computes them, a drifting digits stream, and retraining policies.

Reference: Evidently's legacy stattests (``evidentlyai/evidently@a4aa4c2``,
``src/evidently/legacy/calculations/stattests/{psi,utils,ks_stattest}.py``; REFERENCES.md §12, §27):

* ``binned_percents`` follows ``get_binned_data``: a numerical feature with more than 20 unique
  *reference* values gets ``np.histogram_bin_edges(reference ∪ current, bins="sturges")`` (equal width,
  over the combined data); otherwise every value present in either sample is its own bin. Empty bins
  become 0.0001, or min non-zero / 10⁶ when that minimum is ≤ 0.0001, separately for each
  distribution and without renormalising.
* ``psi`` = Σ (ref% − cur%)·ln(ref% / cur%); drift when ``psi >= threshold``, Evidently's default 0.1.
  The 0.2 "significant" level is a convention (``PSI_SIGNIFICANT``), not in Evidently's code.
* ``ks_test`` is ``scipy.stats.ks_2samp`` (two-sided); drift when ``p <= threshold``, default 0.05.

``psi_from_counts`` is the same per-value computation vectorised over many small-integer features
(tested equal to ``psi``). ``DigitsDriftStream`` makes scikit-learn's digits drift week by week:
covariate drift (a band of pixels gains ink: shift and scale, stochastic rounding, clipped to 0..16)
and concept drift (labels of digit pairs swap with a growing probability; the inputs do not move).
Where this differs from Evidently: nothing in the statistics; choosing "max PSI over features" as
the retraining trigger is the lab's rule (Evidently's dataset rule is a share of drifted columns).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

PSI_THRESHOLD = 0.1  # Evidently psi default_threshold: drift if psi >= 0.1
PSI_SIGNIFICANT = 0.2  # common convention ("act"), not in Evidently's code
KS_THRESHOLD = 0.05  # Evidently ks default: drift if p <= 0.05
DRIFT_SHARE = 0.5  # Evidently dataset drift: share of drifted columns >= 0.5
EMPTY_BIN = 0.0001  # Evidently's replacement for an empty bin
NUMERIC_UNIQUE = 20  # more than this many unique reference values: Sturges bins
LEVELS = 17  # digits pixels take the integer values 0..16


def _fill_zeros(p: np.ndarray) -> np.ndarray:
    """Evidently's empty-bin rule for one distribution (no renormalising)."""
    p = np.asarray(p, dtype=float).copy()
    nonzero = p[p != 0]
    if nonzero.size and nonzero.size < p.size:
        low = nonzero.min()
        p[p == 0] = low / 1e6 if low <= EMPTY_BIN else EMPTY_BIN
    elif not nonzero.size:
        p[:] = EMPTY_BIN
    return p


def binned_percents(reference, current, feature_type: str = "num") -> tuple[np.ndarray, np.ndarray]:
    """(reference %, current %) per bin, as Evidently's ``get_binned_data`` (with zeros filled)."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if ref.size == 0 or cur.size == 0:
        raise ValueError("both samples need at least one non-missing value")
    if feature_type == "num" and np.unique(ref).size > NUMERIC_UNIQUE:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, edges)[0] / ref.size
        c = np.histogram(cur, edges)[0] / cur.size
    else:
        keys = np.union1d(ref, cur)
        r = np.array([np.sum(ref == k) for k in keys]) / ref.size
        c = np.array([np.sum(cur == k) for k in keys]) / cur.size
    return _fill_zeros(r), _fill_zeros(c)


def psi(reference, current, feature_type: str = "num") -> float:
    """Population stability index of one feature, Evidently's binning and empty-bin rule."""
    r, c = binned_percents(reference, current, feature_type)
    return float(np.sum((r - c) * np.log(r / c)))


def psi_test(reference, current, feature_type: str = "num", threshold: float = PSI_THRESHOLD) -> tuple[float, bool]:
    """(psi, drifted) with Evidently's rule ``psi >= threshold``."""
    v = psi(reference, current, feature_type)
    return v, bool(v >= threshold)


def ks_test(reference, current, threshold: float = KS_THRESHOLD) -> tuple[float, bool]:
    """(p-value, drifted) of the two-sided two-sample KS test; drift when ``p <= threshold``."""
    p = float(ks_2samp(np.asarray(reference, float), np.asarray(current, float)).pvalue)
    return p, bool(p <= threshold)


def ks_pvalues(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """KS p-value per column (``ks_2samp`` along axis 0); a column constant and equal in both gets 1."""
    return np.nan_to_num(np.asarray(ks_2samp(reference, current, axis=0).pvalue, dtype=float), nan=1.0)


def ks_statistics_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> np.ndarray:
    """The KS statistic D per feature from value counts: max |F_ref - F_cur| over the values."""
    R = np.cumsum(np.asarray(ref_counts, float), axis=1)
    C = np.cumsum(np.asarray(cur_counts, float), axis=1)
    return np.abs(R / R[:, -1:] - C / C[:, -1:]).max(axis=1)


def ks_drifted_features(reference: np.ndarray, current: np.ndarray, threshold: float = KS_THRESHOLD,
                        levels: int = LEVELS) -> tuple[float, int]:
    """(smallest p-value, number of features with p <= threshold) over small-integer features.

    Every feature of one pair of samples shares n_ref and n_cur, so ``ks_2samp``'s p-value falls as
    the statistic D grows: scipy is called on the feature with the largest D (the smallest p), then a
    binary search over the features sorted by D finds how many have p <= threshold. The result equals
    calling ``ks_2samp`` on every column (tested) with about log2(n_features) calls.
    """
    D = ks_statistics_from_counts(value_counts(reference, levels), value_counts(current, levels))
    order = np.argsort(-D, kind="stable")

    def p_at(k: int) -> float:
        j = order[k]
        return 1.0 if D[j] == 0 else float(ks_2samp(reference[:, j], current[:, j]).pvalue)

    first = p_at(0)
    if first > threshold:
        return first, 0
    lo, hi = 0, len(order) - 1  # p_at(lo) <= threshold; find the last such position
    if p_at(hi) <= threshold:
        return first, len(order)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if p_at(mid) <= threshold:
            lo = mid
        else:
            hi = mid
    return first, lo + 1


def value_counts(X: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Counts of each integer value 0..levels-1 per column: shape (n_features, levels)."""
    Xi = np.asarray(X).astype(np.int64)
    n_feat = Xi.shape[1]
    flat = Xi + levels * np.arange(n_feat)[None, :]
    return np.bincount(flat.ravel(), minlength=levels * n_feat).reshape(n_feat, levels)


def psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> np.ndarray:
    """PSI per feature from value counts (rows: features): Evidently's one-bin-per-value path.

    Valid when each feature has at most 20 distinct reference values (always true for 0..16 pixels).
    """
    R = np.asarray(ref_counts, float)
    C = np.asarray(cur_counts, float)
    r = R / R.sum(axis=1, keepdims=True)
    c = C / C.sum(axis=1, keepdims=True)
    keys = (R > 0) | (C > 0)  # a bin exists when the value occurs in either sample

    def fill(p):
        nz = np.where(keys & (p > 0), p, np.inf).min(axis=1, keepdims=True)
        eps = np.where(nz <= EMPTY_BIN, nz / 1e6, EMPTY_BIN)
        return np.where(keys & (p == 0), eps, p)

    r, c = fill(r), fill(c)
    terms = np.where(keys, (r - c) * np.log(np.where(keys, r, 1.0) / np.where(keys, c, 1.0)), 0.0)
    return terms.sum(axis=1)


# --------------------------------------------------------------------------- the drifting stream
DIGIT_PAIRS = ((3, 8), (1, 7))  # concept drift: these labels swap meaning
BAND = tuple(8 * r + c for r in (3, 4, 2, 5) for c in range(1, 7))  # middle rows, inner columns first


@dataclass(frozen=True)
class DriftConfig:
    weeks: int = 26
    rows_per_week: int = 400
    drift_kind: str = "covariate"  # covariate | concept | both | none
    drift_start_week: int = 4
    shift_per_week: float = 0.25  # pixel levels added per week of drift
    scale_per_week: float = 0.0  # relative gain per week of drift
    drifted_features: int = 8
    swap_per_week: float = 0.03  # swap probability added per week of drift
    window_weeks: int = 2  # a model trains on this many weeks of labelled rows

    def drift_weeks(self, week: int) -> int:
        return max(0, week - self.drift_start_week)


@functools.lru_cache(maxsize=1)
def digits_pools() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits split 50/50 (fixed, stratified): (X_label, y_label, X_score, y_score).

    Labelled feedback (training) rows and scored production rows come from disjoint halves,
    so a retrained model is never scored on an image it trained on.
    """
    X, y = load_digits(return_X_y=True)
    Xa, Xb, ya, yb = train_test_split(X.astype(np.float64), y, test_size=0.5, random_state=29, stratify=y)
    for a in (Xa, ya, Xb, yb):
        a.flags.writeable = False
    return Xa, ya, Xb, yb


def drifted_batch(cfg: DriftConfig, week: int, X: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """Apply week ``week``'s drift to raw rows: (X', y'). Draws are made even when unused (common numbers)."""
    d = cfg.drift_weeks(week)
    u = rng.random((X.shape[0], len(BAND)))[:, :cfg.drifted_features]  # same draws whatever drifted_features
    flip = rng.random(X.shape[0])
    X, y = X.copy(), y.copy()
    if cfg.drift_kind in ("covariate", "both") and d > 0:
        cols = list(BAND[:cfg.drifted_features])
        v = X[:, cols] * (1 + cfg.scale_per_week * d) + cfg.shift_per_week * d
        X[:, cols] = np.clip(np.floor(v + u), 0, LEVELS - 1)  # stochastic rounding keeps the mean
    if cfg.drift_kind in ("concept", "both") and d > 0:
        q = min(1.0, cfg.swap_per_week * d)
        swap = flip < q
        y0 = y.copy()
        for a, b in DIGIT_PAIRS:
            y[swap & (y0 == a)] = b
            y[swap & (y0 == b)] = a
    return X, y


def make_stream(cfg: DriftConfig, seed_seq: np.random.SeedSequence) -> dict:
    """Labelled weeks -(window-1)..weeks and scored weeks 0..weeks, drawn with their drift.

    Returns {"label": {week: (X, y)}, "score": {week: (X, y)}}; scored week 0 is undrifted
    validation traffic (the model's accuracy at training time).
    """
    Xa, ya, Xb, yb = digits_pools()
    s_label, s_score = seed_seq.spawn(2)
    rl, rs = np.random.default_rng(s_label), np.random.default_rng(s_score)
    n = cfg.rows_per_week
    label, score = {}, {}
    for w in range(-cfg.window_weeks + 1, cfg.weeks + 1):
        i = rl.integers(0, len(Xa), n)
        label[w] = drifted_batch(cfg, w, Xa[i], ya[i], rl)
    for w in range(0, cfg.weeks + 1):
        i = rs.integers(0, len(Xb), n)
        score[w] = drifted_batch(cfg, w, Xb[i], yb[i], rs)
    return {"label": label, "score": score}


def training_set(cfg: DriftConfig, stream: dict, end_week: int) -> tuple[np.ndarray, np.ndarray]:
    """The labelled rows of weeks end_week-window+1 .. end_week (a model trained at the end of end_week)."""
    weeks = range(end_week - cfg.window_weeks + 1, end_week + 1)
    return (np.concatenate([stream["label"][w][0] for w in weeks]),
            np.concatenate([stream["label"][w][1] for w in weeks]))


def fit_model(X: np.ndarray, y: np.ndarray):
    """StandardScaler + multinomial LogisticRegression(C=0.1, tol=1e-3) (lbfgs: deterministic, no seed needed)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    # one BLAS thread: on a shared 2-core machine this is ~8x faster than oversubscribing, and reproducible
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, tol=1e-3, max_iter=200)).fit(X, y)


# --------------------------------------------------------------------------- policies
def run_policy(policy: str, weeks: int, trigger=None, every: int = 0) -> list[int]:
    """Which model serves each production week 1..weeks: a list of training weeks (0 = the original).

    ``never``: the original throughout. ``scheduled``: retrain at the end of every ``every``-th week.
    ``triggered``: at the end of week t, retrain if ``trigger(model_week, t)`` is true (e.g. PSI of
    week t's inputs against that model's training inputs >= threshold). A retrain at the end of week
    t serves from week t+1; nothing is retrained after the last week.
    """
    serving, model = [], 0
    for t in range(1, weeks + 1):
        serving.append(model)
        if t == weeks:
            break
        if policy == "scheduled" and every > 0 and t % every == 0:
            model = t
        elif policy == "triggered" and trigger is not None and trigger(model, t):
            model = t
    return serving


def staleness_days(serving: list[int]) -> np.ndarray:
    """Age of the serving model at each week's midpoint, in days (trained at the end of its week)."""
    t = np.arange(1, len(serving) + 1)
    return 7.0 * (t - np.asarray(serving)) - 3.5
