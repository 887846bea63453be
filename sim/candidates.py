"""Candidate model versions for the lifecycle lab: real classifiers and their held-out accuracy.

A strong candidate is one of ``sim.models`` (``logreg`` or ``mlp``, both near 97% on the 450 test
digits). A weak candidate is the same scikit-learn pipeline (StandardScaler + LogisticRegression)
trained on only ``train_samples`` random training digits; with 60 it scores about 0.8, below the
0.90 bar, and with a few hundred it clears it. Weak models are trained here and kept in the disk
cache (``sim.cache.DiskCache``) with their accuracy, keyed by sample count and seed.
"""
from __future__ import annotations

import functools

import numpy as np

from .cache import DiskCache

CACHE = DiskCache("candidates", code=[__file__])
WEAK_MAX_ITER = 500


def _train_weak(train_samples: int, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .models import digits_split

    X_train, X_test, y_train, y_test = digits_split()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(train_samples,)))
    idx = rng.choice(len(X_train), size=min(train_samples, len(X_train)), replace=False)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=WEAK_MAX_ITER))
    est.fit(X_train[idx], y_train[idx])
    return est, float(np.mean(est.predict(X_test) == y_test))


@functools.lru_cache(maxsize=64)
def weak_model(train_samples: int, seed: int = 0):
    """``(estimator, accuracy on the test split)`` of a logistic regression trained on few digits."""
    key = {"train_samples": int(train_samples), "seed": int(seed), "max_iter": WEAK_MAX_ITER}
    got = CACHE.get_pickle("weak_logreg", key)
    if got is not None:
        est, meta = got
        return est, float(meta["accuracy"])
    est, acc = _train_weak(int(train_samples), int(seed))
    CACHE.put_pickle("weak_logreg", key, est, {"accuracy": acc})
    return est, acc


def accuracy(name: str, seed: int, weak_train_samples: int) -> float:
    """Held-out accuracy of a candidate, ``weak`` or a ``sim.models`` name; the number is cached on disk
    (JSON) so a warm process never imports torch for it."""
    key = {"name": name, "seed": int(seed), "train_samples": int(weak_train_samples) if name == "weak" else 0}
    got = CACHE.get_json("accuracy", key)
    if got is not None:
        return float(got)
    if name == "weak":
        acc = weak_model(weak_train_samples, seed)[1]
    else:
        from .models import get_model

        acc = float(get_model(name, seed).accuracy)
    CACHE.put_json("accuracy", key, acc)
    return acc
