"""Real small models, trained here, for the labs' inference times and accuracy.

Four models, all classifying the 8x8 handwritten digits that scikit-learn
ships (``sklearn.datasets.load_digits``: 1797 images, 64 pixel features 0..16,
10 classes), so nothing is downloaded:

===========  =========  ====================================================
name         family     what
===========  =========  ====================================================
``mlp``      torch      MLP 64 -> H -> H -> 10 (ReLU), Adam, standardised
                        inputs (the scaler lives inside the module as buffers);
                        hidden width H = 256 by default, any of ``MLP_WIDTHS``
``mlp_int8`` torch      ``mlp`` after dynamic INT8 quantisation of its Linear
                        layers (``torch.ao.quantization.quantize_dynamic``)
``logreg``   sklearn    StandardScaler + LogisticRegression
``forest``   sklearn    RandomForestClassifier, 200 trees
===========  =========  ====================================================

All four use one fixed, stratified train/test split (75/25, ``SPLIT_SEED``),
independent of the model ``seed``: the seed changes weight initialisation,
shuffling and bootstrap samples, never the 450 test images, so accuracies of
different seeds are comparable. ``TrainedModel.X_test`` holds the raw pixel
values (float32); every ``predict`` takes raw pixels and does its own
preprocessing, as a served model would.

Training is deterministic for a given seed: ``torch.manual_seed`` (inside
``torch.random.fork_rng`` so the caller's global RNG is untouched), a seeded
shuffling generator, scikit-learn ``random_state``, and a single thread for
torch and for BLAS (see :func:`sim.profiles.torch_threads` for why).

Caching
-------
``get_model(name, seed)`` trains a model once and then reuses it: in this
process (``functools.lru_cache``) and on disk through ``sim.cache.DiskCache``
(``CACHE``), keyed by name, seed and training recipe and by the bytes of this
file, so an edited recipe never reads an old model. torch weights are read
with ``torch.load(weights_only=True)``; scikit-learn pickles are unpickled only
when their bytes match the SHA-256 in the entry's manifest; a loaded model must
reproduce the manifest's test accuracy. Any failure retrains, never crashes.
``mlp_int8`` is re-quantised from the cached ``mlp`` (a few milliseconds).

``TRAIN_COUNTS`` counts trainings in this process (tests use it to tell a
cache hit from a retrain).
"""
from __future__ import annotations

import collections
import functools
import io
import math
import pickle
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from .cache import DiskCache, cache_root
from sim.profiles import (  # re-exported: the model layer's public API
    DEFAULT_BATCH_SIZES,
    Profile,
    load_reference_profile,
    measure_profile,
    torch_threads,
)

__all__ = [
    "MODEL_NAMES",
    "TrainedModel",
    "get_model",
    "cache_root",
    "cache_entry",
    "CACHE",
    "clear_memory_cache",
    "digits_split",
    "Profile",
    "measure_profile",
    "load_reference_profile",
    "measure_on_this_machine",
    "DEFAULT_MEASURE",
    "MLP_WIDTHS",
    "measure_plan",
    "profile_here",
    "TRAIN_COUNTS",
]

MODEL_NAMES = ("mlp", "mlp_int8", "logreg", "forest")
SPLIT_SEED = 0
TEST_SIZE = 0.25

# MLP training recipe (~1 s on one quiet core; 97.5-98.4% test accuracy, seeds 0-5)
MLP_HIDDEN = 256
#: Hidden widths the labs use (``get_model("mlp", hidden=...)``); 256 is the default model.
MLP_WIDTHS = (256, 1024, 2048)
MLP_EPOCHS = 20
MLP_BATCH = 128
MLP_LR = 1e-3
FOREST_TREES = 200
LOGREG_MAX_ITER = 2000


