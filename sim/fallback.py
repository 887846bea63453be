"""Fallback chains: pick the first tier that can answer, age a cached answer, score each tier's answers.

A chain is an ordered list of tiers (large model, small model, cache, popular items);
``first_available`` returns, per request, the index of the first tier whose mask says it
can answer, or -1 (the request fails). This is the "fallback chain" of the graceful-
degradation literature (e.g. the AWS Builders' Library note on fallbacks, Hystrix's
``getFallback``): each tier is tried only if all earlier ones failed. Quality comes from
data, not assumptions: ``predictions`` are a real model's answers on the held-out digits
(``sim.models``, cached on disk), ``tier_quality`` derives each tier's accuracy from them
(a stale answer is right only by chance: the overlap of the predicted and true label
mixes; popular items are the majority class). ``cached_answer_age`` gives the age of a
user's cached answer when no model tier has answered since ``since_s`` seconds ago, for
users who send Poisson requests (backward recurrence time: exponential at the user's rate).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .cache import DiskCache

CACHE = DiskCache("fallback", code=[__file__, str(Path(__file__).with_name("models.py"))])


def first_available(masks) -> np.ndarray:
    """Per request (columns of ``masks``, one row per tier in order), the first tier that answers, or -1."""
    masks = np.asarray(masks, dtype=bool)
    return np.where(masks.any(axis=0), masks.argmax(axis=0), -1)


def cached_answer_age(rng: np.random.Generator, since_s: np.ndarray, user_rate: np.ndarray) -> np.ndarray:
    """Seconds since the user's last fresh answer: time since fresh answers stopped + the gap before that."""
    return np.asarray(since_s, dtype=float) + rng.exponential(1.0, np.shape(since_s)) / np.asarray(user_rate)


@functools.lru_cache(maxsize=8)
def predictions(name: str) -> dict:
    """Held-out digit labels, ``name``'s predictions on them (model seed 0) and the training majority class."""
    key = {"model": name, "seed": 0}
    got = CACHE.get_json("predictions", key)
    if got is None:
        from .models import digits_split, get_model

        m = get_model(name, 0)
        got = {"y": m.y_test.tolist(), "pred": m.predict(m.X_test).tolist(),
               "majority": int(np.bincount(digits_split()[2]).argmax())}
        CACHE.put_json("predictions", key, got)
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in got.items()}


def tier_quality(large: dict, small: dict) -> dict:
    """Accuracy of each tier's answer on the held-out digits, from the two models' predictions."""
    y = large["y"]
    mix = lambda a: np.bincount(a, minlength=10) / a.size  # noqa: E731
    return {"large": float(np.mean(large["pred"] == y)), "small": float(np.mean(small["pred"] == y)),
            "stale": float(mix(large["pred"]) @ mix(y)),  # an answer meant for another digit, right by chance
            "popular": float(np.mean(y == large["majority"])), "n": int(y.size)}
