"""Model extraction, output perturbation and input validation for a served classifier.

The building blocks of an attack on a prediction API and of the usual
defences, written for the 8x8 digits that scikit-learn ships (64 integer
pixels 0..16, 10 classes) but generic in shape. Everything is numpy (and
scikit-learn's Ledoit-Wolf estimator); torch is imported only by
:func:`torch_input_gradient`.

Reference implementations (their parameter names are kept, in snake_case):

* **Extraction** follows the "random" strategy of Knockoff Nets (Orekondy et
  al., CVPR 2019; ART ``art.attacks.extraction.KnockoffNets`` with
  ``sampling_strategy="random"``) and Copycat CNN (ART ``CopycatCNN``): the
  attacker draws inputs from its own distribution, sends them to the victim,
  and trains a "thieved" classifier on the answers (probabilities, or labels
  only). ``nb_stolen`` in ART is the number of queries; here it is the
  ``queries`` axis of a curve. The attacker's inputs are mixups (Zhang et al.,
  2018) of a handful of public images plus pixel noise, or uniform noise
  images for an attacker with no data. The thieved model is a multinomial
  logistic regression (:class:`SoftmaxSurrogate`) trained on soft targets, so
  probabilities carry more information per query than labels, as in Tramèr et
  al., "Stealing Machine Learning Models via Prediction APIs" (USENIX Security
  2016), which also proposed rounding as a defence.
* **Output defences** follow ART's postprocessors
  (``art.defences.postprocessor``): ``ClassLabels`` (only the top label is
  returned), ``Rounded(decimals=3)`` (``np.around`` of the probabilities, no
  renormalisation) and ``GaussianNoise(scale=0.2)`` (add N(0, scale) to each
  probability, set negatives to 0, renormalise). Two deliberate differences:
  a row whose noisy probabilities are all clipped to 0 becomes uniform (ART
  would divide by zero), and ``ClassLabels`` sets one 1 per row (the ART
  version read sets the argmax columns of every row, a bug).
* **Adversarial inputs**: the fast gradient sign method (Goodfellow et al.,
  ICLR 2015) as in ART ``FastGradientMethod(norm=inf, eps, eps_step,
  minimal)`` with ``clip_values=(0, 16)``. With integer ``eps`` the adversarial
  image stays on the integer pixel grid, so it passes a schema check.
* **Input validation**: a schema check (64 features, finite, within
  [0, 16], integer-valued) and an out-of-distribution detector, the squared
  Mahalanobis distance to the training data under a Ledoit-Wolf shrunk
  covariance (``sklearn.covariance.LedoitWolf``), either to one Gaussian or,
  as in Lee et al. (NeurIPS 2018), the smallest distance to ten class means
  under a tied covariance. The threshold is the (1 - fpr) quantile of the
  scores of held-out clean training images.

Results of these pieces are cached by their callers in ``sim.cache.DiskCache``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "N_FEATURES", "N_CLASSES", "PIXEL_LOW", "PIXEL_HIGH", "CHUNK", "QUERY_KINDS",
    "digits_split", "QueryStream", "chunked_rows", "OutputPolicy", "to_targets",
    "MahalanobisDetector", "InputValidator", "ACCEPTED", "SCHEMA", "OOD",
    "SoftmaxSurrogate", "SurrogateEnsemble", "steps_for", "queries_to_reach", "learning_curve",
    "fgsm", "fgsm_minimal", "torch_input_gradient", "logreg_input_gradient",
    "natural_patches", "noise_images", "out_of_range_inputs", "random_perturbation", "validator_report",
    "expected_calibration_error", "brier_score", "threshold_band",
]

N_FEATURES = 64
N_CLASSES = 10
PIXEL_LOW, PIXEL_HIGH = 0, 16
CHUNK = 100_000  # queries per generated chunk (one named random stream each)
QUERY_KINDS = ("public_mix", "synthetic")
SPLIT_SEED, TEST_SIZE = 0, 0.25  # the same split as sim.models.digits_split


# --------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, X_test, y_train, y_test)``: the same split as ``sim.models.digits_split``
    (stratified 75/25, ``random_state=0``), computed without importing torch."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    parts = train_test_split(X.astype(np.float32), y.astype(np.int64), test_size=TEST_SIZE,
                             random_state=SPLIT_SEED, stratify=y)
    for a in parts:
        a.flags.writeable = False
    return tuple(parts)  # type: ignore[return-value]


# --------------------------------------------------------------------------- the attacker's queries
class QueryStream:
    """The attacker's queries in sending order, as uint8 pixel rows.

    Query ``i`` lives in chunk ``i // CHUNK``; each chunk is drawn from its own
    generator ``rng_for(chunk)``, so any range of queries can be regenerated
    without drawing the ones before it, and every arm sees the same queries.

    ``kind``:
      * ``"public_mix"``: the attacker holds ``public`` (a few unlabeled
        in-distribution images). Each query mixes two of them,
        ``lam * a + (1 - lam) * b`` with ``lam ~ U(0, 1)`` (mixup), adds
        ``N(0, query_noise)`` pixel noise, and rounds and clips to the schema
        (integers 0..16), as a careful attacker would.
      * ``"synthetic"``: an attacker with no data sends uniform random
        integer images.
    """

    def __init__(self, kind: str, rng_for: Callable[[int], np.random.Generator],
                 public: np.ndarray | None = None, query_noise: float = 0.0, chunk: int = CHUNK):
        if kind not in QUERY_KINDS:
            raise ValueError(f"unknown query kind {kind!r}; choose from {QUERY_KINDS}")
        if kind == "public_mix" and (public is None or len(public) < 1):
            raise ValueError("public_mix needs at least one public image")
        self.kind, self.rng_for, self.query_noise, self.chunk_size = kind, rng_for, float(query_noise), int(chunk)
        self.public = None if public is None else np.asarray(public, dtype=np.float64)
        self._memo: dict[int, np.ndarray] = {}

    def chunk(self, c: int) -> np.ndarray:
        got = self._memo.get(c)
        if got is None:
            got = self._draw(self.rng_for(c), self.chunk_size)
            if len(self._memo) >= 2:
                self._memo.pop(next(iter(self._memo)))
            self._memo[c] = got
        return got

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "synthetic":
            return rng.integers(PIXEL_LOW, PIXEL_HIGH + 1, size=(n, N_FEATURES), dtype=np.uint8)
        m = len(self.public)
        a = self.public[rng.integers(0, m, n)]
        b = self.public[rng.integers(0, m, n)]
        lam = rng.random((n, 1))
        x = lam * a + (1.0 - lam) * b
        if self.query_noise > 0:
            x += rng.normal(0.0, self.query_noise, size=x.shape)
        return np.clip(np.rint(x), PIXEL_LOW, PIXEL_HIGH).astype(np.uint8)

    def take(self, start: int, stop: int) -> np.ndarray:
        """Queries ``start .. stop-1``."""
        if stop <= start:
            return np.empty((0, N_FEATURES), dtype=np.uint8)
        parts = []
        for c in range(start // self.chunk_size, (stop - 1) // self.chunk_size + 1):
            lo = max(start, c * self.chunk_size) - c * self.chunk_size
            hi = min(stop, (c + 1) * self.chunk_size) - c * self.chunk_size
            parts.append(self.chunk(c)[lo:hi])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def chunked_rows(store: dict, idx: np.ndarray, load: Callable[[int], np.ndarray], chunk: int = CHUNK,
                 keep: int = 2) -> np.ndarray:
    """Rows ``idx`` of a long array held chunk by chunk: ``load(c)`` gives chunk ``c`` (rows
    ``c * chunk ..``), ``store`` memoises at most ``keep`` chunks (oldest dropped first)."""
    idx = np.asarray(idx)
    chunks = idx // chunk
    out = None
    for c in np.unique(chunks).tolist():
        if c not in store:
            while len(store) >= keep:
                store.pop(next(iter(store)))
            store[c] = load(c)
        sel = chunks == c
        if out is None:
            out = np.empty((len(idx),) + store[c].shape[1:], dtype=np.float64)
        out[sel] = store[c][idx[sel] - c * chunk]
    return np.empty((0, N_CLASSES)) if out is None else out


# --------------------------------------------------------------------------- output defences
@dataclass(frozen=True)
class OutputPolicy:
    """What the API returns for the victim's probabilities (ART postprocessor semantics).

    Applied in this order: ``GaussianNoise(scale=noise_scale)`` if
    ``noise_scale > 0``, then ``Rounded(decimals)`` if ``decimals`` is not
    None; ``labels_only`` (``ClassLabels``) replaces all of it with a one-hot
    top label.
    """

    labels_only: bool = False
    decimals: int | None = None
    noise_scale: float = 0.0

    @property
    def uses_noise(self) -> bool:
        return (not self.labels_only) and self.noise_scale > 0

    def apply(self, proba: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Answers for rows of probabilities; ``noise`` holds standard normals of the same shape."""
        P = np.asarray(proba, dtype=np.float64)
        if self.labels_only:
            out = np.zeros_like(P)
            out[np.arange(len(P)), P.argmax(axis=1)] = 1.0
            return out
        if self.noise_scale > 0:
            if noise is None or noise.shape != P.shape:
                raise ValueError("noise must be standard normals shaped like proba")
            P = P + self.noise_scale * noise
            P[P < 0.0] = 0.0
            sums = P.sum(axis=1, keepdims=True)
            empty = sums[:, 0] <= 0
            if empty.any():  # every class clipped to 0: answer uniform (ART would divide by zero)
                P[empty] = 1.0
                sums[empty] = P.shape[1]
            P = P / sums
        if self.decimals is not None:
            P = np.around(P, self.decimals)
        return P