def _recipe(name: str, hidden: int = MLP_HIDDEN) -> dict[str, Any]:
    """What a cached model was trained with; a manifest whose recipe differs
    (e.g. after a change to the constants above) is not loaded: retrain."""
    common = {"data": "load_digits", "split_seed": SPLIT_SEED, "test_size": TEST_SIZE}
    if name == "mlp":
        return {**common, "hidden": int(hidden), "epochs": MLP_EPOCHS, "batch": MLP_BATCH,
                "lr": MLP_LR, "optimizer": "adam"}
    if name == "logreg":
        return {**common, "scaler": True, "max_iter": LOGREG_MAX_ITER}
    if name == "forest":
        return {**common, "n_estimators": FOREST_TREES}
    raise KeyError(name)


#: Default (repeats, warmup) per model for live measurement: the forest is two
#: orders of magnitude slower per call than the others, so it gets fewer
#: repeats. All four together take under 20 s on a 2-core machine.
DEFAULT_MEASURE = {"mlp": (200, 20), "mlp_int8": (200, 20), "logreg": (200, 20), "forest": (25, 2)}

#: How many times each model was trained in this process (cache misses).
TRAIN_COUNTS: collections.Counter[str] = collections.Counter()


# --------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, X_test, y_train, y_test)`` of the digits, float32 pixels
    0..16, the fixed stratified 75/25 split. Arrays are read-only."""
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    y = y.astype(np.int64)
    parts = train_test_split(X, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y)
    for a in parts:
        a.flags.writeable = False
    return tuple(parts)  # type: ignore[return-value]


# --------------------------------------------------------------------------- the model object
@dataclass(eq=False)
class TrainedModel:
    """A trained classifier plus what the labs need to know about it.

    ``predict(X)`` returns integer labels, ``predict_proba(X)`` an
    ``(n, 10)`` array of class probabilities; both take raw pixel rows
    (shape ``(n, 64)``, or one row of shape ``(64,)``).
    """

    name: str
    family: str  # "torch" or "sklearn"
    accuracy: float  # on X_test
    n_params: int  # weights+biases; for the forest: total tree nodes
    size_bytes: int  # serialised size (state_dict or pickle)
    seed: int
    train_seconds: float  # wall time of training (as recorded when trained)
    from_cache: bool  # loaded from disk rather than trained in this call
    X_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    estimator: Any = field(repr=False)  # nn.Module or sklearn estimator
    _proba: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    _predict: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    hidden: int | None = None  # the mlp's hidden width (None for the scikit-learn models)

    def predict(self, X) -> np.ndarray:
        return self._predict(_as_rows(X))

    def predict_proba(self, X) -> np.ndarray:
        return self._proba(_as_rows(X))

    def score(self, X=None, y=None) -> float:
        """Accuracy on (X, y), default the test split."""
        X = self.X_test if X is None else X
        y = self.y_test if y is None else y
        return float(np.mean(self.predict(X) == np.asarray(y)))


def _as_rows(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X.reshape(1, -1) if X.ndim == 1 else X


# --------------------------------------------------------------------------- torch MLP
class DigitsMLP(nn.Module):
    """64 -> 256 -> 256 -> 10 with ReLU; standardisation built in as buffers."""

    def __init__(self, n_in: int = 64, hidden: int = MLP_HIDDEN, n_out: int = 10):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("scale", torch.ones(n_in))
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.scale)


def _train_mlp(seed: int, hidden: int = MLP_HIDDEN) -> DigitsMLP:
    X_train, _, y_train, _ = digits_split()
    with torch.random.fork_rng(devices=[]), torch_threads(1):
        torch.manual_seed(seed)
        model = DigitsMLP(hidden=hidden)
        xt = torch.from_numpy(np.array(X_train))
        yt = torch.from_numpy(np.array(y_train))
        std = xt.std(dim=0, unbiased=False)
        model.mean.copy_(xt.mean(dim=0))
        model.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))  # constant pixels
        adam = _Adam(list(model.parameters()), lr=MLP_LR)
        loss_fn = nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(MLP_EPOCHS):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), MLP_BATCH):
                idx = order[i : i + MLP_BATCH]
                adam.zero_grad()
                loss_fn(model(xt[idx]), yt[idx]).backward()
                adam.step()
    model.eval()
    return model


class _Adam:
    """Adam (Kingma & Ba), the same update as ``torch.optim.Adam`` with its
    defaults (betas 0.9/0.999, eps 1e-8, bias correction, no weight decay).

    Written out because ``torch.optim`` optimizers import ``torch._dynamo`` on
    their first call, which costs 2-4 s of a cold start on a small CPU box —
    longer than training this MLP. The update itself is four lines.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)  # first moment
            v.mul_(b2).addcmul_(g, g, value=1 - b2)  # second moment
            denom = (v.sqrt() / bc2**0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / bc1)


