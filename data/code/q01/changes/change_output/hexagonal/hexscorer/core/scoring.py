"""The use case: fetch a row, validate it, ask the classifier, apply the business rule."""
from .decision import Decision
from .features import validate
from .ports import Classifier, FeatureSource

THRESHOLD = 0.5


def flag(score):
    """The business rule: refer an entity for review when its score reaches the threshold."""
    return score >= THRESHOLD


class Scorer:
    def __init__(self, classifier: Classifier, source: FeatureSource):
        self._classifier = classifier
        self._source = source

    def score(self, entity_id):
        vector = validate(self._source.row(entity_id))
        score = float(self._classifier.probability(vector))
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"classifier {self._classifier.name} returned {score}, not a probability")
        return Decision(entity_id, score, flag(score), self._classifier.name).as_dict()