def to_targets(answers: np.ndarray) -> np.ndarray:
    """The attacker's training targets from API answers: clipped at 0 and renormalised rows
    (rounded answers need not sum to 1; an all-zero row becomes uniform)."""
    A = np.clip(np.asarray(answers, dtype=np.float64), 0.0, None)
    s = A.sum(axis=1, keepdims=True)
    empty = s[:, 0] <= 0
    if empty.any():
        A[empty] = 1.0
        s[empty] = A.shape[1]
    return A / s


# --------------------------------------------------------------------------- input validation
class MahalanobisDetector:
    """Squared Mahalanobis distance to the training data, Ledoit-Wolf shrunk covariance.

    ``class_conditional=False``: one Gaussian (mean and covariance of all
    training rows). ``True``: ten class means with one tied covariance of the
    within-class residuals, score = the smallest distance to a class mean
    (Lee et al. 2018 use the same form on network features).
    Scoring whitens once (``X @ L`` with ``L L^T`` the precision), so a million
    rows cost one (n x 64) @ (64 x 64) product.
    """

    def __init__(self, class_conditional: bool = False):
        self.class_conditional = bool(class_conditional)

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "MahalanobisDetector":
        from sklearn.covariance import LedoitWolf

        X = np.asarray(X, dtype=np.float64)
        if self.class_conditional:
            if y is None:
                raise ValueError("a class-conditional detector needs labels")
            y = np.asarray(y)
            classes = np.unique(y)
            means = np.stack([X[y == c].mean(axis=0) for c in classes])
            resid = X - means[np.searchsorted(classes, y)]
            lw = LedoitWolf(assume_centered=True).fit(resid)
        else:
            means = X.mean(axis=0, keepdims=True)
            lw = LedoitWolf().fit(X)
        self.shrinkage_ = float(lw.shrinkage_)
        precision = (lw.precision_ + lw.precision_.T) / 2
        self.whiten_ = np.linalg.cholesky(precision)  # precision = L L^T, distance = ||(x - m) L||^2
        self.means_w_ = means @ self.whiten_
        self.means_sq_ = np.sum(self.means_w_ ** 2, axis=1)
        return self

    def score(self, X: np.ndarray, block: int = 200_000) -> np.ndarray:
        X = np.asarray(X)
        out = np.empty(len(X))
        for s in range(0, len(X), block):
            Z = np.asarray(X[s:s + block], dtype=np.float64) @ self.whiten_
            d = np.sum(Z ** 2, axis=1, keepdims=True) - 2.0 * Z @ self.means_w_.T + self.means_sq_
            out[s:s + block] = np.maximum(d.min(axis=1), 0.0)
        return out


