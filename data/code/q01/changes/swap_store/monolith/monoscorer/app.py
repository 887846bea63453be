"""The whole scorer in one module: data, model, rules and output side by side."""
import json
import math
import pickle
from pathlib import Path

from sklearn.pipeline import Pipeline

FEATURES = ("radius", "texture", "smoothness", "concave_points")
RANGES = {
    "radius": (0.0, 50.0),
    "texture": (0.0, 60.0),
    "smoothness": (0.0, 1.0),
    "concave_points": (0.0, 1.0),
}
COLUMNS = {"radius": "mean radius", "texture": "mean texture", "smoothness": "mean smoothness",
           "concave_points": "mean concave points"}
THRESHOLD = 0.5


def train(workdir):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    names = list(data.feature_names)
    X = data.data[:, [names.index(column) for column in COLUMNS.values()]]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, (data.target == 0).astype(int))
    path = Path(workdir) / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    return path


class App:
    def __init__(self, rows, workdir):
        path = Path(workdir) / "features.json"
        path.write_text(json.dumps(rows, sort_keys=True), encoding="utf-8")
        self.rows = json.loads(path.read_text(encoding="utf-8"))
        with open(Path(workdir) / "model.pkl", "rb") as fh:
            self.model = pickle.load(fh)
        if not isinstance(self.model, Pipeline):
            raise TypeError("model.pkl does not hold a scikit-learn Pipeline")

    def score(self, entity_id):
        if entity_id not in self.rows:
            raise LookupError(f"no features for {entity_id!r}")
        row = dict(self.rows[entity_id])
        vector = []
        for name in FEATURES:
            if name not in row:
                raise ValueError(f"feature {name} is missing")
            value = float(row[name])
            low, high = RANGES[name]
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"feature {name}={value} is outside [{low}, {high}]")
            vector.append(value)
        positive = list(self.model.classes_).index(1)
        score = float(self.model.predict_proba([vector])[0][positive])
        return {"entity_id": entity_id, "score": round(score, 6), "flagged": score >= THRESHOLD}


def build_scorer(rows, workdir):
    return App(rows, workdir)
