"""Shadow traffic between two real model versions: the live one answers, the candidate is only logged.

Reference: the mirroring of Istio/Envoy (``request_mirror_policies``): every request also goes
to the shadow version, whose answer is discarded; here the "requests" are the held-out digits
of ``sim.models.digits_split`` and the versions are trained models from ``sim.models``. What we
report is what a release gate reads from the mirror log: how often the two versions disagree,
and how many of the live version's correct answers the candidate keeps (a regression suite
whose tests are the held-out digits the live model gets right).
Predictions are cached on disk per (model, seed), keyed by this file and ``models.py``.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .cache import DiskCache

CACHE = DiskCache("shadow", code=[__file__, str(Path(__file__).with_name("models.py"))])

# version pairs a lab may offer: (live, candidate), each (model name, training seed)
PAIRS = {
    "mlp_vs_logreg": (("mlp", 0), ("logreg", 0)),
    "mlp_seed0_vs_seed1": (("mlp", 0), ("mlp", 1)),
    "mlp_vs_mlp_int8": (("mlp", 0), ("mlp_int8", 0)),
    "mlp_vs_forest": (("mlp", 0), ("forest", 0)),
    "mlp_vs_itself": (("mlp", 0), ("mlp", 0)),
}


@functools.lru_cache(maxsize=16)
def predictions(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of model ``name`` trained with ``seed`` on the held-out digits."""
    key = {"model": name, "seed": int(seed)}
    got = CACHE.get_json("predictions", key)
    if got is None:
        from .models import get_model

        m = get_model(name, int(seed))
        got = {"y": m.y_test.tolist(), "pred": m.predict(m.X_test).tolist()}
        CACHE.put_json("predictions", key, got)
    return np.asarray(got["y"]), np.asarray(got["pred"])


def compare(live: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> dict:
    """Counts a mirror log yields: disagreements, and the live version's correct answers the candidate keeps."""
    live, candidate, labels = map(np.asarray, (live, candidate, labels))
    if not (live.shape == candidate.shape == labels.shape):
        raise ValueError("live, candidate and labels must have the same length")
    tests = live == labels
    return {"n": int(live.size), "disagree": int(np.sum(live != candidate)),
            "tests": int(tests.sum()), "passed": int(np.sum(tests & (candidate == labels))),
            "live_accuracy": float(np.mean(tests)) if live.size else float("nan"),
            "candidate_accuracy": float(np.mean(candidate == labels)) if live.size else float("nan")}


def shadow_pair(pair: str) -> dict:
    """``compare`` for one named pair of real model versions."""
    (a, sa), (b, sb) = PAIRS[pair]
    y, pa = predictions(a, sa)
    _, pb = predictions(b, sb)
    return {**compare(pa, pb, y), "live": f"{a} (seed {sa})", "candidate": f"{b} (seed {sb})"}
