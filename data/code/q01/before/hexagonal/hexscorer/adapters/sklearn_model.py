"""Classifier adapter around a fitted scikit-learn pipeline stored with pickle."""
import pickle

from sklearn.pipeline import Pipeline


class SklearnClassifier:
    name = "sklearn"

    def __init__(self, path):
        with open(path, "rb") as fh:
            estimator = pickle.load(fh)
        if not isinstance(estimator, Pipeline):
            raise TypeError(f"{path} does not hold a scikit-learn Pipeline")
        self._estimator = estimator
        self._positive = list(estimator.classes_).index(1)

    def probability(self, vector):
        return float(self._estimator.predict_proba([list(vector)])[0][self._positive])
