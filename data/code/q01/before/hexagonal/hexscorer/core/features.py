"""The scorer's feature contract: which features a row needs and the values it accepts."""
import math

FEATURES = ("radius", "texture", "smoothness", "concave_points")
RANGES = {
    "radius": (0.0, 50.0),
    "texture": (0.0, 60.0),
    "smoothness": (0.0, 1.0),
    "concave_points": (0.0, 1.0),
}


class InvalidFeatures(ValueError):
    """A feature row the scorer will not score."""


def validate(row):
    """Return the row's values in FEATURES order, or raise InvalidFeatures naming the first problem."""
    vector = []
    for name in FEATURES:
        if name not in row:
            raise InvalidFeatures(f"feature {name} is missing")
        value = float(row[name])
        low, high = RANGES[name]
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidFeatures(f"feature {name}={value} is outside [{low}, {high}]")
        vector.append(value)
    return tuple(vector)
