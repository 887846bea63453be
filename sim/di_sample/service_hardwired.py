"""The same service with its model hard-wired: it imports the ML libraries and loads its own artifact."""
from __future__ import annotations

import math
import os
import pickle

import numpy as np
import sklearn  # noqa: F401  (the pickled pipeline needs it)
import torch  # noqa: F401  (the team's other model family)

N_FEATURES, LOW, HIGH = 64, 0.0, 16.0
MODEL_PATH = os.environ.get("DI_SAMPLE_SKLEARN", "models/recommend-v1.2.pkl")
VERSION = "recommend-v1.2-sklearn"


class InvalidFeatures(ValueError):
    pass


class ScoringService:
    def __init__(self, min_confidence: float = 0.0):
        with open(MODEL_PATH, "rb") as fh:
            self.model = pickle.load(fh)
        self.min_confidence = min_confidence

    @staticmethod
    def validate(features) -> list[float]:
        if len(features) != N_FEATURES:
            raise InvalidFeatures(f"expected {N_FEATURES} features, got {len(features)}")
        out = [float(x) for x in features]
        if any(math.isnan(x) or not LOW <= x <= HIGH for x in out):
            raise InvalidFeatures(f"features must be numbers in [{LOW}, {HIGH}]")
        return out

    def score(self, features) -> dict:
        x = self.validate(features)
        label = int(self.model.predict(np.asarray([x], dtype=np.float32))[0])
        return {"label": label, "version": VERSION}

    def score_batch(self, rows) -> list[dict]:
        checked = [self.validate(r) for r in rows]
        labels = self.model.predict(np.asarray(checked, dtype=np.float32)) if checked else []
        return [{"label": int(v), "version": VERSION} for v in labels]
