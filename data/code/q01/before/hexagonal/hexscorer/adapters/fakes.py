"""A test double for the classifier port: a fixed logistic function, no library behind it."""
import math


class FixedLogistic:
    name = "fixed-logistic"

    def __init__(self, weights=(0.6, 0.05, 5.0, 40.0), bias=-12.0):
        self._weights = weights
        self._bias = bias

    def probability(self, vector):
        z = self._bias + sum(w * x for w, x in zip(self._weights, vector))
        return 1.0 / (1.0 + math.exp(-z))