ACCEPTED, SCHEMA, OOD = 0, 1, 2


@dataclass
class InputValidator:
    """Schema/range checks, then an out-of-distribution detector with a calibrated threshold."""

    detector: MahalanobisDetector | None
    threshold: float = math.inf
    n_features: int = N_FEATURES
    low: float = PIXEL_LOW
    high: float = PIXEL_HIGH
    integer: bool = True

    @classmethod
    def calibrated(cls, X_fit, y_fit, X_cal, fpr: float, class_conditional: bool = False) -> "InputValidator":
        """Fit the detector on ``X_fit`` and set the threshold so a share ``fpr`` of ``X_cal`` is flagged."""
        if not 0 < fpr < 1:
            raise ValueError("fpr must be in (0, 1)")
        det = MahalanobisDetector(class_conditional).fit(X_fit, y_fit)
        thr = float(np.quantile(det.score(X_cal), 1.0 - fpr, method="higher"))
        return cls(det, thr)

    def schema_ok(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            return np.zeros(len(X) if X.ndim >= 1 else 1, dtype=bool)
        ok = np.all(np.isfinite(X), axis=1)
        with np.errstate(invalid="ignore"):
            ok &= np.all((X >= self.low) & (X <= self.high), axis=1)
            if self.integer:
                ok &= np.all(X == np.round(X), axis=1)
        return ok

    def check(self, X) -> np.ndarray:
        """Per row: ``ACCEPTED`` (0), ``SCHEMA`` (1, refused by the schema/range check) or ``OOD`` (2)."""
        ok = self.schema_ok(X)
        codes = np.where(ok, ACCEPTED, SCHEMA).astype(np.int8)
        if self.detector is not None and ok.any():
            rows = np.asarray(X)[ok]
            codes[np.flatnonzero(ok)[self.detector.score(rows) > self.threshold]] = OOD
        return codes

    def accepts(self, X) -> np.ndarray:
        return self.check(X) == ACCEPTED


# --------------------------------------------------------------------------- the attacker's copy
def steps_for(n: int, epochs: float = 5.0, batch_size: int = 256, min_steps: int = 100,
              max_steps: int = 800) -> int:
    """Adam steps the attacker spends after its training set reaches ``n`` answers."""
    return int(np.clip(math.ceil(epochs * n / batch_size), min_steps, max_steps)) if n > 0 else 0


class SurrogateEnsemble:
    """``R`` independent copies of the attacker's model trained side by side on the same answers.

    Each copy is a multinomial logistic regression trained with Adam on (soft) targets: inputs
    scaled to [0, 1] (the attacker knows the schema's range), cross-entropy against the target
    distribution plus ``l2 / 2 * ||W||^2``, training continued as answers arrive, predictions from
    an exponential moving average of the weights (Polyak averaging). Replicate ``r`` draws its
    minibatches from its own generator ``rngs[r]`` (name them, e.g. ``surrogate/rep3``, so
    replicate r is the same whatever R); the update is vectorised over replicates. Averaging the
    replicates' accuracy curves damps the training noise that makes one copy's curve jumpy.
    """

    def __init__(self, rngs, n_features: int = N_FEATURES, n_classes: int = N_CLASSES,
                 lr: float = 0.01, l2: float = 1e-4, batch_size: int = 256, ema: float = 0.98,
                 scale: float = 1.0 / PIXEL_HIGH):
        self.rngs = list(rngs)
        R = len(self.rngs)
        if R < 1:
            raise ValueError("an ensemble needs at least one generator")
        self.lr, self.l2, self.batch_size, self.ema, self.scale = lr, l2, batch_size, ema, scale
        self.W = np.zeros((R, n_features, n_classes))
        self.b = np.zeros((R, 1, n_classes))
        self._mW, self._vW = np.zeros_like(self.W), np.zeros_like(self.W)
        self._mb, self._vb = np.zeros_like(self.b), np.zeros_like(self.b)
        self.W_avg, self.b_avg = self.W.copy(), self.b.copy()
        self.t = 0

    @property
    def replicates(self) -> int:
        return len(self.rngs)

    def train(self, X: np.ndarray, T: np.ndarray, steps: int) -> None:
        n = len(X)
        if n == 0 or steps <= 0:
            return
        b1, b2, eps = 0.9, 0.999, 1e-8
        bs = min(self.batch_size, n)
        for _ in range(steps):
            idx = np.stack([g.integers(0, n, bs) for g in self.rngs])  # (R, bs)
            f = X[idx].astype(np.float64) * self.scale  # (R, bs, F)
            z = f @ self.W + self.b
            z -= z.max(axis=2, keepdims=True)
            e = np.exp(z)
            e /= e.sum(axis=2, keepdims=True)
            r = (e - T[idx]) / bs
            gW = f.transpose(0, 2, 1) @ r + self.l2 * self.W
            gb = r.sum(axis=1, keepdims=True)
            self.t += 1
            c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
            for p, g, m, v in ((self.W, gW, self._mW, self._vW), (self.b, gb, self._mb, self._vb)):
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                p -= self.lr * (m / c1) / (np.sqrt(v / c2) + eps)
            self.W_avg *= self.ema
            self.W_avg += (1 - self.ema) * self.W
            self.b_avg *= self.ema
            self.b_avg += (1 - self.ema) * self.b

    def decision(self, X: np.ndarray) -> np.ndarray:
        """``(R, n, classes)`` scores."""
        R = self.replicates
        if self.t == 0:
            return np.zeros((R, len(X), self.W.shape[2]))
        corr = 1.0 - self.ema ** self.t
        f = np.asarray(X, dtype=np.float64) * self.scale
        return f[None] @ (self.W_avg / corr) + self.b_avg / corr

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``(R, n)`` labels, one row per replicate."""
        return self.decision(X).argmax(axis=2)


class SoftmaxSurrogate(SurrogateEnsemble):
    """One copy: the ensemble with a single generator, scores and labels without the replicate axis."""

    def __init__(self, rng: np.random.Generator, **kw):
        super().__init__([rng], **kw)

    def decision(self, X: np.ndarray) -> np.ndarray:
        return super().decision(X)[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision(X).argmax(axis=1)


def queries_to_reach(queries, values, target: float) -> tuple[float, bool]:
    """First point where ``values`` reaches ``target``, interpolated linearly in log(queries)
    between the grid point before and the first one at or above the target.
    Returns ``(queries, reached)``; not reached gives ``(nan, False)``."""
    q = np.asarray(queries, dtype=float)
    v = np.asarray(values, dtype=float)
    hit = np.flatnonzero(v >= target)
    if hit.size == 0:
        return math.nan, False
    i = int(hit[0])
    if i == 0:
        return float(q[0]), True
    v0, v1 = v[i - 1], v[i]
    frac = (target - v0) / (v1 - v0) if v1 > v0 else 1.0
    if frac >= 1.0:
        return float(q[i]), True
    return float(np.exp(np.log(q[i - 1]) + frac * (np.log(q[i]) - np.log(q[i - 1])))), True


def learning_curve(stream: "QueryStream", answer: Callable[[np.ndarray], np.ndarray], grid, X_eval, y_eval,
                   reference, rngs, target: float, min_end: int,
                   accept: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """The attacker's copy learning as answers arrive: accuracy and fidelity after each grid point.

    Queries ``0 .. grid[-1]`` are sent in order, chunk by chunk (bounded memory at millions of
    queries); ``accept(rows)`` (an input validator) may refuse some, which count as sent but get
    no answer; ``answer(idx)`` returns the attacker's training targets for accepted queries
    ``idx``. After each grid point a :class:`SurrogateEnsemble` (one copy per generator in
    ``rngs``) trains ``steps_for(answers)`` more steps; the curve records the copies' mean (and
    sd) accuracy on ``(X_eval, y_eval)`` and agreement with ``reference`` (the victim's labels).
    It stops after ``min_end`` queries once both have reached ``target``.
    """
    surrogate = SurrogateEnsemble(rngs)
    Xs = np.empty((min(grid[-1], max(min_end, CHUNK)), N_FEATURES), dtype=np.uint8)
    Ts = np.empty((len(Xs), N_CLASSES))
    out = {k: [] for k in ("queries", "answered", "accuracy", "fidelity", "accuracy_sd", "fidelity_sd")}
    n = sent = 0
    reached_acc = reached_fid = False
    for q in grid:
        for start in range(sent, q, CHUNK):
            stop = min(q, (start // CHUNK + 1) * CHUNK)
            rows, idx = stream.take(start, stop), np.arange(start, stop)
            if accept is not None:
                ok = accept(rows)
                rows, idx = rows[ok], idx[ok]
            if idx.size:
                if n + idx.size > len(Xs):
                    grow = max(n + idx.size, 2 * len(Xs))
                    Xs = np.concatenate([Xs[:n], np.empty((grow - n, N_FEATURES), dtype=np.uint8)])
                    Ts = np.concatenate([Ts[:n], np.empty((grow - n, N_CLASSES))])
                Xs[n:n + idx.size], Ts[n:n + idx.size] = rows, answer(idx)
                n += idx.size
        sent = q
        surrogate.train(Xs[:n], Ts[:n], steps_for(n))
        pred = surrogate.predict(X_eval)
        accs, fids = np.mean(pred == y_eval, axis=1), np.mean(pred == reference, axis=1)
        acc, fid = float(np.mean(accs)), float(np.mean(fids))
        reached_acc |= acc >= target
        reached_fid |= fid >= target
        for k, v in (("queries", q), ("answered", n), ("accuracy", acc), ("fidelity", fid),
                     ("accuracy_sd", float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0),
                     ("fidelity_sd", float(np.std(fids, ddof=1)) if len(fids) > 1 else 0.0)):
            out[k].append(v)
        if q >= min_end and reached_acc and reached_fid:
            break
    out["n_eval"], out["replicates"] = int(len(y_eval)), surrogate.replicates
    return out


# --------------------------------------------------------------------------- adversarial inputs
def fgsm(X: np.ndarray, grad: np.ndarray, eps: float, low: float = PIXEL_LOW, high: float = PIXEL_HIGH) -> np.ndarray:
    """FGSM, L-infinity: ``clip(X + eps * sign(grad of the loss), low, high)``."""
    return np.clip(np.asarray(X, dtype=np.float64) + eps * np.sign(grad), low, high)


def fgsm_minimal(X, y, grad, predict: Callable[[np.ndarray], np.ndarray], eps: float, eps_step: float = 1.0,
                 low: float = PIXEL_LOW, high: float = PIXEL_HIGH) -> tuple[np.ndarray, np.ndarray]:
    """ART's ``minimal=True``: per input, the smallest ``eps_step`` multiple up to ``eps`` whose FGSM
    image changes the prediction away from ``y`` (the sign of the gradient at the clean input is
    kept). Inputs never fooled get ``eps``. Returns (adversarial images, eps used)."""
    X = np.asarray(X, dtype=np.float64)
    adv = X.copy()
    used = np.full(len(X), np.nan)
    todo = np.ones(len(X), dtype=bool)
    e = eps_step
    while e <= eps + 1e-9 and todo.any():
        cand = fgsm(X[todo], grad[todo], e, low, high)
        fooled = predict(cand.astype(np.float32)) != np.asarray(y)[todo]
        rows = np.flatnonzero(todo)
        adv[rows[fooled]] = cand[fooled]
        used[rows[fooled]] = e
        todo[rows[fooled]] = False
        e += eps_step
    if todo.any():
        adv[todo] = fgsm(X[todo], grad[todo], eps, low, high)
        used[todo] = eps
    return adv, used


def torch_input_gradient(module, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(cross-entropy)/d(input) of a torch classifier returning logits (single thread)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.tensor(np.array(X, dtype=np.float32), requires_grad=True)
        target = torch.tensor(np.array(y, dtype=np.int64))
        loss = torch.nn.functional.cross_entropy(module(x), target, reduction="sum")
        loss.backward()
        return x.grad.numpy().astype(np.float64)
    finally:
        torch.set_num_threads(old)


def logreg_input_gradient(pipeline, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Closed form for StandardScaler + LogisticRegression (multinomial):
    ``(softmax - onehot) @ coef / scale``."""
    scaler, clf = pipeline[0], pipeline[-1]
    P = pipeline.predict_proba(X)
    onehot = np.zeros_like(P)
    onehot[np.arange(len(P)), np.searchsorted(clf.classes_, y)] = 1.0
    return ((P - onehot) @ clf.coef_) / scaler.scale_


# --------------------------------------------------------------------------- inputs that are not digits
def natural_patches(rng: np.random.Generator, n: int) -> np.ndarray:
    """8x8 grey patches of scikit-learn's two sample photographs (china.jpg, flower.jpg):
    random 32x32 windows averaged in 4x4 blocks, scaled to integers 0..16."""
    from sklearn.datasets import load_sample_images

    grey = [img.mean(axis=2) for img in load_sample_images().images]
    out = np.empty((n, N_FEATURES))
    which = rng.integers(0, len(grey), n)
    for k in range(n):
        g = grey[which[k]]
        r, c = rng.integers(0, g.shape[0] - 32), rng.integers(0, g.shape[1] - 32)
        out[k] = g[r:r + 32, c:c + 32].reshape(8, 4, 8, 4).mean(axis=(1, 3)).ravel()
    return np.rint(out / 255.0 * PIXEL_HIGH)


def noise_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform random integer images 0..16 (valid schema, no structure)."""
    return rng.integers(PIXEL_LOW, PIXEL_HIGH + 1, size=(n, N_FEATURES)).astype(np.float64)


def out_of_range_inputs(rng: np.random.Generator, X: np.ndarray, n: int) -> np.ndarray:
    """Inputs a buggy or hostile client might send, each violating the schema in one way:
    digits on a 0..255 scale, a few negative pixels, a pixel NaN or infinite, fractional values."""
    X = np.asarray(X, dtype=np.float64)
    rows = X[rng.integers(0, len(X), n)].copy()
    kind = np.arange(n) % 4
    cols = rng.integers(0, N_FEATURES, n)
    rows[kind == 0] = np.rint(rows[kind == 0] * 255.0 / PIXEL_HIGH)
    rows[kind == 0, 36] = 255.0  # a centre pixel is always lit on that scale
    rows[kind == 1, cols[kind == 1]] = -rng.integers(1, 17, int(np.sum(kind == 1)))
    rows[kind == 2, cols[kind == 2]] = np.where(rng.random(int(np.sum(kind == 2))) < 0.5, np.nan, np.inf)
    rows[kind == 3] = np.clip(rows[kind == 3] + rng.uniform(-0.49, 0.49, (int(np.sum(kind == 3)), N_FEATURES)),
                              PIXEL_LOW + 0.01, PIXEL_HIGH - 0.01)
    return rows


def random_perturbation(rng: np.random.Generator, X: np.ndarray, eps: float) -> np.ndarray:
    """A non-adversarial control: +-eps on every pixel with random signs, clipped."""
    X = np.asarray(X, dtype=np.float64)
    return np.clip(X + eps * rng.choice([-1.0, 1.0], size=X.shape), PIXEL_LOW, PIXEL_HIGH)


def validator_report(check: Callable[[np.ndarray], np.ndarray], predict: Callable[[np.ndarray], np.ndarray],
                     X: np.ndarray, y: np.ndarray, grad: np.ndarray, eps: float, minimal: bool,
                     rng: np.random.Generator, n_ood: int = 1000) -> dict:
    """Counts of what an input validator (``check`` -> codes) flags, per family of inputs.

    Families: the clean rows ``X`` (false positives), schema violations, noise images, natural
    patches (``n_ood`` each), random +-eps perturbations, and FGSM images (``grad`` the loss's input
    gradient, ``minimal`` as in ART) that fool ``predict`` on rows it classified correctly; only
    those count as adversarial. Each family is ``{"n": ..., "flagged": ...}``.
    """
    def flagged(rows) -> dict:
        codes = check(rows)
        return {"n": int(len(codes)), "flagged": int(np.sum(codes != ACCEPTED))}

    correct = predict(X) == y
    if minimal:
        adv, eps_used = fgsm_minimal(X, y, grad, predict, eps)
    else:
        adv, eps_used = fgsm(X, grad, eps), np.full(len(X), float(eps))
    fooled = correct & (predict(adv.astype(np.float32)) != y)
    passed = check(adv) == ACCEPTED
    return {
        "clean": flagged(X),
        "out_of_range": flagged(out_of_range_inputs(rng, X, n_ood)),
        "noise_images": flagged(noise_images(rng, n_ood)),
        "natural_patches": flagged(natural_patches(rng, n_ood)),
        "random_perturbation": flagged(random_perturbation(rng, X, eps)),
        "adversarial": {"n": int(fooled.sum()), "flagged": int(np.sum(fooled & ~passed)),
                        "attempted": int(correct.sum()), "fooled": int(fooled.sum()),
                        "fooled_and_passed": int(np.sum(fooled & passed)),
                        "mean_eps": float(np.mean(eps_used[fooled])) if fooled.any() else None},
    }


# --------------------------------------------------------------------------- utility measures
def expected_calibration_error(P: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence (equal-width bins on (0, 1]), as a fraction."""
    P = np.asarray(P, dtype=np.float64)
    conf = P.max(axis=1)
    correct = (P.argmax(axis=1) == np.asarray(y)).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return total / len(P)


def brier_score(P: np.ndarray, y: np.ndarray) -> float:
    """Mean over rows of sum_k (p_k - 1[k = y])^2 (0 best, 2 worst)."""
    P = np.asarray(P, dtype=np.float64)
    onehot = np.zeros_like(P)
    onehot[np.arange(len(P)), np.asarray(y)] = 1.0
    return float(np.mean(np.sum((P - onehot) ** 2, axis=1)))


def threshold_band(queries, values, target: float, n_eval: int, sd=None,
                   replicates: int = 1) -> tuple[float, bool, tuple[float, float]]:
    """Where a mean learning curve first reaches ``target``, and a 95% interval for that point.

    ``values`` is the mean over ``replicates`` copies of a share measured on ``n_eval`` items
    (``sd`` their spread per grid point). The curve's band adds, in quadrature, the evaluation
    set's sampling error (Wilson) and the replicates' error (1.96 sd / sqrt(R)); the interval is
    where the upper band first crosses the target (early end) and where the lower band does (late
    end). Returns ``(queries, reached, (low, high))``; an end the band never reaches is NaN, and
    a curve that never reaches the target gives ``(nan, False, (low, nan))``.
    """
    from .metrics import wilson

    q, v = np.asarray(queries, dtype=float), np.asarray(values, dtype=float)
    sd = np.zeros(len(v)) if sd is None else np.asarray(sd, dtype=float)
    rep_half = 1.96 * sd / math.sqrt(replicates) if replicates > 1 else np.zeros(len(v))
    band = np.array([[b.low, b.high] for b in (wilson(x * n_eval, n_eval) for x in v)])
    upper = v + np.hypot(band[:, 1] - v, rep_half)
    lower = v - np.hypot(v - band[:, 0], rep_half)
    value, reached = queries_to_reach(q, v, target)
    early, _ = queries_to_reach(q, upper, target)
    late, _ = queries_to_reach(q, lower, target)
    return float(value), reached, (float(early), float(late))