def _quantize(model: nn.Module) -> nn.Module:
    """Dynamic INT8 quantisation of every nn.Linear (weights int8, activations
    quantised on the fly per call). torch 2.13 still ships
    ``torch.ao.quantization.quantize_dynamic`` but flags it deprecated in favour
    of the separate ``torchao`` package, which ArchLab does not depend on; the
    deprecation warnings are silenced here."""
    import copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        with torch_threads(1):
            q = quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    q.eval()
    return q


def _tensor(X: np.ndarray) -> torch.Tensor:
    # torch.from_numpy shares memory and warns on read-only arrays (X_test is one)
    return torch.from_numpy(X if X.flags.writeable else X.copy())


def _torch_fns(module: nn.Module):
    def proba(X: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(module(_tensor(X)), dim=1).numpy()

    def predict(X: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(_tensor(X)).argmax(dim=1).numpy()

    return proba, predict


def _state_dict_bytes(module: nn.Module) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(module.state_dict(), buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- sklearn models
def _train_logreg(seed: int):
    X_train, _, y_train, _ = digits_split()
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=LOGREG_MAX_ITER, random_state=seed))
    return est.fit(X_train, y_train)


def _train_forest(seed: int):
    X_train, _, y_train, _ = digits_split()
    est = RandomForestClassifier(n_estimators=FOREST_TREES, random_state=seed, n_jobs=1)
    return est.fit(X_train, y_train)


_SKLEARN_TRAINERS = {"logreg": _train_logreg, "forest": _train_forest}
_SKLEARN_TYPES = {"logreg": "Pipeline", "forest": "RandomForestClassifier"}


def _sklearn_n_params(name: str, est) -> int:
    if name == "logreg":
        clf = est[-1]
        return int(clf.coef_.size + clf.intercept_.size)
    return int(sum(t.tree_.node_count for t in est.estimators_))


# --------------------------------------------------------------------------- the disk cache
#: sim.cache.DiskCache keyed by (name, seed, recipe) and by this file's bytes, taken at import.
CACHE = DiskCache("models", code=[__file__])
_EXT = {"torch": "pt", "sklearn": "pkl"}


def _cache_key(name: str, seed: int, hidden: int = MLP_HIDDEN) -> dict:
    if name == "mlp":
        return {"model": name, "seed": int(seed), "recipe": _recipe(name, hidden)}
    return {"model": name, "seed": int(seed), "recipe": _recipe(name)}


def cache_entry(name: str, seed: int = 0, hidden: int = MLP_HIDDEN) -> tuple[Path, Path]:
    """(payload file, manifest file) of a model's disk-cache entry (the mlp's is keyed by its width too)."""
    return CACHE.paths(name, _cache_key(name, seed, hidden), _EXT["torch" if name == "mlp" else "sklearn"])


# --------------------------------------------------------------------------- building models
def _accuracy(predict, X, y) -> float:
    # single-threaded, like training, so a re-load reproduces it to the bit
    with torch_threads(1), threadpool_limits(limits=1):
        return float(np.mean(predict(X) == y))


def _check_accuracy(name: str, acc: float, meta: dict) -> None:
    if abs(acc - float(meta.get("accuracy", math.nan))) > 1e-9:
        raise ValueError(f"cached {name} scores {acc}, its manifest says {meta.get('accuracy')}")


def _build_mlp(seed: int, hidden: int = MLP_HIDDEN) -> tuple[TrainedModel, DigitsMLP]:
    _, X_test, _, y_test = digits_split()
    key = _cache_key("mlp", seed, hidden)
    module = None
    try:
        got = CACHE.get_torch_state("mlp", key)  # weights_only=True, after the SHA-256 check
        if got is None:
            raise LookupError("not cached")
        state, meta = got
        module = DigitsMLP(hidden=hidden)
        module.load_state_dict(state, strict=True)
        module.eval()
        acc = _accuracy(_torch_fns(module)[1], X_test, y_test)
        _check_accuracy("mlp", acc, meta)
        from_cache, train_s = True, float(meta["train_seconds"])
    except Exception as exc:  # noqa: BLE001 — any cache problem means "retrain"
        _warn_retrain("mlp", exc)
        t0 = time.perf_counter()
        module = _train_mlp(seed, hidden)
        train_s = time.perf_counter() - t0
        TRAIN_COUNTS["mlp"] += 1
        acc = _accuracy(_torch_fns(module)[1], X_test, y_test)
        from_cache = False
        _stored(CACHE.put_torch_state("mlp", key, module.state_dict(),
                                      {"accuracy": acc, "train_seconds": round(train_s, 4)}), "mlp")
    proba, predict = _torch_fns(module)
    n_params = int(sum(p.numel() for p in module.parameters()))
    tm = TrainedModel("mlp", "torch", acc, n_params, len(_state_dict_bytes(module)), seed,
                      train_s, from_cache, X_test, y_test, module, proba, predict, hidden=hidden)
    return tm, module


def _warn_retrain(name: str, exc: Exception) -> None:
    # A plain miss (nothing cached yet) is the normal first run: stay quiet.
    if isinstance(exc, LookupError):
        return
    warnings.warn(f"archlab: cached {name!r} in {CACHE.folder} unusable ({exc}); retraining", RuntimeWarning)


def _stored(ok: bool, name: str) -> None:
    if not ok:  # read-only home etc.: still usable, just not cached
        warnings.warn(f"archlab: could not write the {name!r} model cache in {CACHE.folder}", RuntimeWarning)


def _build_sklearn(name: str, seed: int) -> TrainedModel:
    _, X_test, _, y_test = digits_split()
    key = _cache_key(name, seed)
    try:
        got = CACHE.get_pickle(name, key)  # unpickled only after the SHA-256 check
        if got is None:
            raise LookupError("not cached")
        est, meta = got
        if type(est).__name__ != _SKLEARN_TYPES[name]:
            raise TypeError(f"cached {name} is a {type(est).__name__}")
        acc = _accuracy(est.predict, X_test, y_test)
        _check_accuracy(name, acc, meta)
        from_cache, train_s = True, float(meta["train_seconds"])
    except Exception as exc:  # noqa: BLE001
        _warn_retrain(name, exc)
        t0 = time.perf_counter()
        with threadpool_limits(limits=1):
            est = _SKLEARN_TRAINERS[name](seed)
        train_s = time.perf_counter() - t0
        TRAIN_COUNTS[name] += 1
        acc = _accuracy(est.predict, X_test, y_test)
        from_cache = False
        _stored(CACHE.put_pickle(name, key, est, {"accuracy": acc, "train_seconds": round(train_s, 4)}), name)
    size = len(pickle.dumps(est, protocol=pickle.HIGHEST_PROTOCOL))
    return TrainedModel(name, "sklearn", acc, _sklearn_n_params(name, est), size, seed, train_s,
                        from_cache, X_test, y_test, est, est.predict_proba, est.predict)


_BUILD_LOCK = threading.RLock()


@functools.lru_cache(maxsize=None)
def _model_in_process(name: str, seed: int, folder: str, hidden: int = MLP_HIDDEN) -> TrainedModel:
    # ``folder`` (the cache folder) is part of the memo key: a new $ARCHLAB_CACHE is a new cache
    if name == "mlp":
        return _build_mlp(seed, hidden)[0]
    if name == "mlp_int8":
        base = _model_in_process("mlp", seed, folder, hidden)
        t0 = time.perf_counter()
        q = _quantize(base.estimator)
        q_s = time.perf_counter() - t0
        proba, predict = _torch_fns(q)
        acc = _accuracy(predict, base.X_test, base.y_test)
        return TrainedModel("mlp_int8", "torch", acc, base.n_params, len(_state_dict_bytes(q)), seed,
                            base.train_seconds + q_s, base.from_cache, base.X_test, base.y_test,
                            q, proba, predict, hidden=hidden)
    if name in _SKLEARN_TRAINERS:
        return _build_sklearn(name, seed)
    raise KeyError(f"unknown model {name!r}; choose from {MODEL_NAMES}")


def get_model(name: str, seed: int = 0, hidden: int = MLP_HIDDEN) -> TrainedModel:
    """The trained model ``name`` (one of ``MODEL_NAMES``) for ``seed``; ``hidden`` is the
    width of the mlp (and of the mlp that ``mlp_int8`` quantises), one of ``MLP_WIDTHS``.

    Trained on first use, then served from the in-process cache and the disk
    cache (see the module docstring). The returned object is shared: do not
    mutate it.
    """
    if name not in MODEL_NAMES:
        raise KeyError(f"unknown model {name!r}; choose from {MODEL_NAMES}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if hidden not in MLP_WIDTHS:
        raise ValueError(f"hidden must be one of {MLP_WIDTHS}, got {hidden!r}")
    if name not in ("mlp", "mlp_int8") and hidden != MLP_HIDDEN:
        raise ValueError(f"only the mlp has a hidden width, not {name!r}")
    with _BUILD_LOCK:  # one trainer at a time (e.g. several explorer sessions)
        return _model_in_process(name, int(seed), str(CACHE.folder), int(hidden))


def clear_memory_cache() -> None:
    """Forget in-process models (the disk cache stays)."""
    _model_in_process.cache_clear()


# --------------------------------------------------------------------------- live measuring
def measure_plan(name: str, hidden: int = MLP_HIDDEN) -> tuple[int, int]:
    """(repeats, warmup) for timing ``name`` at ``hidden``: ``DEFAULT_MEASURE``, with fewer
    repeats for wide MLPs (a 2048-wide batch of 64 costs milliseconds, so a whole
    profile stays a few seconds)."""
    r, w = DEFAULT_MEASURE[name]
    if name in ("mlp", "mlp_int8") and hidden > MLP_HIDDEN:
        r = max(40, r * MLP_HIDDEN // hidden * 2)  # 1024: 100, 2048: 50
    return r, w


def measure_on_this_machine(name: str, seed: int = 0, batch_sizes=DEFAULT_BATCH_SIZES,
                            repeats: int | None = None, warmup: int | None = None,
                            hidden: int = MLP_HIDDEN) -> Profile:
    """Measure ``name``'s latency profile live on this machine (the explorer's
    "measure on this machine" button). Trains the model first if it is not
    cached. Defaults for repeats/warmup: ``measure_plan``."""
    model = get_model(name, seed, hidden)
    r, w = measure_plan(name, hidden)
    return measure_profile(model, batch_sizes=batch_sizes,
                           repeats=r if repeats is None else repeats,
                           warmup=w if warmup is None else warmup)


#: Profiles measured on this machine, kept on disk per CPU model, library versions and this file's bytes.
HERE_CACHE = DiskCache("profiles_here", code=[__file__])


def profile_here(name: str, hidden: int = MLP_HIDDEN, seed: int = 0) -> Profile:
    """``name``'s profile at ``hidden`` measured on this machine, once per machine (then from the disk cache).

    The labs' ``profiles = this_machine`` setting reads this instead of the committed reference, so a reader
    can see whether a verdict would change on their own CPU. Measuring trains the model first if needed.
    """
    from sim.profiles import cpu_model

    key = {"model": name, "hidden": int(hidden), "seed": int(seed), "cpu": cpu_model(),
           "torch": torch.__version__, "plan": list(measure_plan(name, hidden))}
    with _BUILD_LOCK:
        got = HERE_CACHE.get_json("profile", key)
        if got is not None:
            try:
                return Profile.from_dict(got)
            except (KeyError, TypeError, ValueError):
                pass
        prof = measure_on_this_machine(name, seed, hidden=hidden)
        HERE_CACHE.put_json("profile", key, prof.to_dict())
        return prof
