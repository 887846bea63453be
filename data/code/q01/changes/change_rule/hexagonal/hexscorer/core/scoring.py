"""The use case: fetch a row, validate it, ask the classifier, apply the business rule."""
from .decision import Decision
from .features import FEATURES, validate
from .ports import Classifier, FeatureSource

THRESHOLD = 0.35
CONCAVITY_LIMIT = 0.15


def flag(score, vector):
    """The business rule: refer an entity when its score reaches the threshold or its concavity is extreme."""
    return score >= THRESHOLD or vector[FEATURES.index("concave_points")] > CONCAVITY_LIMIT


class Scorer:
    def __init__(self, classifier: Classifier, source: FeatureSource):
        self._classifier = classifier
        self._source = source

    def score(self, entity_id):
        vector = validate(self._source.row(entity_id))
        score = float(self._classifier.probability(vector))
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"classifier {self._classifier.name} returned {score}, not a probability")
        return Decision(entity_id, score, flag(score, vector)).as_dict()
