"""The scoring service with its predictor injected: it never imports an ML library."""
from __future__ import annotations

import math

N_FEATURES, LOW, HIGH = 64, 0.0, 16.0


class InvalidFeatures(ValueError):
    pass


class ScoringService:
    def __init__(self, predictor, min_confidence: float = 0.0):
        self.predictor = predictor
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
        label = int(self.predictor.predict([x])[0])
        return {"label": label, "version": self.predictor.version}

    def score_batch(self, rows) -> list[dict]:
        checked = [self.validate(r) for r in rows]
        labels = self.predictor.predict(checked) if checked else []
        return [{"label": int(v), "version": self.predictor.version} for v in labels]
