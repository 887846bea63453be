"""The whole scorer in one module: data, model, rules and output side by side."""
import math
import pickle
import sqlite3
from pathlib import Path

from sklearn.pipeline import Pipeline

FEATURES = ("radius", "texture", "smoothness", "concave_points", "area")
RANGES = {
    "radius": (0.0, 50.0),
    "texture": (0.0, 60.0),
    "smoothness": (0.0, 1.0),
    "concave_points": (0.0, 1.0),
    "area": (0.0, 5000.0),
}
COLUMNS = {"radius": "mean radius", "texture": "mean texture", "smoothness": "mean smoothness",
           "concave_points": "mean concave points",
           "area": "mean area"}
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
        self.db = sqlite3.connect(str(Path(workdir) / "features.db"))
        with self.db:
            self.db.execute("DROP TABLE IF EXISTS features")
            self.db.execute("CREATE TABLE features (entity_id TEXT, feature TEXT, value REAL)")
            self.db.executemany("INSERT INTO features VALUES (?, ?, ?)",
                                [(key, name, value) for key, row in rows.items() for name, value in row.items()])
        with open(Path(workdir) / "model.pkl", "rb") as fh:
            self.model = pickle.load(fh)
        if not isinstance(self.model, Pipeline):
            raise TypeError("model.pkl does not hold a scikit-learn Pipeline")

    def score(self, entity_id):
        found = self.db.execute("SELECT feature, value FROM features WHERE entity_id = ?", (entity_id,)).fetchall()
        if not found:
            raise LookupError(f"no features for {entity_id!r}")
        row = dict(found)
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
